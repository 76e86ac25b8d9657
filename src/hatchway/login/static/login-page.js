// hatchway approval page: runs the SCRAM-SHA-256 proof (scram.js) when the user
// presses Approve. Deny is a plain form POST of its own and needs no script.
// The password form starts hidden (its input has no name and the form no
// action), so without this script the password can never be posted; the
// "needs JavaScript" note is hidden here instead. The session reference and the
// CSRF token come from data attributes (no inline script).
//
// Confirm-code (issue 8 §2): when the page lists three codes, the user first
// picks the one the device shows; only then do the password and Approve
// appear. The pick goes to the server with scram/start, which checks it
// before any password work; a wrong pick cancels the request.
import { ScramClient } from "./scram.js";

const form = document.getElementById("approve");
const approveButton = document.getElementById("approve-button");
const denyButton = document.getElementById("deny-button");
const result = document.getElementById("result");
const needsPick = form.dataset.confirm === "1";
let picked = null;

function showPasswordForm() {
  form.hidden = false;
  approveButton.hidden = false;
}

if (needsPick) {
  for (const button of document.querySelectorAll("#confirm button.code")) {
    button.addEventListener("click", () => {
      picked = button.dataset.code;
      for (const b of document.querySelectorAll("#confirm button.code")) {
        b.setAttribute("aria-pressed", b === button ? "true" : "false");
      }
      showPasswordForm();
      document.getElementById("password").focus();
    });
  }
} else {
  showPasswordForm();
}
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
    const body = { user_code: form.dataset.userCode, client_first: client.clientFirst() };
    if (form.dataset.typed) body.typed = form.dataset.typed;
    if (needsPick) body.confirm_code = picked;
    const start = await post("/login/scram/start", body);
    if (!start.ok && start.data.error === "wrong_code") {
      say(start.data.error_description, "wrong_code");
      for (const b of buttons()) b.hidden = true;
      form.hidden = true;
      return;
    }
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
      // Deny stays: until the device collects, it withdraws the approval.
      approveButton.hidden = true;
      form.hidden = true;
      denyButton.textContent = "Withdraw approval";
      denyButton.disabled = false;
      document.getElementById("withdraw-note").hidden = false;
      const confirm = document.getElementById("confirm");
      if (confirm) confirm.hidden = true;
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
