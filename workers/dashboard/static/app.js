// The so101-bus dashboard page: one WebSocket to workers/dashboard.py, plain DOM and canvas.
// JSON messages ("hello", then "update" a few times a second) carry the picture of the bus;
// binary messages carry camera frames: "F", uint32 header length, JSON header, JPEG bytes.
"use strict";

const $ = (id) => document.getElementById(id);
const PAST_S = 10;          // seconds of history on the plots
const AHEAD_S = 3;          // seconds ahead of "now" (room for the action chunk)
const SILENT_S = 4;         // no message for this long = the server is lost
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];

const S = {
  status: null,             // the newest update
  config: {},
  samples: {},              // arm -> {s: [[t, values]], a: [[t, values]]}
  lastSampleId: 0,
  events: [],
  lastEventId: 0,
  chunks: {},               // task -> chunk
  clockOffset: 0,           // server bus clock - Date.now()/1000
  cameras: {},              // name -> {card, img, cap, url, header}
  armViews: {},             // arm -> {canvases: [...], names}
  taskEdited: false,
};
// For tests and curious people: counters of what the page did.
const dash = window.dash = { frames: 0, updates: 0, draws: 0, connects: 0, connected: false };

// -- helpers ----------------------------------------------------------------------------------
function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function isNum(x) { return typeof x === "number" && Number.isFinite(x); }
function num(x, digits = 1, unit = "") {
  return isNum(x) ? `${x.toFixed(digits)}${unit}` : "—";
}
function dur(s) {
  if (!isNum(s)) return "—";
  if (s < 60) return `${s.toFixed(1)} s`;
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(sec).padStart(2, "0")}s`;
}
function clock(t) {
  if (!isNum(t)) return "—";
  const d = new Date(t * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." +
    String(d.getMilliseconds()).padStart(3, "0").slice(0, 1);
}
function serverNow() { return Date.now() / 1000 + S.clockOffset; }
function value(x) {
  if (x === null || x === undefined) return "—";
  if (typeof x === "number") return Number.isInteger(x) ? String(x) : x.toFixed(3);
  if (typeof x === "object") return JSON.stringify(x);
  return String(x);
}
const KV_HIDDEN = new Set(["process", "uptime_s", "last_error"]);
function kvHtml(data, highlight) {
  const keys = Object.keys(data).filter((k) => !KV_HIDDEN.has(k));
  keys.sort((a, b) => (highlight.test(b) - highlight.test(a)) || a.localeCompare(b));
  return `<div class="kv">${keys.map((k) =>
    `<span class="k">${esc(k)}</span><span class="${highlight.test(k) ? "hl" : ""}">` +
    `${esc(value(data[k]))}</span>`).join("")}</div>`;
}
function toast(text, kind = "") {
  const div = document.createElement("div");
  div.className = kind;
  div.textContent = text;
  $("toast").prepend(div);
  setTimeout(() => div.remove(), 6000);
  return div;
}

// -- connection -------------------------------------------------------------------------------
let ws = null, attempt = 0, retryTimer = null, retryAt = 0, lastMessage = 0, lostSince = null;

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const sock = new WebSocket(`${proto}://${location.host}/ws`);
  sock.binaryType = "arraybuffer";
  ws = sock;
  lastMessage = performance.now();
  sock.onopen = () => { lastMessage = performance.now(); };
  sock.onmessage = (ev) => {
    if (sock !== ws) return;
    lastMessage = performance.now();
    if (typeof ev.data === "string") onJson(JSON.parse(ev.data));
    else onFrame(ev.data);
  };
  sock.onclose = () => { if (sock === ws) lost(); };
}

function lost() {
  if (ws) {
    const old = ws;
    ws = null;
    try { old.close(); } catch (e) { /* already closed */ }
  }
  if (lostSince === null) lostSince = Date.now();
  dash.connected = false;
  if (retryTimer) return;
  const base = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
  const delay = base * (0.8 + 0.4 * Math.random());
  attempt += 1;
  retryAt = performance.now() + delay;
  retryTimer = setTimeout(() => { retryTimer = null; connect(); }, delay);
  showConnection();
}

