"""The updater wired to a ``Device``: chunks over plain HTTP, reports as sealed messages.

``update_once(device, installer)`` is what ``hatchway device update`` runs: deliver
reports left from an earlier run, finish an update in progress, else take an offer
(one the device already received, a poll's answer, or over MQTT a push within
``wait`` seconds) and carry it through. The chunk URL is the offer's path on the
plain listener that ``endpoints["messages"]`` names: chunks are sealed (AES-GCM
under the wrapped content key) and checked against the signed manifest, so they
need no TLS.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from hatchway.device.firmware.identity import FirmwareIdentity
from hatchway.device.firmware.installer import Installer
from hatchway.device.firmware.offer import BadOffer, FirmwareOffer
from hatchway.device.firmware.slots import SlotDir
from hatchway.device.firmware.updater import FetchError, Updater, UpdateResult
from hatchway.device.transport import MessageRejected, TransportError
from hatchway.errors import InvalidMessage
from hatchway.firmware.chunkfile import SEAL_OVERHEAD
from hatchway.firmware.manifest import CHUNK_SIZE
from hatchway.firmware.wire import DeviceFirmwareState
from hatchway.msgsec.keys import DecryptionKey

if TYPE_CHECKING:
    from hatchway.device.client import Device

__all__ = ["HttpChunkSource", "make_updater", "update_once"]

log = logging.getLogger("hatchway.device.firmware")

#: A sealed chunk is the plaintext chunk plus a 12-byte IV and a 16-byte tag.
MAX_SEALED_CHUNK = CHUNK_SIZE + SEAL_OVERHEAD


class HttpChunkSource:
    """``fetch(chunks, index)`` over plain HTTP to the listener at ``origin``."""

    def __init__(self, origin: str, *, timeout: float = 15.0) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) origin: {origin!r}")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self._client = httpx.Client(timeout=timeout)

    def __call__(self, chunks: str, index: int) -> bytes:
        url = f"{self.origin}{chunks}{index}"
        try:
            with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise FetchError(f"{url} answered HTTP {response.status_code}")
                body = bytearray()
                for piece in response.iter_bytes():
                    body += piece
                    if len(body) > MAX_SEALED_CHUNK:
                        raise FetchError(f"{url} sent more than a chunk")
                return bytes(body)
        except httpx.HTTPError as exc:
            raise FetchError(f"could not fetch {url}: {exc}") from None

    def close(self) -> None:
        self._client.close()


def make_updater(
    device: Device,
    installer: Installer,
    *,
    fetch: Callable[[str, int], bytes] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    max_image_size: int | None = None,
) -> Updater:
    """An ``Updater`` for ``device``: its slot directory, identity, keys and channel."""

    def commit(identity: FirmwareIdentity) -> None:
        device.save_firmware(identity.to_json())

    def report(body: dict[str, Any]) -> bool:
        try:
            device.report_firmware(body)
        except MessageRejected:
            # The server refuses this report for good (e.g. a release it forgot):
            # keeping it would block every later one.
            log.warning("the server refused firmware report %s; dropped", body)
        except TransportError:
            return False
        return True

    source = fetch or HttpChunkSource(device.state.endpoints["messages"])
    return Updater(
        SlotDir.for_state(device.state_path),
        identity=lambda: FirmwareIdentity.from_json(device.state.firmware),
        commit=commit,
        decryption_key=DecryptionKey.from_jwk(device.state.encryption_key),
        installer=installer,
        fetch=source,
        report=report,
        clock=device.clock,
        max_image_size=max_image_size,
        on_progress=on_progress,
    )


def next_offer(device: Device, *, wait: float = 0.0) -> FirmwareOffer | None:
    """An offer: one already received, else a poll's answer, else a push within ``wait``."""
    deadline = time.monotonic() + wait
    body = device.poll_offer()
    while body is None and wait > 0 and time.monotonic() < deadline:
        try:
            device.receive(timeout=max(0.0, deadline - time.monotonic()))
        except TypeError:
            break  # HTTP carries no pushes
        except InvalidMessage:
            continue  # a push that does not open: not an offer we can act on
        except TransportError:
            time.sleep(0.2)
        if device.offers:
            body = device.poll_offer()
    if body is None:
        return None
    try:
        return FirmwareOffer.from_body(body)
    except BadOffer as exc:
        log.warning("unusable firmware offer: %s", exc)
        if exc.release is not None:
            body = {"release": exc.release, "state": DeviceFirmwareState.REFUSED.value}
            with contextlib.suppress(TransportError, MessageRejected):
                device.report_firmware({**body, "reason": "invalid"})
    return None


def update_once(
    device: Device,
    installer: Installer,
    *,
    wait: float = 0.0,
    on_progress: Callable[[int, int], None] | None = None,
    fetch: Callable[[str, int], bytes] | None = None,
) -> UpdateResult:
    """Finish the update in progress, or take the next offer through; see the module doc."""
    source = HttpChunkSource(device.state.endpoints["messages"]) if fetch is None else None
    updater = make_updater(device, installer, fetch=fetch or source, on_progress=on_progress)
    try:
        resumed = updater.resume()
        if resumed is not None:
            return resumed
        offer = next_offer(device, wait=wait)
        if offer is None:
            return UpdateResult(None, None)
        return updater.handle(offer)
    finally:
        if source is not None:
            source.close()
