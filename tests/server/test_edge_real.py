"""Issue 7 part 2 items 4, 5 and 6 against a real ``hatchway serve`` over raw sockets.

* item 4: a client that closes mid-body is one info line and a 499 in the access log,
  never an ERROR with a traceback (old code: ERROR + ``"status": 500``);
* item 5: header and body read deadlines, a TLS-handshake deadline and a connection
  cap (old code: slow connections stayed open indefinitely);
* item 6: malformed HTTP, 404 and 405 get the listener's JSON error (old code:
  uvicorn's text body, FastAPI's ``{"detail": ...}``).

The server runs with 1 s / 2 s deadlines so every test here stops by itself within
a few seconds; everything is loopback.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hatchway.server.plain_app import UNIFORM_ERROR
from hatchway.server.process import ServerProcess
from tests.server.rawhttp import (
    Listener,
    error_lines,
    exchange,
    listeners,
    log_records,
    read_answer,
)

HEADER_TIMEOUT = 1
BODY_TIMEOUT = 2
MAX_CONNECTIONS = 40
# The latest a slow connection may be closed: the body deadline plus the backstop's
# grace second, plus scheduling slack on a loaded two-core machine.
CLOSE_BOUND = BODY_TIMEOUT + 1 + 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("edge")
    env = {
        "HATCHWAY_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "HATCHWAY_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "HATCHWAY_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with ServerProcess(root / "data", env=env) as srv:
        yield srv


@pytest.fixture(params=["plain", "https"])
def listener(request: pytest.FixtureRequest, server: ServerProcess) -> Listener:
    return listeners(server)[request.param]


def assert_error_shape(listener: Listener, body: bytes, code: str | None = None) -> None:
    if listener.name == "plain":
        assert body == UNIFORM_ERROR
        return
    import json

    doc = json.loads(body)
    # RFC 6749 §5.2 shape; the message route's own refusal is the bare uniform one.
    assert "error" in doc and set(doc) <= {"error", "error_description"}
    if code is not None:
        assert doc["error"] == code


def no_errors_logged(server: ServerProcess) -> None:
    assert error_lines(server.log_path) == []


# -- item 6: malformed HTTP gets the uniform JSON error ------------------------------------

HOST = b"Host: localhost\r\n"
MALFORMED = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "binary request line": b"\x16\x03\x01\x00\xa5\x01\x00\x00\r\n\r\n",
    "two content-lengths": b"POST /m HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n"
    b"Content-Length: 6\r\n\r\nhello!",
    "content-length and transfer-encoding": b"POST /m HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"POST /m HTTP/1.1\r\n"
    + HOST
    + b"Content-Type: application/jose\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nZZ\r\n",
    "negative content-length": b"POST /m HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n",
    "head too large in one read": b"GET /healthz HTTP/1.1\r\n"
    + HOST
    + b"X-Big: "
    + b"a" * 20000
    + b"\r\n\r\n",
    "header without colon": b"GET /healthz HTTP/1.1\r\n" + HOST + b"no colon here\r\n\r\n",
    "HTTP/1.1 without Host": b"GET /healthz HTTP/1.1\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_http_gets_a_json_4xx_and_a_close(
    server: ServerProcess, listener: Listener, case: str
) -> None:
    answer = exchange(listener, MALFORMED[case])
    assert answer is not None, "the server closed without answering"
    assert answer.status == (431 if "too large" in case else 400)
    assert answer.headers["content-type"] == "application/json"
    assert_error_shape(listener, answer.body, "invalid_request")
    assert answer.closed
    no_errors_logged(server)


def test_lying_content_length_gets_a_json_408_after_the_body_deadline(
    server: ServerProcess, listener: Listener
) -> None:
    request = (
        b"POST /m HTTP/1.1\r\n" + HOST + b"Content-Type: application/jose\r\n"
        b"Content-Length: 1000\r\n\r\neyJ"
    )
    started = time.monotonic()
    answer = exchange(listener, request, timeout=CLOSE_BOUND)
    assert answer is not None
    assert answer.status == 408
    assert time.monotonic() - started >= BODY_TIMEOUT - 0.1
    assert_error_shape(listener, answer.body, "request_timeout")
    assert answer.closed
    no_errors_logged(server)


@pytest.mark.parametrize(
    ("request_line", "status", "code"),
    [
        (b"GET /no-such-thing HTTP/1.1", 404, "not_found"),
        (b"GET /m HTTP/1.1", 405, "method_not_allowed"),
        (b"DELETE /healthz HTTP/1.1", 405, "method_not_allowed"),
    ],
)
def test_unknown_path_and_wrong_method_get_the_json_error(
    server: ServerProcess, listener: Listener, request_line: bytes, status: int, code: str
) -> None:
    if listener.name == "https" and b"healthz" in request_line:
        request_line = request_line.replace(b"/healthz", b"/jwks.json")
    answer = exchange(listener, request_line + b"\r\n" + HOST + b"Connection: close\r\n\r\n")
    assert answer is not None
    assert answer.status == status
    assert_error_shape(listener, answer.body, code)
    if status == 405:
        assert answer.headers["allow"]


# -- item 4: a client leaving mid-body -------------------------------------------------------

BODY_ROUTES = {
    "plain": [(b"/m", b"application/jose")],
    "https": [
        (b"/m", b"application/jose"),
        (b"/enrol/token", b"application/json"),
        (b"/enrol/keys", b"application/json"),
        (b"/oauth/device_authorization", b"application/x-www-form-urlencoded"),
        (b"/oauth/token", b"application/x-www-form-urlencoded"),
        (b"/login/deny", b"application/x-www-form-urlencoded"),
    ],
}


def test_a_client_leaving_mid_body_is_an_info_line_not_an_error(
    server: ServerProcess, listener: Listener
) -> None:
    before = len(log_records(server.log_path))
    routes = BODY_ROUTES[listener.name]
    for path, media in routes:
        with listener.connect() as sock:
            sock.sendall(
                b"POST " + path + b" HTTP/1.1\r\n" + HOST + b"Content-Type: " + media + b"\r\n"
                b"Authorization: Bearer x\r\nContent-Length: 4096\r\n\r\n" + b"a" * 100
            )
            time.sleep(0.05)  # the route is now waiting for the rest of the body
    # Only this test's requests: on the module's shared server an earlier test's last
    # access line (a 404, say) may be written after ``before`` was read.
    paths = {path.decode() for path, _ in routes}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fresh = log_records(server.log_path)[before:]
        gone = [r for r in fresh if r.get("msg") == "client closed the connection mid-request"]
        access = [
            r for r in fresh if r.get("logger") == "hatchway.access" and r.get("path") in paths
        ]
        if len(gone) >= len(routes) and len(access) >= len(routes):
            break
        time.sleep(0.1)
    assert len(gone) == len(routes)
    assert len(access) == len(routes)
    assert {r["status"] for r in access} == {499}
    assert all(r["level"] == "info" for r in gone)
    no_errors_logged(server)


# -- item 5: deadlines and the connection cap ------------------------------------------------


def _dribble(listener: Listener, prefix: bytes, drip: bytes, out: list[object]) -> None:
    """Send ``prefix``, then one byte of ``drip`` every 0.2 s until the server closes.

    Appends (seconds until closed, listener name, the answer if any), or a
    "still open" marker if the test's own bound ran out first.
    """
    started = time.monotonic()
    answer = None
    try:
        with listener.connect() as sock:
            sock.sendall(prefix)
            i = 0
            while time.monotonic() - started < CLOSE_BOUND + 2:  # the test's own bound
                try:
                    sock.sendall(drip[i % len(drip) : i % len(drip) + 1])
                except OSError:
                    break
                i += 1
                if answer is None:
                    answer = read_answer(sock, 0.2)
                    if answer is not None and answer.closed:
                        break
                elif _closed(sock):
                    break
            else:
                out.append(("still open", listener.name, answer))
                return
    except OSError:
        pass
    out.append((time.monotonic() - started, listener.name, answer))


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(1) == b""
    except (TimeoutError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True


def test_slow_senders_are_closed_and_others_are_still_served(server: ServerProcess) -> None:
    both = listeners(server)
    slow_head = b"POST /m HTTP/1.1\r\n" + HOST + b"X-Slow: "
    slow_body = b"POST /m HTTP/1.1\r\n" + HOST + b"Content-Type: application/jose\r\n"
    read_body = slow_body + b"Content-Length: 1000\r\n\r\n"
    # Over the size cap: refused at once without reading, then the client goes on
    # sending a body no one reads; the protocol's backstop closes it.
    unread_body = slow_body + b"Content-Length: 100000\r\n\r\n"
    results: list[object] = []
    threads = [
        threading.Thread(target=_dribble, args=(both[name], prefix, b"abcdefgh", results))
        for name in ("plain", "https")
        for prefix, count in ((slow_head, 4), (read_body, 4), (unread_body, 2))
        for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    time.sleep(HEADER_TIMEOUT / 2)
    # Meanwhile a normal request on each listener is answered at once.
    assert httpx.get(server.http_url + "/healthz", timeout=5).status_code == 200
    meta = server.https_url + "/.well-known/oauth-authorization-server"
    assert (
        httpx.get(
            meta, verify=ssl.create_default_context(cafile=str(server.ca_file)), timeout=5
        ).status_code
        == 200
    )
    for thread in threads:
        thread.join(CLOSE_BOUND + 5)
    assert len(results) == 20
    assert not [r for r in results if r[0] == "still open"]
    for elapsed, name, answer in results:  # type: ignore[misc]
        assert elapsed <= CLOSE_BOUND
        assert answer is not None, "closed without an answer"
        assert answer.status in (400, 408)
        assert_error_shape(both[name], answer.body)
    assert sorted(a.status for _, _, a in results) == [400] * 4 + [408] * 16  # type: ignore[misc]
    no_errors_logged(server)


def test_a_connection_that_sends_nothing_is_closed_after_the_head_deadline(
    server: ServerProcess,
) -> None:
    plain = listeners(server)["plain"]
    with plain.connect() as sock:
        started = time.monotonic()
        answer = read_answer(sock, CLOSE_BOUND)
    assert answer is not None and answer.status == 408 and answer.closed
    assert HEADER_TIMEOUT - 0.1 <= time.monotonic() - started <= CLOSE_BOUND


def test_a_stalled_tls_handshake_is_closed(server: ServerProcess) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", server.https_port), timeout=CLOSE_BOUND) as sock:
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and then nothing
        started = time.monotonic()
        try:
            data = sock.recv(1024)
        except ConnectionResetError:
            data = b""
    assert data == b""
    assert time.monotonic() - started <= CLOSE_BOUND


def test_connections_past_the_cap_get_a_json_503(server: ServerProcess) -> None:
    plain = listeners(server)["plain"]
    socks = [plain.connect() for _ in range(MAX_CONNECTIONS + 5)]
    try:
        answers = [read_answer(s, 0.5) for s in socks[-5:]]
    finally:
        for s in socks:
            s.close()
    assert answers and all(a is not None and a.status == 503 for a in answers)
    assert all(a.body == UNIFORM_ERROR for a in answers if a is not None)
    # The idle ones were closed by the head deadline, so the listener serves again.
    time.sleep(HEADER_TIMEOUT + 0.5)
    assert httpx.get(server.http_url + "/healthz", timeout=5).status_code == 200


def test_an_upgrade_request_is_answered_as_plain_http_without_warnings(
    server: ServerProcess, listener: Listener
) -> None:
    before = len(log_records(server.log_path))
    request = (
        b"GET /no-such-thing HTTP/1.1\r\n" + HOST + b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    answer = exchange(listener, request)
    assert answer is not None and answer.status == 404
    assert_error_shape(listener, answer.body, "not_found")
    fresh = log_records(server.log_path)[before:]
    assert not [r for r in fresh if r.get("level") in ("warning", "error", "critical")]