function showConnection() {
  const banner = $("offline"), pill = $("conn");
  if (dash.connected) {
    banner.hidden = true;
    const quiet = S.status ? S.status.bus_quiet_s : null;
    const reader = S.status && S.status.dashboard && S.status.dashboard.reader_error;
    if (reader) {
      pill.textContent = reader;
      pill.className = "pill bad";
    } else if (quiet === null || quiet === undefined || quiet > 3) {
      pill.textContent = quiet === null || quiet === undefined ? "live · nothing on the bus yet" :
        `live · bus quiet for ${dur(quiet)} (is the hub up?)`;
      pill.className = "pill bad";
    } else {
      pill.textContent = "live";
      pill.className = "pill ok";
    }
    $("main").classList.remove("stale");
    return;
  }
  pill.textContent = lostSince === null ? "connecting…" : "disconnected";
  pill.className = "pill bad";
  if (lostSince === null) return;
  const wait = Math.max(0, (retryAt - performance.now()) / 1000);
  const since = new Date(lostSince).toLocaleTimeString([], { hour12: false });
  banner.textContent = `Lost the connection to the dashboard server (since ${since}). ` +
    (retryTimer ? `Reconnecting in ${wait.toFixed(0)} s (attempt ${attempt})…` :
      `Reconnecting (attempt ${attempt})…`) + " What you see below is stale.";
  banner.hidden = false;
  $("main").classList.add("stale");
}

setInterval(() => {
  // A server that is gone without closing (a frozen process, a dead link) goes quiet: the
  // dashboard pushes several updates a second, so silence means it is lost.
  if (ws && ws.readyState === WebSocket.OPEN && performance.now() - lastMessage > SILENT_S * 1000) {
    lost();
  }
  if (ws && ws.readyState === WebSocket.CONNECTING &&
      performance.now() - lastMessage > SILENT_S * 1000 && lostSince !== null) {
    lost();  // a connect attempt that hangs
  }
  showConnection();
  $("clock").textContent = clock(serverNow());
}, 500);

// -- messages ---------------------------------------------------------------------------------
function onJson(msg) {
  if (msg.type === "hello") {
    S.config = msg.config || {};
    S.samples = {};
    S.lastSampleId = 0;
    S.events = [];
    S.lastEventId = 0;
    S.chunks = {};
    attempt = 0;
    lostSince = null;
    dash.connected = true;
    dash.connects += 1;
    applyControlPermission();
    showConnection();
  }
  if (isNum(msg.now)) S.clockOffset = msg.now - Date.now() / 1000;
  for (const s of msg.samples || []) {
    if (s.id <= S.lastSampleId) continue;
    S.lastSampleId = s.id;
    const arm = (S.samples[s.arm] ||= { s: [], a: [] });
    arm[s.k === "s" ? "s" : "a"].push([s.t, s.v]);
  }
  trimSamples();
  for (const c of msg.chunks || []) S.chunks[c.task] = c;
  for (const e of msg.events || []) {
    if (e.id <= S.lastEventId) continue;
    S.lastEventId = e.id;
    S.events.push(e);
  }
  S.events = S.events.slice(-100);
  S.status = msg;
  dash.updates += 1;
  render(msg);
}

function trimSamples() {
  const oldest = serverNow() - PAST_S - 2;
  for (const arm of Object.values(S.samples)) {
    for (const key of ["s", "a"]) {
      const list = arm[key];
      let i = 0;
      while (i < list.length && list[i][0] < oldest) i++;
      if (i) list.splice(0, i);
      if (list.length > 4000) list.splice(0, list.length - 4000);
    }
  }
}

function onFrame(buf) {
  const view = new DataView(buf);
  if (view.byteLength < 5 || view.getUint8(0) !== 70) return;  // "F"
  const n = view.getUint32(1);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 5, n)));
  const cam = cameraCard(header.camera);
  const url = URL.createObjectURL(new Blob([new Uint8Array(buf, 5 + n)], { type: "image/jpeg" }));
  const previous = cam.url;
  cam.url = url;
  cam.img.onload = () => { if (previous) URL.revokeObjectURL(previous); };
  cam.img.src = url;
  cam.img.dataset.frame = header.frame ?? "";
  cam.header = header;
  cam.shown += 1;
  dash.frames += 1;
}

