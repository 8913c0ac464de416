// The page's state and settings, shared by every module.
import { clock } from "./util.js";
import { connected, lost } from "./connection.js";

export const $ = (id) => document.getElementById(id);
export const PAST_S = 10;          // seconds of history on the plots
export const AHEAD_S = 3;          // seconds ahead of "now" (room for the action chunk)
export const SILENT_S = 4;         // no message for this long = the server is lost
export const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];

export const S = {
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
export const dash = window.dash = { frames: 0, updates: 0, draws: 0, connects: 0, connected: false };
