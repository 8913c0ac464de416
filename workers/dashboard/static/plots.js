// Joint plots: each arm's state, the actions sent and the latest chunk, one uPlot per joint.
// uPlot (uPlot.iife.js, vendored: MIT, v1.6.16) is loaded by index.html as the global `uPlot`.
import { $, AHEAD_S, PAST_S, S, dash } from "./state.js";
import { esc, isNum, num, serverNow } from "./util.js";

const COLORS = { state: "#58a6ff", action: "#f0883e", chunk: "#d2a8ff" };
const HEIGHT = 110;  // px of plot below each joint's title

export function jointName(arm, i) {
  const names = S.status && S.status.arms && S.status.arms[arm] && S.status.arms[arm].names;
  const name = names && names[i] ? String(names[i]) : `joint ${i}`;
  return name.replace(/\.pos$/, "");
}

// The y range: the data with 20 % room, never narrower than 2 degrees (a still joint is flat).
function yRange(_u, lo, hi) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [-1, 1];
  const span = Math.max(hi - lo, 2), mid = (hi + lo) / 2;
  return [mid - span * 0.6, mid + span * 0.6];
}

// A vertical line at "now" (x = 0: the x axis is seconds from now).
function drawNow(u) {
  const x = Math.round(u.valToPos(0, "x", true));
  const { ctx } = u;
  ctx.save();
  ctx.strokeStyle = "#ffffff66";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(x, u.bbox.top);
  ctx.lineTo(x, u.bbox.top + u.bbox.height);
  ctx.stroke();
  ctx.restore();
}

function makePlot(box) {
  const axis = { stroke: "#8a94a6", grid: { stroke: "#22272e", width: 1 },
                 ticks: { show: false }, font: "10px sans-serif", gap: 2 };
  const line = (label, stroke, extra = {}) =>
    ({ label, stroke, width: 1.5, spanGaps: true, points: { show: false }, ...extra });
  return new uPlot({
    width: Math.max(box.clientWidth, 60),
    height: HEIGHT,
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: false, range: [-PAST_S, AHEAD_S] }, y: { range: yRange } },
    // Both axes shown: uPlot 1.6 draws no y axis when the x axis is hidden.
    axes: [{ ...axis, size: 16, incrs: [1, 2, 5], values: (_u, xs) => xs.map((x) => `${x} s`) },
           { ...axis, size: 30 }],
    series: [{}, line("state", COLORS.state, { width: 1.8 }), line("action", COLORS.action),
             line("chunk", COLORS.chunk, { dash: [4, 3] })],
    hooks: { draw: [drawNow] },
  }, [[], [], [], []], box);
}

export function ensureArms(arms) {
  const box = $("arms");
  for (const arm of Object.keys(arms).sort()) {
    if (S.armViews[arm]) continue;
    box.querySelector(".absent")?.remove();
    const dim = arms[arm].dim || 6;
    const div = document.createElement("div");
    div.className = "arm";
    div.dataset.arm = arm;
    div.innerHTML = `<h3>${esc(arm)} <span class="muted src"></span></h3><div class="joints">` +
      Array.from({ length: dim }, (_, i) =>
        `<div class="joint" data-joint="${i}"><div class="jhead"><span class="jname"></span>` +
        `<span class="jval"></span></div><div class="jplot"></div></div>`).join("") + `</div>`;
    box.appendChild(div);
    const joints = [...div.querySelectorAll(".joint")].map((el) => ({
      name: el.querySelector(".jname"), value: el.querySelector(".jval"),
      plot: makePlot(el.querySelector(".jplot")), box: el.querySelector(".jplot"),
    }));
    const resize = new ResizeObserver(() => {
      for (const j of joints) j.plot.setSize({ width: Math.max(j.box.clientWidth, 60), height: HEIGHT });
    });
    resize.observe(div);
    S.armViews[arm] = { div, joints, src: div.querySelector(".src") };
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

// One series as uPlot wants it, [xs, ys]: x in seconds from now, only the plotted window.
function series(points, j, now) {
  const xs = [], ys = [];
  for (const [t, v] of points) {
    const x = t - now;
    if (x >= -PAST_S - 0.5 && x <= AHEAD_S) { xs.push(x); ys.push(v[j]); }
  }
  return [xs, ys];
}

function drawAll() {
  if (document.hidden || !S.status) return;
  const now = serverNow();
  for (const [arm, view] of Object.entries(S.armViews)) {
    const data = S.samples[arm] || { s: [], a: [] };
    const chunk = chunkFor(arm);
    const ahead = chunk ? chunk.per_arm[arm].map((row, i) => [chunk.t_obs + i * chunk.dt, row]) : [];
    view.joints.forEach((joint, j) => {
      const states = series(data.s, j, now);
      // uPlot.join merges the three time bases into one x array (nulls where a series has none).
      joint.plot.setData(uPlot.join([states, series(data.a, j, now), series(ahead, j, now)]));
      const last = states[1].length ? states[1][states[1].length - 1] : null;
      joint.name.textContent = jointName(arm, j);
      joint.value.textContent = last === null ? "—" : last.toFixed(1);
    });
  }
  dash.draws += 1;
}

setInterval(drawAll, 100);
