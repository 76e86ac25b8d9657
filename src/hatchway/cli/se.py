"""``hatchway se …``: personalise an emulated SE, serve it to PC/SC, run the bridge.

* ``personalize`` — GP Card Spec v2.3.1 §9 / Amendment F §5.1: load hatchway's CA as
  the card's trust anchor, generate SK.SD.ECKA and have the CA certify it;
* ``emulate`` — the card in a vpcd reader, as vsmartcard's vicc would (``se/vpcd.py``);
* ``bridge`` — the loopback WebSocket of US 10,812,467 B2 (``se/bridge.py``), in front
  of the emulated card (``--card``) or a real one through PC/SC (``--pcsc``).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hatchway.cli.common import DataDirOption, JsonOption, load_settings
from hatchway.cli.output import console, emit, err_console, errors_reported, fail, shown
from hatchway.runtime import system_clock, system_random

if TYPE_CHECKING:
    from hatchway.se.bridge import Bridge

app = typer.Typer(
    help="Secure-element channel: emulator, PC/SC and the browser bridge.", no_args_is_help=True
)

CardOption = Annotated[Path, typer.Option("--card", help="Card state file (JSON, mode 0600).")]


@app.command()
def personalize(
    card: CardOption,
    data_dir: DataDirOption = None,
    force: Annotated[bool, typer.Option(help="Replace an existing card file.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create an emulated card that trusts this server's CA."""
    from hatchway.se import CardStateFile
    from hatchway.se import personalize as make_card
    from hatchway.server.datadir import ensure_data_dir

    with errors_reported(as_json):
        storage = CardStateFile(card)
        if storage.exists() and not force:
            fail(as_json, f"{card} already exists; pass --force to replace it", code=2)
        settings = load_settings(data_dir)
        ca = ensure_data_dir(settings.data_dir).ca
        state = make_card(ca.certificate, ca.private_key, now=system_clock(), random=system_random)
        storage.save(state)
        subject = state.sd_certificate.subject.rfc4514_string()
        emit(
            as_json,
            {
                "card": str(card),
                "serial": state.serial,
                "sd_certificate": subject,
                "trust_anchor": ca.certificate.subject.rfc4514_string(),
            },
            lambda: console.print(
                f"personalised card {shown(state.serial)} in {shown(card)}; "
                f"trusts {shown(ca.certificate.subject.rfc4514_string())}"
            ),
        )


@app.command()
def emulate(
    card: CardOption,
    vpcd: Annotated[str, typer.Option(help="vpcd driver address HOST:PORT.")] = "127.0.0.1:35963",
    as_json: JsonOption = False,
) -> None:
    """Serve the emulated card to pcscd through vsmartcard's vpcd driver until SIGTERM."""
    from hatchway.se import SoftCard
    from hatchway.se.vpcd import VpcdCard, parse_address

    with errors_reported(as_json):
        soft = SoftCard.from_file(card, clock=system_clock, random=system_random)
        address = parse_address(vpcd)
        server = VpcdCard(
            soft,
            address,
            on_event=lambda e: err_console.print(
                f"vpcd {shown(e)} ({shown(address[0])}:{address[1]})"
            ),
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: server.stop())
        err_console.print(f"emulating card {shown(soft.state.serial)} for vpcd at {shown(vpcd)}")
        server.serve_forever()
        emit(
            as_json,
            {"card": soft.state.serial, "apdus": server.apdus, "stopped": True},
            lambda: console.print(f"stopped after {server.apdus} APDUs"),
        )


@app.command()
def bridge(
    allow_origin: Annotated[
        list[str],
        typer.Option("--allow-origin", help="Web origin allowed to use the card (repeatable)."),
    ],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Loopback port (0: any).")] = 8765,
    card: Annotated[
        Path | None, typer.Option("--card", help="Emulated card state file.", show_default=False)
    ] = None,
    pcsc: Annotated[
        str | None,
        # A value is required: typer no longer supports an option whose value is
        # optional (is_flag/flag_value), so "auto" stands for "the first reader".
        typer.Option(
            "--pcsc",
            metavar="READER",
            help="Use a PC/SC reader: auto (the first with a card), an index, or a name.",
            show_default=False,
        ),
    ] = None,
    allow_aid: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-aid",
            help="Also relay SELECT of this AID (hex, repeatable).",
            show_default=False,
        ),
    ] = None,
    allow_ins: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-ins",
            help="Also relay this command: INS or INS/P1P2 in hex, e.g. CA/9F7F (repeatable).",
            show_default=False,
        ),
    ] = None,
    idle_timeout: Annotated[
        float, typer.Option(min=0.1, max=3600, help="Close a session silent this many seconds.")
    ] = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Relay APDUs between web pages on allowed origins and one secure element.

    Only the APDUs hatchway's flow needs reach the card (docs/secure-element.md,
    "Bridge protocol"); --allow-aid and --allow-ins add more.
    """
    from hatchway.se.bridge import Bridge, CardTransport, plaintext_origins
    from hatchway.se.guard import ApduPolicy, parse_aid, parse_ins_rule

    with errors_reported(as_json):
        if (card is None) == (pcsc is None):
            fail(as_json, "give exactly one of --card FILE or --pcsc READER", code=2)
        try:
            policy = ApduPolicy.with_operator_rules(
                [parse_aid(a) for a in allow_aid or ()],
                [parse_ins_rule(i) for i in allow_ins or ()],
            )
        except ValueError as exc:
            fail(as_json, f"--allow-aid/--allow-ins: {exc}", code=2)
        transport: CardTransport
        if card is not None:
            from hatchway.se import SoftCard

            transport = SoftCard.from_file(card, clock=system_clock, random=system_random)
        else:
            from hatchway.se.pcsc import PcscTransport

            transport = PcscTransport(None if pcsc in ("", "auto") else pcsc)
        relay = Bridge(transport, allow_origin, port=port, idle_timeout=idle_timeout, policy=policy)
        for origin in plaintext_origins(relay.allowed):
            err_console.print(
                f"warning: {shown(origin)} is plain http and not loopback: anyone on the network "
                "path can change that page and use the card as that origin"
            )

        def ready(bound: int) -> None:
            url = f"ws://127.0.0.1:{bound}/"
            emit(
                as_json,
                {
                    "bridge": url,
                    "port": bound,
                    "origins": sorted(relay.allowed),
                    "aids": sorted(a.hex().upper() for a in relay.policy.aids),
                    "extra_commands": sorted(i.upper() for i in allow_ins or ()),
                },
                lambda: console.print(
                    f"bridge on {url} for {shown(', '.join(sorted(relay.allowed)))}"
                ),
            )
            sys.stdout.flush()

        asyncio.run(_run_bridge(relay, ready))


async def _run_bridge(relay: Bridge, ready: Callable[[int], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await relay.run(stop, ready)
