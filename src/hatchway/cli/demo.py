"""``hatchway demo``: run every landed flow end to end on localhost and narrate it.

It starts a real ``hatchway serve`` in a temporary data dir on free loopback ports, so
it never touches the operator's own data, and stops it afterwards.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import Progress

from hatchway.cli.login import login_demo_step
from hatchway.cli.output import console, errors_reported
from hatchway.errors import HatchwayError
from hatchway.server.process import ServerProcess


class DemoCheckFailed(HatchwayError):
    """A step of the demo did not behave as it must; the message says which."""


class RecordingTransport:
    """Wraps the plain HTTP transport and keeps the last sealed token (to show a replay)."""

    def __init__(self) -> None:
        from hatchway.device import HttpTransport

        self.inner = HttpTransport()
        self.last: bytes = b""
        self.bytes_sent = 0

    def __call__(self, url: str, token: bytes) -> bytes:
        self.last = token
        self.bytes_sent += len(token)
        return self.inner(url, token)

    def close(self) -> None:
        self.inner.close()


def demo(
    messages: Annotated[
        int, typer.Option(min=1, max=10000, help="Telemetry messages to send.")
    ] = 100,
    keep: Annotated[bool, typer.Option(help="Keep the temporary data dir afterwards.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON summary instead of narration.")
    ] = False,
) -> None:
    """Run all three flows end to end against a real local server and narrate them.

    Message-level security after TLS, cross-device login and the secure-element
    channel through a web app, in a temporary data dir; exits 0 when every check
    passed."""
    with errors_reported(as_json):
        root = Path(tempfile.mkdtemp(prefix="hatchway-demo-"))
        say = (lambda *_: None) if as_json else console.print
        server = ServerProcess(root / "server")
        try:
            summary = _msgsec(server, root, messages, say, quiet=as_json)
            summary["login"] = login_demo_step(server, say)
            summary["secure_element"] = _secure_element(server, root, say)
        finally:
            server.stop()
            if not keep:
                import shutil

                shutil.rmtree(root, ignore_errors=True)
        if as_json:
            print(json.dumps(summary, sort_keys=True))
        else:
            console.print("[bold green]demo finished: every step checked[/]")


def _msgsec(
    server: ServerProcess, root: Path, count: int, say: Any, *, quiet: bool
) -> dict[str, Any]:
    from hatchway.config import settings_from_env
    from hatchway.device import Device
    from hatchway.server.context import ServerContext

    say("[bold]Message-level security after TLS[/] (US 11,546,310 B2)")
    spin = not quiet and console.is_terminal  # piped, a spinner only leaves a blank line
    with console.status("starting hatchway serve…", spinner="dots") if spin else _null():
        server.start()
    say(f"  server up: HTTPS {server.https_url}, plain {server.http_url}")

    settings = settings_from_env({"HATCHWAY_DATA_DIR": str(server.data_dir)})
    ctx = ServerContext.create(settings)
    try:
        secret = ctx.enrolment.provision("meter-001")
    finally:
        ctx.close()
    say("  1. operator provisioned meter-001 (secret stored only as a hash)")

    transport = RecordingTransport()
    device = Device.enroll(
        server=server.https_url,
        device_id="meter-001",
        secret=secret,
        state_path=root / "meter-001.json",
        ca_file=server.ca_file,
        transport=transport,
    )
    say("  2. device enrolled over TLS: first token, keys + proof of possession, certificate")
    say("     TLS closed; from here on everything is a sealed JWT over plain HTTP")

    started = time.perf_counter()
    half = count // 2
    _send_many(device, 0, half, quiet)
    say(f"  3. {half} sealed telemetry messages acknowledged")

    replay = transport.last
    refused = httpx.post(
        server.http_url + "/m", content=replay, headers={"content-type": "application/jose"}
    )
    if refused.status_code != 400:
        raise DemoCheckFailed(f"replay was not refused (HTTP {refused.status_code})")
    say(f"  4. replaying a captured message: refused with the uniform error {refused.text}")

    ctx = ServerContext.create(settings)
    try:
        cid = ctx.store.queue_command(
            "meter-001", {"op": "set-interval", "seconds": 60}, now=time.time()
        )
    finally:
        ctx.close()
    command = device.poll()
    if command is None or command.cid != cid:
        raise DemoCheckFailed("the queued command did not arrive")
    device.respond(command, {"ok": True})
    say(f"  5. operator queued {cid[:8]}…; the device polled, got it sealed, and answered sealed")

    with console.status("restarting the server mid-stream…", spinner="dots") if spin else _null():
        server.restart()
    _send_many(device, half, count, quiet)
    say(f"  6. server restarted; {count - half} more messages went through, none lost")

    ctx = ServerContext.create(settings)
    try:
        stored = ctx.store.count_messages("meter-001")
        result = ctx.store.get_command(cid)
    finally:
        ctx.close()
    telemetry = count
    # telemetry + the poll + the command result are each stored exactly once.
    if stored != telemetry + 2:
        raise DemoCheckFailed(f"expected {telemetry + 2} stored messages, found {stored}")
    if result is None or result.result is None:
        raise DemoCheckFailed("the command result was not recorded")
    refused_again = httpx.post(
        server.http_url + "/m", content=replay, headers={"content-type": "application/jose"}
    )
    if refused_again.status_code != 400:
        raise DemoCheckFailed("replay accepted after restart")
    say(
        f"  7. after the restart the old replay is still refused; "
        f"{stored} messages stored once each"
    )
    device.close()
    return {
        "flow": "msgsec",
        "messages_sent": count,
        "messages_stored": stored,
        "replay_refused": True,
        "command_roundtrip": True,
        "bytes_sent": transport.bytes_sent,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _secure_element(server: ServerProcess, root: Path, say: Any) -> dict[str, Any]:
    """US 10,812,467 B2: the web flow with the page played by a WebSocket client."""
    import ssl

    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
    from websockets.typing import Origin

    from hatchway.runtime import system_clock, system_random
    from hatchway.se import CardStateFile, personalize
    from hatchway.se.relay import BridgeProcess, PageClient
    from hatchway.server.datadir import ensure_data_dir

    say("[bold]Secure-element channel through a web app[/] (US 10,812,467 B2)")
    ca = ensure_data_dir(server.data_dir).ca
    card = root / "card.json"
    CardStateFile(card).save(
        personalize(ca.certificate, ca.private_key, now=system_clock(), random=system_random)
    )
    say("  1. emulated SE personalised: trusts the server's CA, which certified its key as an SE")
    phish = "https://hatchway-login.example"
    tls = ssl.create_default_context(cafile=str(server.ca_file))
    with BridgeProcess(card, [server.https_url, phish]) as bridge:
        say(f"  2. bridge on {bridge.url}, allowing {server.https_url} and (on purpose) {phish}")
        with PageClient(server.https_url, bridge.url, origin=server.https_url, verify=tls) as page:
            good = page.run()
        if not good.ok:
            raise DemoCheckFailed(f"the genuine page failed: {good.outcome}")
        say(
            f"  3. genuine page: channel opened and a secret provisioned + read back in "
            f"{good.round_trips} server round trips, {good.apdus} APDUs, "
            f"{good.seconds * 1000:.0f} ms; the page saw only ciphertext"
        )
        with PageClient(server.https_url, bridge.url, origin=phish, verify=tls) as page:
            bad = page.run()
        if bad.ok or bad.outcome.get("sw") != "6A88":
            raise DemoCheckFailed(f"the phishing page was not refused by the SE: {bad.outcome}")
        say(
            f"  4. phishing copy on {phish} relaying the genuine certificate: the SE refused "
            f"it ({bad.outcome['error_description']})"
        )
    with BridgeProcess(card, [server.https_url]) as bridge:
        try:
            connect(bridge.url, origin=Origin(phish), open_timeout=10).close()
        except InvalidStatus as exc:
            status = exc.response.status_code
        else:
            raise DemoCheckFailed("the bridge accepted an origin outside its allow-list")
    say(f"  5. a bridge allowing only the genuine origin refuses {phish} (HTTP {status})")
    return {
        "flow": "sechannel",
        "round_trips": good.round_trips,
        "apdus": good.apdus,
        "seconds": round(good.seconds, 3),
        "phishing_refused_sw": bad.outcome["sw"],
        "bridge_refused_status": status,
    }


def _send_many(device: Any, start: int, stop: int, quiet: bool) -> None:
    # A progress bar only on a terminal: piped, it would leave blank lines in the story.
    if quiet or not console.is_terminal:
        for i in range(start, stop):
            device.send({"kwh": 12.5 + i, "n": i})
        return
    with Progress(transient=True, console=console) as progress:
        task = progress.add_task("sending telemetry", total=stop - start)
        for i in range(start, stop):
            device.send({"kwh": 12.5 + i, "n": i})
            progress.advance(task)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
