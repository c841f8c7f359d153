"""shared.http, the one HTTP client, against real servers on 127.0.0.1: answers, tokens, bodies, and no-answer errors."""
from __future__ import annotations

import json
import socket
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from shared.http import HttpError, Response, post, post_json, post_multipart

pytestmark = pytest.mark.timeout(30)


class Handler(BaseHTTPRequestHandler):
    """/echo answers what it got; /refuse answers 403 with an `error`; /moved redirects; /text answers plain text."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's hook
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/echo":
            out = json.dumps({"auth": self.headers.get("Authorization"), "type": self.headers["Content-Type"],
                              "body": body.decode("latin-1")}).encode()
            self._answer(200, out, "application/json")
        elif self.path == "/refuse":
            self._answer(403, b'{"ok": false, "error": "token revoked"}', "application/json")
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "https://elsewhere/api")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._answer(500, b"internal trouble", "text/plain")

    def _answer(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_json_post_carries_the_token_and_reads_the_answer(base: str) -> None:
    answer = post_json(f"{base}/echo", {"station_id": "desk-01"}, token="s3cret", timeout_s=5)
    data = answer.json()
    assert answer.ok and answer.status == 200 and data is not None
    assert data["auth"] == "Bearer s3cret" and data["type"] == "application/json"
    assert json.loads(data["body"]) == {"station_id": "desk-01"}
    assert post_json(f"{base}/echo", {}, timeout_s=5).json()["auth"] is None  # no token, no header


def test_multipart_post_is_parsed_by_a_standard_parser(base: str) -> None:
    jpeg = b"\xff\xd8 not really a jpeg \xff\xd9"
    answer = post_multipart(f"{base}/echo", [("meta", None, "application/json", b'{"type": "no_face"}'),
                                             ("image", "evidence.jpg", "image/jpeg", jpeg)], token="t", timeout_s=5)
    data = answer.json()
    assert data is not None and data["auth"] == "Bearer t"
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {data['type']}\r\n\r\n".encode() + data["body"].encode("latin-1"))
    parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
    assert parts["meta"].get_content() == b'{"type": "no_face"}'
    assert parts["image"].get_filename() == "evidence.jpg" and parts["image"].get_content() == jpeg


def test_error_statuses_and_redirects_are_answers_not_exceptions(base: str) -> None:
    refused = post_json(f"{base}/refuse", {}, timeout_s=5)
    assert (refused.status, refused.ok, refused.reason()) == (403, False, "token revoked")
    assert refused.json() == {"ok": False, "error": "token revoked"}
    failed = post_json(f"{base}/other", {}, timeout_s=5)
    assert (failed.status, failed.reason(), failed.json()) == (500, "internal trouble", None)
    moved = post_json(f"{base}/moved", {}, timeout_s=5)  # a redirected POST would lose its body: not followed
    assert (moved.status, moved.location) == (302, "https://elsewhere/api")


def test_no_answer_is_an_http_error_never_a_raw_one() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(HttpError) as refused:
        post_json(f"http://127.0.0.1:{port}/x", {}, timeout_s=2)
    assert refused.value.transient and f"127.0.0.1:{port}" in str(refused.value)
    with pytest.raises(HttpError) as bad:
        post("ftp//nowhere", b"", {}, timeout_s=2)
    assert not bad.value.transient and "bad URL" in str(bad.value)


@pytest.mark.parametrize("reply", [b"garbage that is not HTTP\r\n\r\n", b""])
def test_a_garbled_or_silent_server_is_an_http_error(reply: bytes) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_once() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(reply)

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    try:
        with pytest.raises(HttpError) as caught:
            post_json(f"http://127.0.0.1:{port}/x", {"a": 1}, timeout_s=5)
        assert caught.value.transient
    finally:
        thread.join(5)
        listener.close()


def test_a_response_that_is_not_a_json_object() -> None:
    assert Response(200, b"").json() == {}
    assert Response(200, b"[1, 2]").json() is None
    assert Response(502, b"<html>bad gateway</html>").reason() == "<html>bad gateway</html>"
