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

// One WebSocket to the bridge. The bridge takes the origin from the handshake's Origin
// header, which the browser sets; nothing this page writes can change it.
class BridgeLink {
  constructor(port) {
    this.port = port;
    this.nextId = 1;
    this.pending = new Map();
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${this.port}/`);
      this.ws = ws;
      let ready = false;
      ws.onmessage = (event) => {
        const msg = JSON.parse(event.data);
        if (!ready && msg.type === "ready") {
          ready = true;
          resolve(msg);
          return;
        }
        const waiter = this.pending.get(msg.id);
        if (!waiter) return;
        this.pending.delete(msg.id);
        if (msg.error) waiter.reject(new Error(`bridge: ${msg.error}`));
        else waiter.resolve(msg.responses);
      };
      ws.onclose = (event) => {
        const err = new Error(
          ready ? `bridge closed the connection (${event.code})`
                : "the bridge refused this page (origin not allowed, busy, or not running)");
        if (!ready) reject(err);
        for (const waiter of this.pending.values()) waiter.reject(err);
        this.pending.clear();
      };
    });
  }

  relay(apdus) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ id, apdus }));
    });
  }

  close() {
    if (this.ws) this.ws.close();
  }
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await response.json();
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
    setStatus("failed", `Failed: ${err.message}`);
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
