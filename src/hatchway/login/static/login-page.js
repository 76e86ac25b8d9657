// hatchway approval page: runs the SCRAM-SHA-256 proof (scram.js) when the user
// presses Approve. Deny is a plain form POST of its own and needs no script.
// The password form starts hidden (its input has no name and the form no
// action), so without this script the password can never be posted; the
// "needs JavaScript" note is hidden here instead. The session reference and the
// CSRF token come from data attributes (no inline script).
import { ScramClient } from "./scram.js";

const form = document.getElementById("approve");
const approveButton = document.getElementById("approve-button");
const result = document.getElementById("result");

form.hidden = false;
approveButton.hidden = false;
document.getElementById("nojs").hidden = true;

// The server prints the start time in UTC; show it in the phone's own zone too.
const started = document.getElementById("started");
if (started) {
  const at = new Date(started.getAttribute("datetime"));
  if (!Number.isNaN(at.getTime())) {
    const local = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
    started.title = `${started.textContent} (${local} here)`;
  }
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-csrf-token": form.dataset.csrf },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = {};
  try {
    data = await response.json();
  } catch {
    data = { error: "server_error" };
  }
  return { ok: response.ok, data };
}

function say(text, status) {
  result.textContent = text;
  result.dataset.status = status;
}

function buttons() {
  return document.querySelectorAll(".choices button");
}

function setBusy(busy) {
  for (const b of buttons()) b.disabled = busy;
}

async function approve() {
  const password = document.getElementById("password").value;
  if (password === "") {
    say("Type your password to approve.", "need-password");
    return;
  }
  setBusy(true);
  say("Checking…", "checking");
  try {
    const client = new ScramClient(form.dataset.sessionRef, password);
    const start = await post("/login/scram/start", {
      user_code: form.dataset.userCode,
      client_first: client.clientFirst(),
    });
    if (!start.ok) throw new Error(start.data.error_description || start.data.error);
    const clientFinal = await client.clientFinal(start.data.server_first);
    const finish = await post("/login/scram/finish", {
      exchange: start.data.exchange,
      client_final: clientFinal,
    });
    if (!finish.ok) throw new Error(finish.data.error_description || finish.data.error);
    client.verifyServerFinal(finish.data.server_final);
    document.getElementById("password").value = "";
    if (finish.data.status === "approved") {
      say("Approved. You can close this page.", "approved");
      if (finish.data.match_number) {
        document.getElementById("match-number").textContent = finish.data.match_number;
        document.getElementById("match").hidden = false;
      }
      for (const b of buttons()) b.hidden = true;
    } else {
      say(`Not approved: ${finish.data.status}.`, finish.data.status);
      setBusy(false);
    }
  } catch (e) {
    say(`Not approved: ${e.message}`, "failed");
    setBusy(false);
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  approve();
});