// -- rendering --------------------------------------------------------------------------------
function cameraCard(name) {
  if (S.cameras[name]) return S.cameras[name];
  const box = $("cameras");
  box.querySelector(".absent")?.remove();
  const card = document.createElement("div");
  card.className = "cam";
  card.dataset.camera = name;
  card.innerHTML = `<img alt="camera ${esc(name)}"><div class="cap"></div>`;
  box.appendChild(card);
  const cam = { card, img: card.querySelector("img"), cap: card.querySelector(".cap"),
                url: null, header: null, shown: 0 };
  S.cameras[name] = cam;
  return cam;
}

function render(msg) {
  renderCameras(msg.cameras || {});
  renderEpisode(msg.episode, msg.open_loop);
  renderSim(msg.sim);
  renderProcesses(msg.processes || []);
  renderPolicies(msg.policies || []);
  renderControl(msg.control, msg.holds || {}, msg.control_event);
  renderRecorder(msg.recorder, msg.recording);
  renderEstop(msg.estop || {});
  renderEvents();
  ensureArms(msg.arms || {});
  guessTask(msg);
}

function renderCameras(cameras) {
  for (const [name, c] of Object.entries(cameras)) {
    const cam = cameraCard(name);
    const stale = isNum(c.age_s) && c.age_s > 2;
    cam.card.classList.toggle("lost", Boolean(c.lost) || stale);
    const parts = [`<span class="name">${esc(name)}</span>`,
      `frame ${esc(c.frame ?? "—")}`];
    if (c.episode !== null && c.episode !== undefined) parts.push(`ep ${esc(c.episode)}`);
    parts.push(`${num(c.rate, 1)} fps on the bus`);
    if (c.width) parts.push(`${c.width}×${c.height}`);
    if (c.lost) parts.push(`<span class="bad">lost: ${esc(c.lost)}</span>`);
    else if (stale) parts.push(`<span class="warn">no frame for ${num(c.age_s, 1)} s</span>`);
    cam.cap.innerHTML = parts.join(" · ");
  }
}

function renderEpisode(ep, ol) {
  const box = $("episode");
  if (!ep) {
    box.innerHTML = `<p class="absent">no episode yet</p>`;
  } else {
    const frames = isNum(ep.frames) ? ep.frames : null;
    const frame = isNum(ep.frame) ? ep.frame : null;
    const done = ep.phase === "stop";
    const pct = done ? 100 : (frames && frame !== null ? 100 * (frame + 1) / frames : 0);
    box.innerHTML =
      `<div>episode <b>${esc(ep.episode ?? "—")}</b> · task <b>${esc(ep.task ?? "—")}</b> · ` +
      `${done ? "finished" : "running"} · frame ${esc(frame ?? "—")} / ${esc(frames ?? "—")}` +
      `${isNum(ep.seed) ? ` · seed ${ep.seed}` : ""}` +
      `${ep.source ? ` · from ${esc(ep.source)}` : ""}</div>` +
      `<div class="progress"><div style="width:${pct.toFixed(1)}%"></div></div>` +
      (done && typeof ep.outcome?.success === "boolean" ?
        outcomeHtml(ep.outcome, "the simulator's verdict") : "");
  }
  const olBox = $("open-loop");
  if (!ol) { olBox.innerHTML = `<p class="absent">no open-loop report yet</p>`; return; }
  let html = `<div>episode <b>${esc(ol.episode ?? "—")}</b>: RMSE ` +
    (isNum(ol.rmse) ? `<b>${ol.rmse.toFixed(3)}</b>` :
      `<span class="muted">— (no actions received)</span>`) +
    (isNum(ol.rmse) && ol.actions ? ` over ${esc(Object.entries(ol.actions).map(([arm, n]) =>
      `${n} ${arm}`).join(", "))} actions` : "") +
    (ol.rejected ? ` · ${esc(ol.rejected)} rejected` : "") + `</div>`;
  const per = ol.rmse_per_joint || {};
  const rows = Object.entries(per).filter(([, v]) => Array.isArray(v));
  if (rows.length) {
    html += `<table><tr><th>arm</th>${rows[0][1].map((_, i) =>
      `<th>${esc(jointName(rows[0][0], i))}</th>`).join("")}</tr>` +
      rows.map(([arm, v]) => `<tr><td>${esc(arm)}</td>${v.map((x) =>
        `<td class="num">${num(x, 2)}</td>`).join("")}</tr>`).join("") + `</table>`;
  }
  olBox.innerHTML = html;
}

