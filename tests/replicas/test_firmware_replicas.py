"""Issue 9 on two real ``hatchway serve`` replicas behind one PostgreSQL store.

``firmware publish`` runs through replica A's data dir and writes the sealed chunks
into the shared store only; neither replica has a chunk file until a device asks.

* A device enrolled through A whose messages and chunk GETs all go to B (its proxy
  points at B's plain listener) is offered the release, fetches every chunk from B
  and confirms the update; B filled its file cache from the store, A still has none.
* Many concurrent first requests to the cold replica A fill its cache once and get
  the very bytes B serves (same IVs, same ETag); an unknown release or an index out
  of range is the one uniform 404 on both.
* A damaged cache file (wrong size, left by a crash or a disk problem) is refilled
  from the store; the chunks served still open under the release's content key.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from hatchway.firmware import ChunkCipher
from hatchway.firmware.chunkfile import chunk_file_size, chunk_path
from hatchway.server.edge import UNIFORM_ERROR
from hatchway.server.process import ServerProcess
from hatchway.store import Store
from tests.firmware_e2e.conftest import Fleet, cli
from tests.replicas.conftest import Replicas

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

CHUNK = 65536


@pytest.fixture
def fleet(tmp_path: Path, replicas: Replicas) -> Iterator[Fleet]:
    """The operator's CLI on A's data dir and the shared store; devices added per test."""
    fleet = Fleet(tmp_path, replicas.a, database_url=replicas.database_url)
    try:
        yield fleet
    finally:
        fleet.close()


def fetch_all(server: ServerProcess, release: str, count: int) -> list[httpx.Response]:
    with httpx.Client(base_url=server.http_url, timeout=20, trust_env=False) as client:
        return [client.get(f"/fw/{release}/{i}") for i in range(count)]


def bodies(responses: list[httpx.Response]) -> list[bytes]:
    assert [r.status_code for r in responses] == [200] * len(responses)
    return [r.content for r in responses]


def no_temporaries(*servers: ServerProcess) -> bool:
    return not any(
        (s.data_dir / "firmware").exists() and list((s.data_dir / "firmware").glob(".*"))
        for s in servers
    )


def test_published_through_a_fetched_and_confirmed_through_b(
    fleet: Fleet, replicas: Replicas
) -> None:
    a, b = replicas.a, replicas.b
    (device,) = fleet.add_devices("meter-r1", via=b)
    release, image = fleet.publish("2.1.0", 21, 5 * CHUNK + 123)  # 6 chunks
    assert not chunk_path(a.data_dir, release).exists()  # publish wrote the store only
    assert not chunk_path(b.data_dir, release).exists()
    cli("firmware", "rollout", "2.1.0", "--group", "pilot", *fleet.data)

    out = device.update()
    assert (out["state"], out["release"], out["version"]) == ("confirmed", release, "2.1.0")
    assert sorted(set(device.proxy.chunks)) == list(range(6))
    assert (device.dir / "flashed.bin").read_bytes() == image
    assert device.phases() == ["install", "boot", "health", "confirm"]
    status = fleet.status("2.1.0")
    assert [d["state"] for d in status["devices"]] == ["confirmed"]
    assert status["rollout"]["state"] == "completed"
    # B served every chunk from the cache it filled; A was never asked.
    assert chunk_path(b.data_dir, release).stat().st_size == chunk_file_size(len(image))
    assert not chunk_path(a.data_dir, release).exists()

    # A is cold: twelve clients at once, each fetching every chunk.
    with ThreadPoolExecutor(12) as pool:
        from_a = list(pool.map(lambda _: fetch_all(a, release, 6), range(12)))
    from_b = fetch_all(b, release, 6)
    expected = bodies(from_b)
    for responses in from_a:
        assert bodies(responses) == expected  # byte-identical: the store holds the IVs
        assert [r.headers["etag"] for r in responses] == [r.headers["etag"] for r in from_b]
        assert all("immutable" in r.headers["cache-control"] for r in responses)
    assert chunk_path(a.data_dir, release).stat().st_size == chunk_file_size(len(image))
    assert no_temporaries(a, b)

    # 304 on either replica for the other's ETag; the uniform 404 on both.
    etag = from_b[2].headers["etag"]
    with httpx.Client(timeout=20, trust_env=False) as client:
        for server in (a, b):
            again = client.get(f"{server.http_url}/fw/{release}/2", headers={"if-none-match": etag})
            assert (again.status_code, again.content) == (304, b"")
            for path in (f"/fw/{release}/6", f"/fw/{release}/05", "/fw/9.9.9-00000000/0"):
                missing = client.get(server.http_url + path)
                assert (missing.status_code, missing.content) == (404, UNIFORM_ERROR)


def test_a_damaged_cache_file_is_refilled_from_the_store(fleet: Fleet, replicas: Replicas) -> None:
    b = replicas.b
    release, image = fleet.publish("3.0.0", 30, 2 * CHUNK + 7)  # 3 chunks
    damaged = chunk_path(b.data_dir, release)
    damaged.parent.mkdir(mode=0o700, exist_ok=True)
    damaged.write_bytes(b"\0" * 1000)  # not the release's size

    served = bodies(fetch_all(b, release, 3))
    with Store.open(replicas.database_url) as store:
        record = store.get_release(release)
        assert record is not None
        assert served == list(store.sealed_chunks(release))
    cipher = ChunkCipher(record.content_key, record.sha256)
    assert b"".join(cipher.open(i, s) for i, s in enumerate(served)) == image
    assert damaged.stat().st_size == chunk_file_size(len(image))
    assert no_temporaries(b)
