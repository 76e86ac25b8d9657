"""``hatchway firmware …``: offline firmware keys, signed manifests, the server's trust file.

``keygen``, ``sign`` and ``verify`` work offline on files; ``trust`` and ``keys
list|retire|revoke`` edit the firmware trust store in the server's store;
``publish``, ``rollout``, ``pause``, ``resume``, ``cancel`` and ``status`` are in
``fw_publish`` and ``fw_rollout`` (docs/firmware.md).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from hatchway.cli import fw_publish, fw_rollout
from hatchway.cli.common import DatabaseOption, DataDirOption, JsonOption
from hatchway.cli.fw_store import open_firmware_store
from hatchway.cli.output import console, emit, errors_reported, shown
from hatchway.firmware import (
    CHUNK_SIZE,
    DevicePosition,
    Manifest,
    ManifestRefused,
    RefusalReason,
    Rotation,
    TrustStore,
    check_policy,
    digest_image,
    generate_firmware_key,
    rotation_proof,
    sign_manifest,
    verify_manifest,
)
from hatchway.firmware import files as fwfiles
from hatchway.pki.files import write_public
from hatchway.runtime import system_clock

app = typer.Typer(
    help="Firmware keys, signed manifests and the firmware trust store.", no_args_is_help=True
)
keys_app = typer.Typer(help="List, retire or revoke trusted firmware keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``2w`` or ``45s`` as seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"duration {text!r} must look like 30d, 12h, 90m, 2w or 45s")
    return int(match.group(1)) * _UNIT[match.group(2)]


def _image_pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while piece := fh.read(CHUNK_SIZE):
            yield piece


def _manifest_json(manifest: Manifest) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kid": manifest.kid,
        "sequence": manifest.sequence,
        "class": manifest.device_class,
        "version": manifest.version,
        "size": manifest.size,
        "sha256": manifest.sha256.hex(),
        "chunk_size": manifest.chunk_size,
        "chunks": manifest.chunk_count,
        "issued_at": manifest.issued_at,
        "expires_at": manifest.expires_at,
        "min_version": manifest.min_version,
    }
    if manifest.rotation is not None:
        out["rotate_to"] = manifest.rotation.new_key.kid
        out["old_key_until"] = manifest.rotation.old_until
    return out


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Private JWK file to create (mode 0600).")],
    as_json: JsonOption = False,
) -> None:
    """Create an offline Ed25519 firmware key: OUT (private) and OUT's .pub.jwk (public)."""
    with errors_reported(as_json):
        key = generate_firmware_key()
        public = fwfiles.write_keypair(out, key)
        data = {"kid": key.kid, "alg": key.alg.value, "private": str(out), "public": str(public)}
        emit(
            as_json,
            data,
            lambda: console.print(
                f"firmware key {shown(key.kid)}\n  private: {shown(out)} (keep it offline)\n"
                f"  public:  {shown(public)} (give it to `hatchway firmware trust`)"
            ),
        )