// "episode 3 (seed 3)": how event/sim names a simulated episode.
function episodeLabel(x) {
  return `episode ${x.episode ?? "—"}` + (isNum(x.seed) ? ` (seed ${x.seed})` : "");
}
// "SUCCESS in 3.2 s — cube held 5 cm above the table for 1 s": an event/sim outcome, or the
// copy of it the control loop puts in its event/episode stop marker.
function verdict(o) {
  return `${o.success ? "SUCCESS in" : "FAILURE after"} ${num(o.time_s, 1, " s")}` +
    (o.reason ? ` — ${o.reason}` : "");
}
function outcomeHtml(o, label) {
  return `<div class="outcome ${o.success ? "ok" : "bad"}" data-success="${Boolean(o.success)}">` +
    `${esc(label)}: ${esc(verdict(o))}</div>`;
}

let renderedSim;
function renderSim(sim) {
  // Redrawn only when it changed: the chips' tooltips survive the updates in between.
  const key = JSON.stringify(sim ?? null);
  if (key === renderedSim) return;
  renderedSim = key;
  const box = $("sim");
  if (!sim) {
    box.innerHTML = `<p class="absent">no simulator (no event/sim seen)</p>`;
    return;
  }
  const start = sim.start, total = sim.successes + sim.failures;
  let html = "";
  if (start && sim.running) {
    html += `<div>running <b>${esc(episodeLabel(start))}</b> · task ${esc(start.task ?? "—")}` +
      `${start.source ? ` · episodes from ${esc(start.source)}` : ""}</div>`;
  }
  html += sim.outcome ? outcomeHtml(sim.outcome, episodeLabel(sim.outcome)) :
    `<p class="absent">no outcome yet</p>`;
  html += `<div class="tally">successes <b>${sim.successes} / ${total}</b>` +
    `${total ? ` (${Math.round(100 * sim.successes / total)}%)` : ""}` +
    ` <span class="muted">since the dashboard started</span></div>`;
  if (sim.recent.length) {
    html += `<div class="chips">${sim.recent.map((o) =>
      `<span class="chip ${o.success ? "ok" : "bad"}" title="${esc(`${episodeLabel(o)}: ` +
        verdict(o))}">${esc(o.episode ?? "?")}</span>`).join("")}</div>`;
  }
  box.innerHTML = html;
}

function renderProcesses(processes) {
  const body = $("processes").querySelector("tbody");
  if (!processes.length) {
    body.innerHTML = `<tr><td colspan="7" class="absent">no health/* seen yet</td></tr>`;
    return;
  }
  body.innerHTML = processes.map((p) => {
    const sup = p.supervisor;
    const supDead = sup && ["EXITED", "FATAL", "BACKOFF", "UNKNOWN"].includes(sup.state);
    const status = p.alive ? `<span class="dot ok"></span>running` :
      (p.age_s === null ? `<span class="dot"></span>no health` :
        `<span class="dot bad"></span>silent ${num(p.age_s, 0)} s`);
    const supText = sup ? `<span class="${supDead ? "bad" : ""}">${esc(sup.state)}</span>` +
      `${sup.from_state ? ` <span class="muted">(was ${esc(sup.from_state)})</span>` : ""}` +
      `${sup.exits ? ` · ${esc(sup.exits)} exit${sup.exits > 1 ? "s" : ""}` : ""}` : "—";
    const drops = Object.entries(p.drops || {});
    const dropText = drops.length ? `<span class="warn">${drops.map(([k, v]) =>
      `${esc(k)} ${esc(value(v))}`).join(", ")}</span>` : `<span class="muted">0</span>`;
    return `<tr data-process="${esc(p.name)}"><td><b>${esc(p.name)}</b></td><td>${status}</td>` +
      `<td>${supText}</td><td class="num">${isNum(p.rate) ? `${num(p.rate, 1)} /s` : "—"}</td>` +
      `<td>${dropText}</td><td class="num">${dur(p.uptime_s)}</td>` +
      `<td class="err">${p.last_error ? esc(p.last_error) : ""}</td></tr>`;
  }).join("");
}

