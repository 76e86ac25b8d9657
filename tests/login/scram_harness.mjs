// Test harness: drives static/scram.js under node for tests/login/test_login_scram_js.py.
// Reads one JSON request per line on stdin, writes one JSON answer per line.
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const scram = await import(pathToFileURL(process.argv[2]).href);

function prep(input) {
  try {
    return { ok: true, value: scram.saslprep(input) };
  } catch (e) {
    return { ok: false, error: e.constructor.name };
  }
}

async function exchange(req) {
  try {
    const client = new scram.ScramClient(req.ref, req.password, { clientNonce: req.clientNonce });
    const clientFirst = client.clientFirst();
    const clientFinal = await client.clientFinal(req.serverFirst);
    let verified = true;
    try {
      client.verifyServerFinal(req.serverFinal);
    } catch {
      verified = false;
    }
    return { ok: true, clientFirst, clientFinal, verified };
  } catch (e) {
    return { ok: false, error: e.constructor.name };
  }
}

// saslprep of every single code point, run-length encoded as [first, last, result]
// where result is "!" (rejected), "=" (unchanged) or the output's code points in hex.
function sweep() {
  const runs = [];
  for (let cp = 0; cp <= 0x10ffff; cp++) {
    const input = String.fromCodePoint(cp);
    const r = prep(input);
    let result = "!";
    if (r.ok) {
      result = r.value === input ? "=" : Array.from(r.value, (c) => c.codePointAt(0).toString(16)).join(" ");
    }
    const last = runs[runs.length - 1];
    if (last !== undefined && last[2] === result && last[1] === cp - 1) last[1] = cp;
    else runs.push([cp, cp, result]);
  }
  return { ok: true, runs };
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  const req = JSON.parse(line);
  let answer;
  if (req.op === "saslprep") answer = prep(req.input);
  else if (req.op === "exchange") answer = await exchange(req);
  else if (req.op === "sweep") answer = sweep();
  else answer = { ok: false, error: "unknown op" };
  process.stdout.write(JSON.stringify(answer) + "\n");
}
