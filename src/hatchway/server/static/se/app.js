// hatchway secure-element web app (US 10,812,467 B2 claim 1): relay APDUs between the
// server (same origin, /se/api/...) and the SE behind the loopback bridge. Plain JS,
// no build step; loaded under a CSP that forbids inline script.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_LOG = 40;

function setStatus(state, text) {
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text;
}

function summarize(pairs) {
  const dl = $("summary");
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = String(v);
    dl.append(dt, dd);
  }
}

function logApdu(direction, hex) {
  const list = $("log");
  if (list.children.length >= MAX_LOG) return;
  const li = document.createElement("li");
  li.textContent = `${direction} ${hex.length > 96 ? hex.slice(0, 96) + "…" : hex}`;
  list.append(li);
}

// Every wait on this page ends: a bridge, card or server that stops answering turns
// into a visible error and the button comes back, never an endless "busy".
const OPEN_TIMEOUT_MS = 10000;
const RELAY_TIMEOUT_MS = 30000;
const SERVER_TIMEOUT_MS = 30000;
const RETRY = "Press the button to try again.";

// One WebSocket to the bridge. The bridge takes the origin from the handshake's Origin
// header, which the browser sets; nothing this page writes can change it.
class BridgeLink {
  constructor(port) {
    this.port = port;
    this.nextId = 1;
    this.pending = new Map();
    // Set once the socket is gone (closed by the bridge, e.g. its idle timeout, or by
    // this page): every later relay() fails at once instead of sending into nothing.
    this.closedError = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${this.port}/`);
      this.ws = ws;
      let ready = false;
      const timer = setTimeout(() => {
        this.fail(new Error(`the bridge did not answer within ${OPEN_TIMEOUT_MS / 1000} s`));
      }, OPEN_TIMEOUT_MS);
      this.onFail = (err) => {
        clearTimeout(timer);
        if (!ready) reject(err);
      };
      ws.onmessage = (event) => {
        let msg;
        try {
          msg = JSON.parse(event.data);
        } catch {
          this.fail(new Error("the bridge sent something that is not JSON"));
          return;
        }
        if (!ready) {
          if (msg.type !== "ready") return;
          ready = true;
          clearTimeout(timer);
          resolve(msg);
          return;
        }
        if (msg.id === null && msg.error) {
          // The bridge refused a message whole: nothing will answer the pending relay.
          this.fail(new Error(`bridge: ${msg.error}`));
          return;
        }
        const waiter = this.pending.get(msg.id);
        if (!waiter) return;
        this.pending.delete(msg.id);
        clearTimeout(waiter.timer);
        if (msg.error) waiter.reject(new Error(`bridge: ${msg.error}`));
        else if (!Array.isArray(msg.responses)) waiter.reject(new Error("bridge: no responses"));
        else waiter.resolve(msg.responses);
      };
      ws.onclose = (event) => {
        const reason = event.reason ? `: ${event.reason}` : "";
        this.fail(new Error(
          ready ? `the bridge closed the connection (${event.code}${reason})`
                : "the bridge refused this page (origin not allowed, busy, or not running)"));
      };
    });
  }

  // Ends the link for good: rejects the opening and every pending relay with ``err``.
  fail(err) {
    if (this.closedError) return;
    this.closedError = err;
    if (this.onFail) this.onFail(err);
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(err);
    }
    this.pending.clear();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close();
  }

  relay(apdus) {
    if (this.closedError) return Promise.reject(this.closedError);
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error("the bridge connection is not open"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(new Error(`the bridge did not answer within ${RELAY_TIMEOUT_MS / 1000} s`));
      }, RELAY_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ id, apdus }));
    });
  }

  close() {
    this.fail(new Error("closed by the page"));
  }
}

async function post(path, body) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), SERVER_TIMEOUT_MS);
  let response;
  let data;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
      signal: abort.signal,
    });
    data = await response.json();
  } catch (err) {
    if (abort.signal.aborted) {
      throw new Error(`the server did not answer within ${SERVER_TIMEOUT_MS / 1000} s`);
    }
    throw new Error(response ? `the server sent an unreadable answer (HTTP ${response.status})`
                             : `the server could not be reached (${err.message})`);
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok) {
    const sw = data.sw ? ` [SW ${data.sw}]` : "";
    throw new Error(`${data.error_description || data.error}${sw}`);
  }
  return data;
}

async function run() {
  $("start").disabled = true;
  $("log").replaceChildren();
  summarize([]);
  const port = $("port").value;
  const link = new BridgeLink(port);
  const started = performance.now();
  let roundTrips = 0;
  let apdus = 0;
  try {
    setStatus("busy", "Connecting to the bridge…");
    const ready = await link.open();
    setStatus("busy", `Bridge ready; the card was told origin ${ready.origin}. Fetching the application certificate…`);
    let step = await post("/se/api/start", {});
    roundTrips++;
    while (!step.done) {
      step.apdus.forEach((a) => logApdu("→", a));
      setStatus("busy", `Relaying ${step.apdus.length} APDUs to the card…`);
      const responses = await link.relay(step.apdus);
      responses.forEach((r) => logApdu("←", r));
      apdus += step.apdus.length;
      setStatus("busy", `Relayed ${apdus} APDUs; waiting for the server…`);
      step = await post(step.next, { session: step.session, responses });
      roundTrips++;
    }
    const ms = Math.round(performance.now() - started);
    setStatus("ok", "Secure channel opened; a secret was provisioned and verified by the server.");
    summarize([
      ["card", step.card], ["secret", `${step.secret_bytes} bytes (never seen by this page)`],
      ["server round trips", roundTrips], ["APDUs relayed", apdus], ["time", `${ms} ms`],
    ]);
  } catch (err) {
    setStatus("failed", `Failed: ${err.message}. ${RETRY}`);
    summarize([["server round trips", roundTrips], ["APDUs relayed", apdus]]);
  } finally {
    link.close();
    $("start").disabled = false;
  }
}

// Provisioning starts only from a click: a page that merely got navigated to (a link,
// a redirect, an iframe attempt) never drives the card.
document.addEventListener("DOMContentLoaded", () => {
  const params = new URLSearchParams(location.search);
  if (params.has("bridge")) $("port").value = params.get("bridge");
  $("start").addEventListener("click", (event) => {
    if (event.isTrusted) run();
  });
});
