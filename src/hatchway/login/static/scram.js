// SCRAM-SHA-256 client for the hatchway phone page.
//
// RFC 5802 (SCRAM), RFC 7677 (SHA-256), RFC 4013 (SASLprep). The page proves the
// password to the server without sending it: Hi() is PBKDF2-HMAC-SHA-256 and the
// proof HMAC-SHA-256, both from WebCrypto (crypto.subtle). The messages are
// byte-identical to hatchway.login.scram.ScramClient (the tests check this under
// node). The SCRAM username is the login session reference the server gave the
// page, which binds the proof to that one session (see scram.py).
//
// No dependencies, no inline script, no build step: import it as a module.

import {
  L,
  MAP_TO_NOTHING,
  MAP_TO_SPACE,
  NFKC_FIXUPS,
  PROHIBITED,
  RAND_AL,
  UNASSIGNED,
} from "./saslprep-tables.js";

export const MECHANISM = "SCRAM-SHA-256";
// Same bounds as scramp: the RFC 7677 floor, and a cap so a hostile server
// cannot make the phone spin.
const MIN_ITERATIONS = 4096;
const MAX_ITERATIONS = 10_000_000;
const MIN_SALT_BYTES = 12;
const NONCE_BYTES = 24;
const GS2_HEADER = "n,,";

export class SaslprepError extends Error {}
export class ScramError extends Error {}

function inTable(table, cp) {
  // Binary search over sorted inclusive [first, last] pairs.
  let lo = 0;
  let hi = table.length / 2 - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (cp < table[2 * mid]) hi = mid - 1;
    else if (cp > table[2 * mid + 1]) lo = mid + 1;
    else return true;
  }
  return false;
}

// RFC 4013 §2, in the same order and with the same checks as scramp's saslprep.
export function saslprep(source) {
  let mapped = "";
  for (const ch of source) {
    const cp = ch.codePointAt(0);
    if (inTable(MAP_TO_NOTHING, cp)) continue;
    // Checked before NFKC, not only after: normalize() knows today's Unicode, and
    // could turn a character unassigned in 3.2 into assigned ones; scramp (which
    // normalises with Unicode 3.2) leaves it in place and rejects it.
    if (inTable(UNASSIGNED, cp)) throw new SaslprepError("unassigned code point");
    if (inTable(MAP_TO_SPACE, cp)) mapped += " ";
    else mapped += NFKC_FIXUPS.get(cp) ?? ch; // Unicode 3.2 decompositions (Corrigendum 4)
  }
  const data = mapped.normalize("NFKC");
  if (data === "") return "";
  const cps = Array.from(data, (c) => c.codePointAt(0));
  // RFC 3454 §6: a string with R/AL characters must start and end with one and
  // contain no L characters; otherwise it may contain no R/AL characters.
  let forbiddenBidi = RAND_AL;
  if (inTable(RAND_AL, cps[0])) {
    if (!inTable(RAND_AL, cps[cps.length - 1])) {
      throw new SaslprepError("malformed bidi sequence");
    }
    forbiddenBidi = L;
  }
  for (const cp of cps) {
    if (inTable(PROHIBITED, cp)) throw new SaslprepError("prohibited character");
    if (inTable(forbiddenBidi, cp)) throw new SaslprepError("forbidden bidi character");
  }
  return data;
}

const encoder = new TextEncoder();

