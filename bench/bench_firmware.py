"""Firmware (issue 9): a 4 MiB image, device-side cost and server-side cost, against plain floors.

Usage: ``.venv/bin/python bench/bench_firmware.py [--quick] [--part device|server|all]
[--devices 1000] [--sample 50]``

Device side, in process, median of repeats:

(a) floor: what a device does with a plain file: copy 4 MiB into its slot and
    SHA-256 it once;
(b) hatchway: for each of the 64 chunks, AES-256-GCM open (index as AAD),
    SHA-256 against the manifest's list, write into the slot; then ``finish``
    re-reads the slot, re-hashes every chunk and the whole image;
(c) per-device server cost: one ``wrap_content_key`` (ECDH-ES+A256KW to P-256);
(d) ``check_manifest`` of the 64-chunk manifest (Ed25519 verify + strict parse).

Server side, real processes (``fw_server.py`` says exactly what is measured): server
CPU and bytes per device for the firmware path (the sealed offer for every one of
``--devices`` devices, the 64 chunk GETs for ``--sample`` of them) against the same
4 MiB served as a plain file over HTTPS on a new TLS connection per device, as a
ratio in the same run; then two 10-device waves on loopback: the wire contract
alone, and the real device SDK updater (A/B slot files, trivial installer, health
check that passes).
"""

from __future__ import annotations

import argparse
import hashlib
import os

from _util import median_us
from hatchway.firmware import (
    ChunkAssembler,
    ChunkCipher,
    DevicePosition,
    Manifest,
    MemoryImage,
    TrustStore,
    check_manifest,
    digest_image,
    generate_firmware_key,
    sign_manifest,
    split_chunks,
    wrap_content_key,
)
from hatchway.msgsec.keys import generate_decryption_key
from hatchway.runtime import system_random

SIZE = 4 * 1024 * 1024
NOW = 1_800_000_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", choices=("device", "server", "all"), default="all")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=50)
    args = parser.parse_args()
    if args.part in ("device", "all"):
        device_side(args.quick)
    if args.part in ("server", "all"):
        server_side(args.devices, args.sample)


def server_side(devices: int, sample: int) -> None:
    import tempfile
    from pathlib import Path

    import fw_server

    root = Path(tempfile.mkdtemp(prefix="hatchway-fw-bench-"))
    r = fw_server.run(root, os.urandom(SIZE), devices, sample)
    offer_only = r["offer_cpu_ms"] - r["empty_poll_cpu_ms"]
    ours_cpu = offer_only + r["chunks_cpu_ms"]
    ours_bytes = r["offer_bytes"] + r["chunks_bytes"]
    print(f"server side: {devices} devices offered, chunks fetched by {sample}, 4 MiB image")
    print(f"  poll answered no-command (baseline)     {r['empty_poll_cpu_ms']:7.2f} ms CPU")
    print(
        f"  poll answered with the sealed offer     {r['offer_cpu_ms']:7.2f} ms CPU "
        f"{r['offer_bytes']:9.0f} B  ({devices} offers in {r['offer_wall_s']:.1f} s)"
    )
    print(f"  offer alone (seal + key wrap + store)   {offer_only:7.2f} ms CPU")
    print(
        f"  64 chunk GETs, one keep-alive conn      {r['chunks_cpu_ms']:7.2f} ms CPU "
        f"{r['chunks_bytes']:9.0f} B"
    )
    print(f"  firmware path per device                {ours_cpu:7.2f} ms CPU {ours_bytes:9.0f} B")
    print(
        f"  plain file over new TLS per device      {r['plain_cpu_ms']:7.2f} ms CPU "
        f"{r['plain_bytes']:9.0f} B  (uvicorn defaults)"
    )
    print(
        f"  same, uvicorn with hatchway's stack     {r['plain_h11_cpu_ms']:7.2f} ms CPU "
        "(asyncio loop, h11)"
    )
    print(f"  ratio CPU firmware / plain              {ours_cpu / r['plain_cpu_ms']:7.2f}x")
    print(f"  ratio CPU firmware / plain, same stack  {ours_cpu / r['plain_h11_cpu_ms']:7.2f}x")
    print(
        f"  ratio CPU incl. the carrying poll       "
        f"{(ours_cpu + r['empty_poll_cpu_ms']) / r['plain_cpu_ms']:7.2f}x"
    )
    print(f"  ratio bytes firmware / plain            {ours_bytes / r['plain_bytes']:7.2f}x")
    print(f"10-device wave on loopback (rollout .. all confirmed), load average {load()}")
    print(f"  wire contract only (in memory, no slot)  {r['wave10_s']:7.2f} s")
    print(f"  device SDK updater, trivial installer   {r['wave10_sdk_s']:7.2f} s")


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def device_side(quick: bool) -> None:
    number, repeat = (1, 3) if quick else (3, 7)

    image = os.urandom(SIZE)
    chunks = split_chunks(image)
    size, sha, digests = digest_image(chunks)
    key = generate_firmware_key()
    manifest = Manifest(21, "acme-meter-v2", "2.1.0", size, sha, digests, NOW, NOW + 86400)
    token = sign_manifest(manifest, key)
    trust = TrustStore.of(key.public())
    position = DevicePosition("acme-meter-v2", 20, "2.0.0")
    cek = system_random(32)
    cipher = ChunkCipher(cek, sha)
    sealed = [cipher.seal(i, c, system_random) for i, c in enumerate(chunks)]
    device = generate_decryption_key("P-256")

    def floor() -> None:
        slot = bytearray(SIZE)
        slot[:] = image
        hashlib.sha256(slot).digest()

    def hatchway() -> None:
        assembler = ChunkAssembler(manifest, MemoryImage(size))
        for i, blob in enumerate(sealed):
            assembler.receive(i, cipher.open(i, blob))
        assembler.finish()

    t_floor = median_us(floor, number=number, repeat=repeat)
    t_ours = median_us(hatchway, number=number, repeat=repeat)
    t_wrap = median_us(
        lambda: wrap_content_key(cek, sha, device.public(), system_random),
        number=20 * number,
        repeat=repeat,
    )
    t_check = median_us(
        lambda: check_manifest(token, trust=trust, position=position, now=NOW),
        number=20 * number,
        repeat=repeat,
    )
    print(f"4 MiB image, {len(chunks)} chunks of 64 KiB, manifest {len(token)} bytes")
    print(f"(a) floor: copy + SHA-256           {t_floor / 1000:8.2f} ms")
    print(f"(b) hatchway: open+hash+write+finish {t_ours / 1000:8.2f} ms")
    print(f"    ratio (b)/(a)                    {t_ours / t_floor:8.2f}")
    print(f"(c) wrap_content_key per device      {t_wrap:8.1f} µs")
    print(f"(d) check_manifest                   {t_check:8.1f} µs")


if __name__ == "__main__":
    main()
