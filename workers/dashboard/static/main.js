// The page's entry point (index.html loads it as an ES module): the buttons, then connect.
import { $, S } from "./state.js";
import { toast } from "./util.js";
import { connect } from "./connection.js";

export function applyControlPermission() {
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