function b64encode(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

const B64_STRICT = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function b64decode(text) {
  if (!B64_STRICT.test(text)) throw new ScramError("invalid base64");
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function isPrintableNonce(nonce) {
  if (nonce.length === 0) return false;
  for (let i = 0; i < nonce.length; i++) {
    const c = nonce.charCodeAt(i);
    if (c < 0x21 || c > 0x7e || c === 0x2c) return false;
  }
  return true;
}

export function randomNonce() {
  const raw = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
  return b64encode(raw).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

// The server-first attributes in RFC 5802 order; extensions may follow and are
// ignored, 'm' (mandatory extension) and 'e' (server error) end the exchange.
function parseServerFirst(message) {
  const attrs = [];
  const seen = new Set();
  for (const part of message.split(",")) {
    if (part.length < 3 || part[1] !== "=" || !/^[A-Za-z]$/.test(part[0])) {
      throw new ScramError("malformed server-first");
    }
    if (seen.has(part[0])) throw new ScramError("duplicate attribute");
    seen.add(part[0]);
    attrs.push([part[0], part.slice(2)]);
  }
  if (seen.has("e")) throw new ScramError("server error");
  if (seen.has("m")) throw new ScramError("unsupported extension");
  if (attrs.length < 3 || attrs[0][0] !== "r" || attrs[1][0] !== "s" || attrs[2][0] !== "i") {
    throw new ScramError("malformed server-first");
  }
  const [[, nonce], [, salt], [, count]] = attrs;
  if (!/^[1-9][0-9]*$/.test(count)) throw new ScramError("invalid iteration count");
  const iterations = Number(count);
  if (iterations < MIN_ITERATIONS || iterations > MAX_ITERATIONS) {
    throw new ScramError("iteration count out of range");
  }
  const saltBytes = b64decode(salt);
  if (saltBytes.length < MIN_SALT_BYTES) throw new ScramError("salt too short");
  if (!isPrintableNonce(nonce)) throw new ScramError("invalid nonce");
  return { nonce, salt: saltBytes, iterations };
}

async function hmacSha256(key, data) {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, data));
}

async function hi(password, salt, iterations) {
  const k = await crypto.subtle.importKey("raw", encoder.encode(password), "PBKDF2", false, [
    "deriveBits",
  ]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    k,
    256,
  );
  return new Uint8Array(bits);
}

function xor(a, b) {
  return a.map((x, i) => x ^ b[i]);
}

function escapeUsername(name) {
  return name.replaceAll("=", "=3D").replaceAll(",", "=2C");
}

// One exchange: clientFirst() -> (server-first) -> clientFinal() -> (server-final)
// -> verifyServerFinal(). The password is prepared at construction so a bad one
// fails before anything is sent, and is kept only inside this object.
export class ScramClient {
  #password;
  #clientNonce;
  #clientFirstBare;
  #serverSignature = null;
  #stage = "new";

  constructor(sessionRef, password, { clientNonce } = {}) {
    this.#password = saslprep(password);
    if (this.#password === "") throw new SaslprepError("password is empty");
    const username = saslprep(sessionRef);
    if (username === "") throw new SaslprepError("session reference is empty");
    this.#clientNonce = clientNonce ?? randomNonce();
    if (!isPrintableNonce(this.#clientNonce)) throw new ScramError("invalid client nonce");
    this.#clientFirstBare = `n=${escapeUsername(username)},r=${this.#clientNonce}`;
  }

  #advance(from, to) {
    if (this.#stage !== from) throw new ScramError(`SCRAM client is ${this.#stage}`);
    this.#stage = to;
  }

  clientFirst() {
    this.#advance("new", "sent-first");
    return GS2_HEADER + this.#clientFirstBare;
  }

  async clientFinal(serverFirst) {
    this.#advance("sent-first", "sent-final");
    const { nonce, salt, iterations } = parseServerFirst(serverFirst);
    if (!nonce.startsWith(this.#clientNonce) || nonce.length <= this.#clientNonce.length) {
      throw new ScramError("server nonce does not extend the client nonce");
    }
    const salted = await hi(this.#password, salt, iterations);
    const clientKey = await hmacSha256(salted, encoder.encode("Client Key"));
    const storedKey = new Uint8Array(await crypto.subtle.digest("SHA-256", clientKey));
    const serverKey = await hmacSha256(salted, encoder.encode("Server Key"));
    const withoutProof = `c=${btoa(GS2_HEADER)},r=${nonce}`;
    const authMessage = encoder.encode(
      `${this.#clientFirstBare},${serverFirst},${withoutProof}`,
    );
    const clientSignature = await hmacSha256(storedKey, authMessage);
    this.#serverSignature = await hmacSha256(serverKey, authMessage);
    return `${withoutProof},p=${b64encode(xor(clientKey, clientSignature))}`;
  }

  // Throws unless the server proved it holds this account's verifier.
  verifyServerFinal(serverFinal) {
    this.#advance("sent-final", "done");
    const match = /^v=([A-Za-z0-9+/=]+)(?:,.*)?$/.exec(serverFinal);
    if (match === null) throw new ScramError("server rejected the proof");
    const got = b64decode(match[1]);
    const want = this.#serverSignature;
    let diff = got.length ^ want.length;
    for (let i = 0; i < want.length; i++) diff |= want[i] ^ (got[i] ?? 0);
    if (diff !== 0) throw new ScramError("server signature mismatch");
  }
}
