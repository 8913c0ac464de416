// What the server sends: JSON updates (the picture of the bus) and binary camera frames.
import { PAST_S, S, dash } from "./state.js";
import { isNum, serverNow } from "./util.js";
import { connected, showConnection } from "./connection.js";
import { cameraCard, render } from "./panels.js";
import { applyControlPermission } from "./main.js";

export function onJson(msg) {
  if (msg.type === "hello") {
    S.config = msg.config || {};
    S.samples = {};
    S.lastSampleId = 0;
    S.events = [];
    S.lastEventId = 0;
    S.chunks = {};
    connected();
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

export function onFrame(buf) {
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