function renderPolicies(policies) {
  const box = $("policies");
  if (!policies.length) {
    box.innerHTML = `<p class="absent">no policy process on the bus</p>`;
    return;
  }
  const chunkAge = (S.status && S.status.chunk_ages) || {};
  box.innerHTML = `<table><tr><th>process</th><th>task</th><th>p50</th><th>p99</th>` +
    `<th>served</th><th>errors</th><th>device</th><th>last chunk</th></tr>` +
    policies.map((p) => `<tr><td><span class="dot ${p.alive ? "ok" : "bad"}"></span>` +
      `${esc(p.name)}</td><td>${esc(p.task ?? "—")}</td>` +
      `<td class="num">${num(p.latency_p50_ms, 1, " ms")}</td>` +
      `<td class="num">${num(p.latency_p99_ms, 1, " ms")}</td>` +
      `<td class="num">${esc(p.served ?? "—")}</td>` +
      `<td class="num ${p.errors ? "bad" : ""}">${esc(p.errors ?? "—")}</td>` +
      `<td>${esc(p.device ?? "—")}</td>` +
      `<td class="num">${isNum(chunkAge[p.task]) ? `${chunkAge[p.task].toFixed(1)} s ago` : "—"}` +
      `</td></tr>`).join("") + `</table>`;
}

function healthHeader(h) {
  const d = h.data;
  return `<div><span class="dot ${h.alive ? "ok" : "bad"}"></span>` +
    `${h.alive ? "running" : "silent"} · up ${dur(d.uptime_s)}` +
    `${d.last_error ? ` · <span class="err">${esc(d.last_error)}</span>` : ""}</div>`;
}

function renderControl(control, holds, warning) {
  $("control").innerHTML = (control ? healthHeader(control) +
    kvHtml(control.data, /stall|hold|late|overrun|miss|rate|latency|_hz/) :
    `<p class="absent">no health/control yet</p>`) +
    (warning ? `<p class="warn">${clock(warning.t)} ${esc(warning.kind ?? "")}: ` +
      `${esc(warning.text ?? JSON.stringify(warning))}</p>` : "");
  const entries = Object.entries(holds);
  $("holds").innerHTML = entries.length ? `<table>${entries.map(([arm, h]) =>
    `<tr><td>${esc(arm)}</td><td class="${h.holding ? "warn" : "ok"}">` +
    `${h.holding ? "HOLDING" : "moving"}</td><td>${esc(h.reason ?? "")}</td>` +
    `<td class="muted">${clock(h.t)} · ${esc(h.src)}</td></tr>`).join("")}</table>` :
    `<p class="absent">no hold reported</p>`;
}

function renderRecorder(recorder, recording) {
  let html = recorder ? healthHeader(recorder) +
    kvHtml(recorder.data, /state|backlog|episode|recording|queue|drop|lost/) :
    `<p class="absent">no health/recorder yet</p>`;
  if (recording) {
    html += `<h3>Last command from this dashboard</h3><div>${esc(recording.command)} ` +
      `${esc(recording.task || "")} at ${clock(recording.t)} · ` +
      `${recording.heard ? `<span class="ok">heard</span>` :
        `<span class="warn">nobody was listening</span>`}</div>`;
  }
  $("recorder").innerHTML = html;
}

function renderEstop(estop) {
  const banner = $("estop-banner");
  const cmd = estop.command;
  const cmdEngaged = cmd && cmd.engaged;
  const reported = estop.reported || [];
  if (!estop.engaged && !cmdEngaged) { banner.hidden = true; return; }
  const who = reported.filter((r) => r.engaged).map((r) => `${r.process}/${r.where}`);
  let text = "E-STOP ENGAGED";
  if (cmdEngaged) {
    text += ` — ${cmd.reason || ""} (sent from this dashboard at ${clock(cmd.t)}` +
      `${cmd.heard ? "" : "; NOBODY WAS LISTENING on event/estop"})`;
  }
  text += who.length ? ` · servos report it: ${who.join(", ")}` :
    (reported.length ? " · servos report no e-stop" : "");
  banner.textContent = text;
  banner.hidden = false;
}

function eventClass(e) {
  const d = e.data || {};
  if (e.topic === "event/process" && ["EXITED", "FATAL", "BACKOFF"].includes(String(d.state))) {
    return "bad";
  }
  if (e.topic === "event/estop" && d.engaged) return "bad";
  const outcome = e.topic === "event/sim" && d.phase === "outcome" ? d :
    (e.topic === "event/episode" ? d.outcome : null);
  if (outcome && typeof outcome.success === "boolean") return outcome.success ? "ok" : "bad";
  if ((e.topic === "event/hold" && d.holding) || (e.topic === "event/camera" && d.state === "lost")) {
    return "warn";
  }
  return "";
}

