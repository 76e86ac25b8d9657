"""Secure-element channel through the real bridge: round trips, APDUs, wall time.

Run: ``.venv/bin/python bench/bench_se_bridge.py [--runs N]``. It starts a real
``hatchway serve`` and a real ``hatchway se bridge --card`` on free loopback ports in
a temporary directory, plays the web page with a Python WebSocket client (the genuine
``Origin`` header), and compares against the same server-side flow driven in process
against ``SoftCard`` in the same run. Everything stops by itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hatchway.flows.sechannel import (
    Done,
    SecureChannelService,
    Stage,
    Step,
    ensure_application_identity,
)
from hatchway.login.ratelimit import TokenBucket
from hatchway.runtime import system_clock, system_random
from hatchway.se import SoftCard, personalize
from hatchway.se.bridge import set_origin_apdu, transmit_whole
from hatchway.se.relay import BridgeProcess, PageClient
from hatchway.server.datadir import ensure_data_dir
from hatchway.server.process import ServerProcess


def in_process(root: Path, runs: int) -> tuple[list[float], list[float], int, int]:
    ident = ensure_data_dir(root / "inproc")
    app = ensure_application_identity(
        root / "inproc",
        ident.ca,
        origin="https://localhost:8443",
        tls_cert_path=ident.tls_cert_path,
        now=system_clock(),
    )
    # The in-process comparison measures the protocol, not the per-client start ration.
    service = SecureChannelService(
        app,
        clock=system_clock,
        random=system_random,
        start_rate=TokenBucket(capacity=10**6, refill_per_second=1),
    )
    state = personalize(
        ident.ca.certificate, ident.ca.private_key, now=system_clock(), random=system_random
    )
    card = SoftCard(state, clock=system_clock, random=system_random)
    totals, handshakes, relays, apdus = [], [], 0, 0
    for _ in range(runs + 1):
        card.reset()
        card.transmit(set_origin_apdu("https://localhost:8443"))
        start = time.perf_counter()
        step: Step | Done = service.start()
        relays = apdus = 0
        opened = 0.0
        while isinstance(step, Step):
            apdus += len(step.apdus)
            answers = [transmit_whole(card, a) for a in step.apdus]
            stage = step.stage
            step = service.advance(step.session, stage, answers)
            relays += 1
            if stage is Stage.HANDSHAKE and not opened:
                opened = time.perf_counter() - start
        totals.append(time.perf_counter() - start)
        handshakes.append(opened)
    return totals[1:], handshakes[1:], relays, apdus


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory(prefix="hatchway-bench-se-") as tmp:
        root = Path(tmp)
        server = ServerProcess(root / "server")
        server.start()
        try:
            card = root / "card.json"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "hatchway",
                    "se",
                    "personalize",
                    "--card",
                    str(card),
                    "--data-dir",
                    str(server.data_dir),
                    "--json",
                ],
                check=True,
                capture_output=True,
            )
            tls = ssl.create_default_context(cafile=str(server.ca_file))
            results = []
            with BridgeProcess(card, [server.https_url]) as bridge:
                while len(results) < runs + 1:
                    with PageClient(
                        server.https_url, bridge.url, origin=server.https_url, verify=tls
                    ) as page:
                        result = page.run()
                    if result.outcome.get("error") == "slow_down":
                        # The server rations session starts per client address (a burst
                        # of 20, then 1/s); wait outside the measured interval.
                        time.sleep(1.0)
                        continue
                    if not result.ok:
                        raise SystemExit(f"flow failed: {result.outcome}")
                    results.append(result)
        finally:
            server.stop()
        results = results[1:]  # the first run pays for imports and TLS session setup
        local_total, local_hs, local_relays, local_apdus = in_process(root, runs)

    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    hs = ms([r.handshake_seconds for r in results])
    total = ms([r.seconds for r in results])
    first = results[0]
    print(f"runs: {runs} (median), {dt.datetime.now(dt.UTC):%Y-%m-%d}")
    print(
        f"server↔page round trips: {first.round_trips} "
        f"(bridge relays: {first.round_trips - 1}; in-process relays: {local_relays})"
    )
    print(
        f"APDUs relayed: {first.apdus} (in-process: {local_apdus}); "
        f"bytes through the page: {first.relayed_bytes}"
    )
    print(
        f"handshake through bridge (start → channel open): {hs:8.2f} ms   "
        f"in-process: {ms(local_hs):7.2f} ms   ratio ×{hs / ms(local_hs):.1f}"
    )
    print(
        f"full flow (handshake + provision + read back): {total:8.2f} ms   "
        f"in-process: {ms(local_total):7.2f} ms   ratio ×{total / ms(local_total):.1f}"
    )


if __name__ == "__main__":
    main()