@app.command()
def sign(
    key: Annotated[Path, typer.Option("--key", help="Private firmware JWK.")],
    image: Annotated[Path, typer.Option("--image", help="The firmware image file.")],
    version: Annotated[str, typer.Option("--version", help="Image version, e.g. 2.1.0.")],
    sequence: Annotated[int, typer.Option("--sequence", help="Above every earlier manifest's.")],
    device_class: Annotated[str, typer.Option("--class", help="Device class, e.g. acme-meter-v2.")],
    out: Annotated[Path, typer.Option("--out", help="Manifest file to write.")],
    expires_in: Annotated[str, typer.Option("--expires-in", help="Validity, e.g. 30d.")] = "30d",
    min_version: Annotated[
        str | None, typer.Option("--min-version", help="Lowest installed version allowed.")
    ] = None,
    rotate_to: Annotated[
        Path | None,
        typer.Option("--rotate-to", help="Private JWK of the successor firmware key."),
    ] = None,
    overlap: Annotated[
        str, typer.Option("--overlap", help="With --rotate-to: how long the old key stays valid.")
    ] = "30d",
    as_json: JsonOption = False,
) -> None:
    """Sign a manifest for IMAGE with the offline firmware key (never the server's key)."""
    with errors_reported(as_json):
        signing_key = fwfiles.read_private_key(key)
        now = int(system_clock())
        size, sha256, chunks = digest_image(_image_pieces(image))
        rotation = None
        if rotate_to is not None:
            successor = fwfiles.read_private_key(rotate_to)
            proof = rotation_proof(successor, signing_key.kid, sequence)
            rotation = Rotation(successor.public(), now + parse_duration(overlap), proof)
        manifest = Manifest(
            sequence=sequence,
            device_class=device_class,
            version=version,
            size=size,
            sha256=sha256,
            chunks=chunks,
            issued_at=now,
            expires_at=now + parse_duration(expires_in),
            min_version=min_version,
            rotation=rotation,
            kid=signing_key.kid,
        )
        write_public(out, sign_manifest(manifest, signing_key) + b"\n")
        data = {"manifest": str(out), **_manifest_json(manifest)}
        emit(
            as_json,
            data,
            lambda: console.print(
                f"signed {shown(out)}: {shown(device_class)} {shown(version)} sequence {sequence}, "
                f"{size} bytes in {len(chunks)} chunks, key {shown(signing_key.kid)}"
            ),
        )