let renderedEventId = -1;
function renderEvents() {
  if (S.lastEventId === renderedEventId) return;
  renderedEventId = S.lastEventId;
  const list = $("events");
  if (!S.events.length) { list.innerHTML = `<li class="absent">none yet</li>`; return; }
  list.innerHTML = S.events.slice().reverse().slice(0, 60).map((e) => {
    const full = JSON.stringify(e.data);
    const text = full.length > 220 ? full.slice(0, 220) + "…" : full;
    return `<li class="${eventClass(e)}" title="${esc(full)}"><span class="t">${clock(e.t)}</span>` +
      `<span class="topic">${esc(e.topic)}</span><span class="src">${esc(e.src)}</span>` +
      `${esc(text)}</li>`;
  }).join("");
}

function guessTask(msg) {
  const input = $("task");
  if (S.taskEdited || document.activeElement === input) return;
  const task = (msg.episode && msg.episode.task) || Object.keys(S.chunks)[0] || "";
  if (task && input.value !== task) input.value = task;
}

// -- plots ------------------------------------------------------------------------------------
function jointName(arm, i) {
  const names = S.status && S.status.arms && S.status.arms[arm] && S.status.arms[arm].names;
  const name = names && names[i] ? String(names[i]) : `joint ${i}`;
  return name.replace(/\.pos$/, "");
}

function ensureArms(arms) {
  const box = $("arms");
  const names = Object.keys(arms).sort();
  for (const arm of names) {
    if (S.armViews[arm]) continue;
    box.querySelector(".absent")?.remove();
    const dim = arms[arm].dim || 6;
    const div = document.createElement("div");
    div.className = "arm";
    div.dataset.arm = arm;
    div.innerHTML = `<h3>${esc(arm)} <span class="muted src"></span></h3><div class="joints">` +
      Array.from({ length: dim }, (_, i) =>
        `<div class="joint"><canvas data-joint="${i}"></canvas></div>`).join("") + `</div>`;
    box.appendChild(div);
    S.armViews[arm] = { div, canvases: [...div.querySelectorAll("canvas")],
                        src: div.querySelector(".src") };
  }
  for (const [arm, view] of Object.entries(S.armViews)) {
    const a = arms[arm];
    if (!a) continue;
    view.src.textContent = `state ${num(a.rate, 1)} Hz from ${a.src ?? "—"}` +
      (a.action_src ? ` · actions ${num(a.action_rate, 1)} Hz from ${a.action_src}` : "");
  }
}

function chunkFor(arm) {
  let best = null;
  for (const c of Object.values(S.chunks)) {
    if (c.per_arm && c.per_arm[arm] && isNum(c.dt) && (!best || c.t_obs > best.t_obs)) best = c;
  }
  return best;
}

function drawAll() {
  if (document.hidden || !S.status) return;
  const now = serverNow();
  for (const [arm, view] of Object.entries(S.armViews)) {
    const data = S.samples[arm] || { s: [], a: [] };
    const chunk = chunkFor(arm);
    view.canvases.forEach((canvas, j) => drawJoint(canvas, arm, j, data, chunk, now));
  }
  dash.draws += 1;
}

