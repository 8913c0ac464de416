// Small helpers: DOM lookup, escaping, number and time formatting, key-value tables, toasts.
import { $, S } from "./state.js";

export function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
export function isNum(x) { return typeof x === "number" && Number.isFinite(x); }
export function num(x, digits = 1, unit = "") {
  return isNum(x) ? `${x.toFixed(digits)}${unit}` : "—";
}
export function dur(s) {
  if (!isNum(s)) return "—";
  if (s < 60) return `${s.toFixed(1)} s`;
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(sec).padStart(2, "0")}s`;
}
export function clock(t) {
  if (!isNum(t)) return "—";
  const d = new Date(t * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." +
    String(d.getMilliseconds()).padStart(3, "0").slice(0, 1);
}
export function serverNow() { return Date.now() / 1000 + S.clockOffset; }
export function value(x) {
  if (x === null || x === undefined) return "—";
  if (typeof x === "number") return Number.isInteger(x) ? String(x) : x.toFixed(3);
  if (typeof x === "object") return JSON.stringify(x);
  return String(x);
}
const KV_HIDDEN = new Set(["process", "uptime_s", "last_error"]);
export function kvHtml(data, highlight) {
  const keys = Object.keys(data).filter((k) => !KV_HIDDEN.has(k));
  keys.sort((a, b) => (highlight.test(b) - highlight.test(a)) || a.localeCompare(b));
  return `<div class="kv">${keys.map((k) =>
    `<span class="k">${esc(k)}</span><span class="${highlight.test(k) ? "hl" : ""}">` +
    `${esc(value(data[k]))}</span>`).join("")}</div>`;
}
export function toast(text, kind = "") {
  const div = document.createElement("div");
  div.className = kind;
  div.textContent = text;
  $("toast").prepend(div);
  setTimeout(() => div.remove(), 6000);
  return div;
}
