// The WebSocket to the dashboard server: connect, notice a lost server, reconnect with backoff.
import { $, BACKOFF_MS, S, SILENT_S, dash } from "./state.js";
import { clock, dur, serverNow } from "./util.js";
import { onFrame, onJson } from "./messages.js";

let ws = null, attempt = 0, retryTimer = null, retryAt = 0, lastMessage = 0, lostSince = null;

export function connect() {
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

// A hello from the server: the connection is good again.
export function connected() {
  attempt = 0;
  lostSince = null;
}

export function lost() {
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

export function showConnection() {
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
