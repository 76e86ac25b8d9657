"""``hatchway device …``: operator commands (on the server's data dir) and device commands.

Operator: ``provision``, ``revoke``, ``command``, ``list``, ``messages``.
Device:   ``enroll``, ``send``, ``poll``, ``listen``, ``respond``, ``deregister``.

A device command whose device the server revoked prints one line and exits with
:data:`EXIT_REVOKED` (its keys are deleted by then; docs/revocation.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from hatchway.cli.common import (
    DatabaseOption,
    DataDirOption,
    JsonOption,
    load_settings,
    operator_context,
)
from hatchway.cli.output import (
    console,
    emit,
    errors_reported,
    fail,
    parse_json_object,
    print_json_safe,
    shown,
)
from hatchway.cli.revoke import revoke

app = typer.Typer(
    help="Provision, enrol and talk to devices (message-level security).", no_args_is_help=True
)

StateOption = Annotated[Path, typer.Option("--state", help="The device state file (JSON, 0600).")]
TransportOption = Annotated[
    str, typer.Option("--transport", help="http (plain HTTP) or mqtt (docs/mqtt.md).")
]
BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="mqtt://[user[:password]@]host[:port]; default: the broker named at enrolment. "
        "Username defaults to the device id, password to HATCHWAY_MQTT_PASSWORD.",
    ),
]


#: Exit code of a device command when the server revoked the device (not 1: a script
#: must tell "retry later" from "this device is gone").
EXIT_REVOKED = 3


@contextmanager
def device_errors(as_json: bool) -> Iterator[None]:
    """``errors_reported``, plus one line and :data:`EXIT_REVOKED` for a revoked device."""
    from hatchway.device import DeviceRevoked

    with errors_reported(as_json):
        try:
            yield
        except DeviceRevoked as exc:
            fail(as_json, str(exc), code=EXIT_REVOKED)


def _load_device(
    state: Path, transport: str, broker: str | None, *, persistent: bool = False
) -> Any:
    """``Device.load`` on the chosen transport. One-shot commands use a throw-away MQTT
    session, so commands queued in the device's persistent session stay for ``listen``."""
    from hatchway.device import Device, MqttTransport

    if transport == "http":
        if broker:
            raise ValueError("--broker goes with --transport mqtt")
        return Device.load(state)
    if transport == "mqtt":
        return Device.load(state, transport=MqttTransport(broker, persistent=persistent))
    raise ValueError("--transport is http or mqtt")