function drawJoint(canvas, arm, j, data, chunk, now) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
  if (canvas.height !== Math.round(h * dpr)) canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const t0 = now - PAST_S, t1 = now + AHEAD_S;
  const pad = { l: 34, r: 4, t: 14, b: 4 };
  const x = (t) => pad.l + (t - t0) / (t1 - t0) * (w - pad.l - pad.r);

  const series = [];
  const pick = (list) => list.filter(([t]) => t >= t0 - 0.5 && t <= t1).map(([t, v]) => [t, v[j]]);
  const states = pick(data.s), actions = pick(data.a);
  let ahead = [];
  if (chunk) {
    ahead = chunk.per_arm[arm].map((row, i) => [chunk.t_obs + i * chunk.dt, row[j]])
      .filter(([t]) => t >= t0 && t <= t1);
  }
  series.push(states, actions, ahead);
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const [, v] of s) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (!Number.isFinite(lo)) { lo = -1; hi = 1; }
  const span = Math.max(hi - lo, 2);
  const mid = (hi + lo) / 2;
  lo = mid - span * 0.6; hi = mid + span * 0.6;
  const y = (v) => pad.t + (hi - v) / (hi - lo) * (h - pad.t - pad.b);

  // grid: a line a second, the value range on the left
  ctx.strokeStyle = "#22272e";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let t = Math.ceil(t0); t <= t1; t += 1) { ctx.moveTo(x(t), pad.t); ctx.lineTo(x(t), h); }
  ctx.stroke();
  ctx.fillStyle = "#8a94a6";
  ctx.font = "10px sans-serif";
  ctx.textBaseline = "top";
  ctx.fillText(hi.toFixed(0), 2, pad.t);
  ctx.textBaseline = "bottom";
  ctx.fillText(lo.toFixed(0), 2, h - 2);
  // now
  ctx.strokeStyle = "#ffffff66";
  ctx.beginPath(); ctx.moveTo(x(now), pad.t); ctx.lineTo(x(now), h); ctx.stroke();

  const line = (points, color, dash = [], width = 1.5) => {
    if (points.length < 1) return;
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.setLineDash(dash);
    ctx.beginPath();
    points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    if (points.length === 1) ctx.lineTo(x(points[0][0]) + 1, y(points[0][1]));
    ctx.stroke();
    ctx.setLineDash([]);
  };
  line(ahead, "#d2a8ff", [4, 3], 1.5);
  line(actions, "#f0883e");
  line(states, "#58a6ff", [], 1.8);

  // title: joint name and the newest value
  const last = states.length ? states[states.length - 1][1] : null;
  ctx.fillStyle = "#d8dee9";
  ctx.font = "bold 11px sans-serif";
  ctx.textBaseline = "top";
  ctx.fillText(jointName(arm, j), pad.l, 1);
  ctx.textAlign = "right";
  ctx.fillStyle = "#58a6ff";
  ctx.fillText(last === null ? "—" : last.toFixed(1), w - 4, 1);
  ctx.textAlign = "left";
}

setInterval(drawAll, 100);

// -- buttons ----------------------------------------------------------------------------------
function applyControlPermission() {
  const allowed = S.config.control_allowed !== false;
  for (const id of ["estop", "estop-clear", "rec-start", "rec-stop"]) {
    const b = $(id);
    b.disabled = !allowed;
    if (!allowed) b.title = S.config.control_refusal || "controls work only from this machine";
  }
}

async function press(kind, body, label) {
  let reply;
  try {
    const res = await fetch(`/api/${kind}`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    reply = await res.json().catch(() => ({ ok: false, error: `HTTP ${res.status}` }));
  } catch (e) {
    toast(`${label}: NOT SENT — the dashboard server is unreachable (${e.message})`, "bad");
    return null;
  }
  if (!reply.ok) {
    toast(`${label}: refused — ${reply.error}`, "bad");
  } else if (reply.heard) {
    toast(`${label}: sent on ${reply.topic}, and someone is listening`, "ok");
  } else {
    toast(`${label}: sent on ${reply.topic}, but NOBODY on the bus listens to it ` +
      `(is the ${kind === "estop" ? "servo" : "recorder"} running?)`, "warn");
  }
  return reply;
}

$("estop").addEventListener("click", () =>
  press("estop", { engaged: true, reason: "e-stop pressed on the dashboard" }, "E-stop"));
$("estop-clear").addEventListener("click", () =>
  press("estop", { engaged: false, reason: "cleared on the dashboard" }, "Clear e-stop"));
$("rec-start").addEventListener("click", () =>
  press("record", { command: "start", task: $("task").value.trim() }, "Start recording"));
$("rec-stop").addEventListener("click", () =>
  press("record", { command: "stop", task: $("task").value.trim() }, "Stop recording"));
$("task").addEventListener("input", () => { S.taskEdited = true; });
document.addEventListener("keydown", (ev) => {
  // Escape engages the e-stop from anywhere on the page (not while typing in a field).
  if (ev.key === "Escape" && ev.target.tagName !== "INPUT" && !$("estop").disabled) {
    $("estop").click();
  }
});

connect();
