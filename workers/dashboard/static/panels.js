// The panels: cameras, episode, simulator, processes, policies, control, recorder, e-stop, events.
import { $, S } from "./state.js";
import { clock, dur, esc, isNum, kvHtml, num, value } from "./util.js";
import { lost } from "./connection.js";
import { ensureArms, jointName } from "./plots.js";

export function cameraCard(name) {
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

export function render(msg) {
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