@app.command()
def verify(
    manifest: Annotated[Path, typer.Argument(help="The manifest file.")],
    trust: Annotated[
        list[Path], typer.Option("--trust", help="Public firmware JWK; repeat for several.")
    ],
    image: Annotated[Path | None, typer.Option("--image", help="Also check this image.")] = None,
    device_class: Annotated[
        str | None, typer.Option("--class", help="Refuse unless it is for this class.")
    ] = None,
    current_sequence: Annotated[
        int, typer.Option("--current-sequence", help="Refuse a sequence at or below this.")
    ] = 0,
    current_version: Annotated[
        str | None, typer.Option("--current-version", help="Check min_version against this.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Verify MANIFEST as a device would; exit 1 with the refusal reason if it would refuse."""
    with errors_reported(as_json):
        store = TrustStore.of(*(fwfiles.read_public_key(p) for p in trust))
        token = manifest.read_bytes()
        now = system_clock()
        try:
            verified = verify_manifest(token, store, now)
            position = DevicePosition(
                device_class=device_class or verified.device_class,
                sequence=current_sequence,
                version=current_version or verified.min_version or "0",
            )
            check_policy(verified, position, now)
            if image is not None:
                _check_image(verified, image)
        except ManifestRefused as exc:
            _refused(as_json, exc)
        data = {"valid": True, **_manifest_json(verified), "image_checked": image is not None}
        emit(
            as_json,
            data,
            lambda: console.print(
                f"valid: {shown(verified.device_class)} {shown(verified.version)} sequence "
                f"{verified.sequence}, signed by {shown(verified.kid)}"
                + (", image matches" if image is not None else "")
            ),
        )


def _check_image(manifest: Manifest, image: Path) -> None:
    size, sha256, chunks = digest_image(_image_pieces(image))
    if size != manifest.size or chunks != manifest.chunks or sha256 != manifest.sha256:
        bad = next(
            (i for i, (a, b) in enumerate(zip(chunks, manifest.chunks, strict=False)) if a != b),
            min(len(chunks), manifest.chunk_count),
        )
        raise ManifestRefused(RefusalReason.DIGEST_MISMATCH, f"first differing chunk {bad}")


def _refused(as_json: bool, exc: ManifestRefused) -> None:
    detail = "" if exc.reason is RefusalReason.INVALID else exc.detail
    if as_json:
        out = {"error": str(exc), "reason": exc.reason.value, "detail": detail}
        sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
    else:
        console.print(
            f"[bold red]refused:[/] {exc.reason.value}" + (f" ({shown(detail)})" if detail else ""),
            highlight=False,
        )
    raise typer.Exit(1)


@app.command("trust")
def trust_key(
    public_key: Annotated[Path, typer.Argument(help="Public firmware JWK (.pub.jwk).")],
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Trust a firmware public key on this server (in its store; enrolling devices learn it)."""
    with errors_reported(as_json):
        key = fwfiles.read_public_key(public_key)
        with closing(open_firmware_store(data_dir, database_url)) as store:
            now = system_clock()
            store.change_firmware_trust(lambda t: t.add(key, int(now)), now=now)
        data = {"kid": key.kid, "status": "active"}
        emit(as_json, data, lambda: console.print(f"trusted firmware key {shown(key.kid)}"))


@keys_app.command("list")
def keys_list(
    data_dir: DataDirOption = None, database_url: DatabaseOption = None, as_json: JsonOption = False
) -> None:
    """Firmware keys this server trusts, with their status."""
    with errors_reported(as_json):
        with closing(open_firmware_store(data_dir, database_url)) as store:
            trust = store.firmware_trust()
        rows = [
            {"kid": e.kid, **{k: v for k, v in e.to_json().items() if k != "jwk"}} for e in trust
        ]

        def human() -> None:
            # One line per key, kid first and whole: it is what `keys revoke` takes,
            # and a table would cut or fold it at 80 columns.
            if not rows:
                console.print("no firmware keys trusted yet (`hatchway firmware trust`)")
            for row in rows:
                line = f"{shown(row['kid'])}  {shown(row['status'])}  added {_when(row['added'])}"
                if row.get("not_after") is not None:
                    line += f"  accepted until {_when(row['not_after'])}"
                if row.get("reason"):
                    line += f"  reason: {shown(row['reason'])}"
                console.print(line, highlight=False)

        emit(as_json, {"keys": rows}, human)


@keys_app.command("retire")
def keys_retire(
    kid: Annotated[str, typer.Argument(help="Key id (RFC 7638 thumbprint).")],
    overlap: Annotated[str, typer.Option("--overlap", help="Accepted for this long.")] = "30d",
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop publishing under KID; devices accept it until the overlap ends."""
    with errors_reported(as_json):
        until = int(system_clock()) + parse_duration(overlap)
        with closing(open_firmware_store(data_dir, database_url)) as store:
            store.change_firmware_trust(
                lambda t: _known(t, kid).retire(kid, until), now=system_clock()
            )
        emit(
            as_json,
            {"kid": kid, "status": "retired", "not_after": until},
            lambda: console.print(f"retired {shown(kid)} (accepted until {_when(until)})"),
        )


@keys_app.command("revoke")
def keys_revoke(
    kid: Annotated[str, typer.Argument(help="Key id (RFC 7638 thumbprint).")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the record.")] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke KID for good: never trusted again, and nothing is published under it."""
    with errors_reported(as_json):
        now = system_clock()
        with closing(open_firmware_store(data_dir, database_url)) as store:
            store.change_firmware_trust(
                lambda t: _known(t, kid).revoke(kid, int(now), reason), now=now
            )
        emit(
            as_json,
            {"kid": kid, "status": "revoked", "reason": reason},
            lambda: console.print(f"revoked {shown(kid)}"),
        )


def _when(value: object) -> str:
    if not isinstance(value, int):
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _known(store: TrustStore, kid: str) -> TrustStore:
    if kid not in store:
        raise ValueError(f"no firmware key {kid!r} is trusted on this server")
    return store


# Publishing and rollouts run against the server's store (cli/fw_publish.py, cli/fw_rollout.py).
app.command("publish")(fw_publish.publish)
app.command("rollout")(fw_rollout.rollout)
app.command("pause")(fw_rollout.pause)
app.command("resume")(fw_rollout.resume)
app.command("cancel")(fw_rollout.cancel)
app.command("status")(fw_rollout.status)
