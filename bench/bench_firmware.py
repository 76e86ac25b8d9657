"""Firmware foundation (issue 9): device-side cost of a 4 MiB image, against a plain floor.

Usage: ``.venv/bin/python bench/bench_firmware.py [--quick]``

Same run, same machine, median of repeats:

(a) floor: what a device does with a plain file: copy 4 MiB into its slot and
    SHA-256 it once;
(b) hatchway: for each of the 64 chunks, AES-256-GCM open (index as AAD),
    SHA-256 against the manifest's list, write into the slot; then ``finish``
    re-reads the slot, re-hashes every chunk and the whole image;
(c) per-device server cost: one ``wrap_content_key`` (ECDH-ES+A256KW to P-256);
(d) ``check_manifest`` of the 64-chunk manifest (Ed25519 verify + strict parse).

Prints (b)/(a). This is the device-side CPU share of the issue's "within 1.5x of a
plain file" goal; the server and network side needs the delivery that is not built yet.
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
    args = parser.parse_args()
    number, repeat = (1, 3) if args.quick else (3, 7)

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