@app.command()
def provision(
    device_id: Annotated[str, typer.Argument(help="The device id, e.g. meter-001.")],
    force: Annotated[
        bool, typer.Option("--force", help="Reset an existing device and issue a new secret.")
    ] = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a device and print its one-time enrolment secret (stored only as a hash)."""
    from hatchway.store import DeviceStatus

    with errors_reported(as_json):
        with operator_context(data_dir, database_url) as ctx:
            before = ctx.store.get_device(device_id) if force else None
            secret = ctx.enrolment.provision(device_id, force=force)
        ca = ctx.identity.ca_cert_path
        # --force on a revoked device starts a new enrolment; the old certificate
        # stays on the CRL.
        cleared = before is not None and before.status is DeviceStatus.REVOKED
        out = {"device_id": device_id, "secret": secret, "ca_certificate": str(ca)}
        emit(
            as_json,
            {**out, "revocation_cleared": cleared},
            lambda: console.print(
                ("revocation cleared (the old certificate stays revoked)\n" if cleared else "")
                + f"provisioned [bold]{shown(device_id)}[/]\n"
                f"one-time enrolment secret: [bold]{shown(secret)}[/]\n"
                f"server CA certificate:     {shown(ca)}\n"
                "Give the device the secret (stdin or HATCHWAY_ENROLMENT_SECRET); it works once.",
                highlight=False,
            ),
        )


@app.command()
def enroll(
    server: Annotated[
        str, typer.Option("--server", help="HTTPS base URL, e.g. https://localhost:8443")
    ],
    device_id: Annotated[str, typer.Option("--device-id")],
    state: StateOption,
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca",
            help="CA certificate that signed the server's TLS certificate. "
            "Default: HATCHWAY_CA_FILE, else the local data dir's ca.pem.",
        ),
    ] = None,
    sign_alg: Annotated[str, typer.Option(help="ES256 (P-256) or EdDSA (Ed25519).")] = "ES256",
    enc_curve: Annotated[str, typer.Option(help="P-256 or X25519.")] = "P-256",
    key_alg: Annotated[str, typer.Option(help="ECDH-ES or ECDH-ES+A256KW.")] = "ECDH-ES",
    device_class: Annotated[
        str | None,
        typer.Option("--class", help="Firmware device class, e.g. acme-meter-v2."),
    ] = None,
    firmware_version: Annotated[
        str, typer.Option("--firmware-version", help="Installed firmware version.")
    ] = "0",
    firmware_sequence: Annotated[
        int, typer.Option("--firmware-sequence", min=0, help="Installed manifest sequence.")
    ] = 0,
    firmware_keys: Annotated[
        list[Path] | None,
        typer.Option(
            "--firmware-key",
            help="Trust this firmware public key (.pub.jwk; repeatable) instead of the "
            "keys the server names at enrolment.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Enrol over TLS: secret -> first token -> key exchange; then TLS is closed.

    Locks --state and saves the new keys there (pending) before sending anything.

    Never overwrites another device's state; resumes a pending enrolment with its keys."""
    from hatchway.device import Device
    from hatchway.device.firmware import FirmwareIdentity
    from hatchway.firmware import TrustStore
    from hatchway.firmware.files import read_public_key
    from hatchway.msgsec import KeyAlg, SignAlg

    with errors_reported(as_json):
        pinned = TrustStore.of(*(read_public_key(p) for p in firmware_keys or []))
        position = FirmwareIdentity(device_class, firmware_version, firmware_sequence, pinned)
        secret = os.environ.get("HATCHWAY_ENROLMENT_SECRET") or _read_secret()
        ca_file = _ca_file(ca)
        device = Device.enroll(
            server=server,
            device_id=device_id,
            secret=secret,
            state_path=state,
            ca_file=ca_file,
            sign_alg=SignAlg(sign_alg),
            enc_curve=enc_curve,
            key_alg=KeyAlg(key_alg),
            firmware=position,
        )
        st = device.state
        fw = st.firmware
        emit(
            as_json,
            {
                "device_id": device_id,
                "state": str(state),
                "suite": st.suite,
                "endpoints": st.endpoints,
                "firmware": {k: fw[k] for k in ("class", "version", "sequence")}
                | {"keys": [e["jwk"]["kid"] for e in fw["trust"]["keys"]]},
            },
            lambda: console.print(
                f"enrolled [bold]{shown(device_id)}[/]; TLS closed. "
                f"State saved to {shown(state)} (0600).\n"
                f"messages now go to {shown(st.endpoints['messages'])} "
                f"sealed with {shown(st.suite)}",
                highlight=False,
            ),
        )


def _read_secret() -> str:
    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass("enrolment secret: ")
    else:
        secret = sys.stdin.readline()
    secret = secret.strip()
    if not secret:
        raise ValueError("no enrolment secret: pipe it on stdin or set HATCHWAY_ENROLMENT_SECRET")
    return secret


def _ca_file(explicit: Path | None) -> Path | None:
    if explicit:
        return explicit
    if env := os.environ.get("HATCHWAY_CA_FILE"):
        return Path(env)
    local = load_settings().data_dir / "ca.pem"
    return local if local.exists() else None


@app.command()
def send(
    state: StateOption,
    data: Annotated[str, typer.Argument(help="Telemetry as a JSON object.")],
    transport: TransportOption = "http",
    broker: BrokerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send sealed telemetry (plain HTTP or MQTT, no TLS) and check the sealed acknowledgement."""
    with device_errors(as_json):
        payload = parse_json_object(data, "telemetry")
        with _load_device(state, transport, broker) as device:
            ack = device.send(payload)
        emit(
            as_json,
            {"acknowledged": True, "jti": ack.in_reply_to, "seq": ack.seq},
            lambda: console.print(
                f"sent; server acknowledged message {shown(ack.in_reply_to)}", highlight=False
            ),
        )


@app.command()
def poll(
    state: StateOption,
    result: Annotated[
        str | None, typer.Option("--result", help="Answer the command with this JSON result.")
    ] = None,
    transport: TransportOption = "http",
    broker: BrokerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Poll for the next queued command (sealed), optionally answering it at once."""
    with device_errors(as_json):
        answer = parse_json_object(result, "result") if result else None
        with _load_device(state, transport, broker) as device:
            command = device.poll()
            if command and answer is not None:
                device.respond(command, answer)
        out = {
            "command": command.body if command else None,
            "answered": bool(command and answer is not None),
        }
        emit(
            as_json,
            out,
            lambda: print_json_safe(out) if command else console.print("no command queued"),
        )


@app.command()
def respond(
    state: StateOption,
    command_id: Annotated[str, typer.Argument(help="The cid of the command being answered.")],
    result: Annotated[str, typer.Argument(help="The result as a JSON object.")],
    as_json: JsonOption = False,
) -> None:
    """Send a sealed command result."""
    from hatchway.device import Device

    with device_errors(as_json):
        body = parse_json_object(result, "result")
        with Device.load(state) as device:
            device.respond(command_id, body)
        emit(
            as_json,
            {"cid": command_id, "acknowledged": True},
            lambda: console.print(f"result for {shown(command_id)} acknowledged"),
        )


@app.command()
def deregister(state: StateOption, as_json: JsonOption = False) -> None:
    """De-register this device (sealed); the server refuses its messages afterwards."""
    from hatchway.device import Device

    with device_errors(as_json):
        with Device.load(state) as device:
            device.deregister()
            device_id = device.device_id
        emit(
            as_json,
            {"device_id": device_id, "deregistered": True},
            lambda: console.print(f"{shown(device_id)} de-registered"),
        )


@app.command()
def command(
    device_id: Annotated[str, typer.Argument()],
    body: Annotated[
        str, typer.Argument(help='The command as a JSON object, e.g. \'{"op": "reboot"}\'.')
    ],
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Operator: queue a command; the device gets it sealed on its next poll, or at once
    over MQTT when the server has a broker (pushed to the device's downlink topic)."""
    with errors_reported(as_json):
        from hatchway.flows.messaging import check_command

        payload = check_command(parse_json_object(body, "command"))
        with operator_context(data_dir, database_url) as ctx:
            if ctx.store.get_device(device_id) is None:
                raise ValueError(f"no device {device_id!r}; provision it first")
            cid = ctx.store.queue_command(device_id, payload, now=ctx.enrolment.clock())
            _wake_pushers(ctx, device_id)
        emit(
            as_json,
            {"device_id": device_id, "cid": cid},
            lambda: console.print(
                f"queued command {shown(cid)} for {shown(device_id)}", highlight=False
            ),
        )


@app.command("list")
def list_devices(
    data_dir: DataDirOption = None, database_url: DatabaseOption = None, as_json: JsonOption = False
) -> None:
    """Operator: list devices and their state."""
    with errors_reported(as_json):
        with operator_context(data_dir, database_url) as ctx:
            rows = [(d, ctx.store.count_messages(d.device_id)) for d in ctx.store.list_devices()]
        data = {
            "devices": [
                {"device_id": d.device_id, "status": d.status.value, "messages": n} for d, n in rows
            ]
        }

        def human() -> None:
            table = Table("device", "status", "messages")
            for d, n in rows:
                table.add_row(shown(d.device_id), shown(d.status.value), str(n))
            console.print(table)

        emit(as_json, data, human)


@app.command()
def messages(
    device_id: Annotated[str, typer.Argument()],
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 20,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Operator: show the latest messages a device sent."""
    with errors_reported(as_json):
        with operator_context(data_dir, database_url) as ctx:
            rows = ctx.store.list_messages(device_id, limit=limit)
        data = {
            "device_id": device_id,
            "messages": [
                {"seq": m.seq, "typ": m.typ, "body": m.body, "received_at": m.received_at}
                for m in rows
            ],
        }
        emit(as_json, data, lambda: print_json_safe(data))


def _wake_pushers(ctx: Any, device_id: str) -> None:
    """Wake the servers' MQTT push loops. Over a PostgreSQL store every replica hears it
    and one pushes at once; with SQLite the bus is in-process, and the server's own
    sweep finds the command within a second. Queueing never fails because of this."""
    import asyncio
    import logging

    from hatchway.mqtt.gateway import wake_pushers

    try:
        wake_pushers(ctx.bus, device_id)
    except Exception as exc:  # the command is queued; the sweep will push it
        logging.getLogger("hatchway.cli").warning("could not wake the MQTT pushers: %s", exc)
    finally:
        asyncio.run(ctx.bus.close())


@app.command()
def listen(
    state: StateOption,
    result: Annotated[
        str | None,
        typer.Option("--result", help="Answer every command with this JSON result."),
    ] = None,
    exec_: Annotated[
        str | None,
        typer.Option(
            "--exec",
            help="Run this program per command (no shell): the command JSON on stdin, its "
            "stdout (a JSON object) is the result; a non-zero exit answers with an error.",
        ),
    ] = None,
    count: Annotated[
        int, typer.Option("--count", min=0, help="Stop after this many commands (0: never).")
    ] = 0,
    catch_up: Annotated[
        bool,
        typer.Option(
            "--catch-up/--no-catch-up",
            help="Poll once at start for commands pushed before this device had a session.",
        ),
    ] = True,
    install_cmd: Annotated[
        str | None,
        typer.Option(
            "--install-cmd",
            help="Also install pushed firmware offers with this program (as `device update`).",
        ),
    ] = None,
    health_cmd: Annotated[
        str | None, typer.Option("--health-cmd", help="Health check for installed firmware.")
    ] = None,
    transport: TransportOption = "mqtt",
    broker: BrokerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Wait for pushed commands (MQTT), print each as it arrives and answer it.

    With --install-cmd, firmware offers are installed as they arrive (see `device update`)
    and each outcome printed ({"firmware": {"release", "state", "reason", "version"}}).

    Uses the device's persistent session, so commands queued while it was offline
    arrive when it connects. Stops cleanly on Ctrl-C or SIGTERM. With --json it prints a
    stream: one object once subscribed ({"listening": ID, "downlink": TOPIC}), then one
    per command ({"cid", "command", "ok", "result"}).
    """
    import signal

    from hatchway.cli.listen import Listener
    from hatchway.cli.update import listen_installer
    from hatchway.device import Device, MqttTransport

    with device_errors(as_json):
        if transport != "mqtt":
            raise ValueError("listen needs --transport mqtt (over HTTP, use `device poll`)")
        if result and exec_:
            raise ValueError("give --result or --exec, not both")
        fixed = parse_json_object(result, "result") if result else None
        stopping: list[int] = []

        def stop(signum: int, _frame: object) -> None:
            stopping.append(signum)

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            mqtt = MqttTransport(broker, persistent=True)
            with Device.load(state, transport=mqtt) as device:
                mqtt.connect()  # fail fast on a wrong broker, credentials or ACL
                hello = {"listening": device.device_id, "downlink": mqtt.downlink}
                emit(
                    as_json,
                    hello,
                    lambda: console.print(
                        f"listening for commands to {device.device_id} on {mqtt.downlink} "
                        "(Ctrl-C stops)",
                        highlight=False,
                    ),
                )
                sys.stdout.flush()
                listener = Listener(
                    device,
                    fixed=fixed,
                    program=exec_,
                    count=count,
                    report=lambda c, ok, answer: _print_command(as_json, c, ok, answer),
                    on_offer=listen_installer(device, install_cmd, health_cmd, as_json),
                )
                listener.run(stopping=lambda: bool(stopping), catch_up=catch_up)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _print_command(as_json: bool, command: Any, ok: bool, answer: Any) -> None:
    line = {"cid": command.cid, "command": command.body, "ok": ok, "result": answer}
    emit(as_json, line, lambda: print_json_safe(line))
    sys.stdout.flush()  # a stream: each command is visible as it arrives


# Defined apart to keep this module small; registered here, among its siblings.
app.command("revoke")(revoke)
