// Joint plots: each arm's state, the actions sent and the latest chunk, on a canvas per joint.
import { $, AHEAD_S, PAST_S, S, dash } from "./state.js";
import { esc, isNum, num, serverNow, value } from "./util.js";

export function jointName(arm, i) {
  const names = S.status && S.status.arms && S.status.arms[arm] && S.status.arms[arm].names;
  const name = names && names[i] ? String(names[i]) : `joint ${i}`;
  return name.replace(/\.pos$/, "");
}

export function ensureArms(arms) {
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
