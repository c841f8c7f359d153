"""The readiness a balancer checks: 503 with the reasons until every part is loaded, 200 then, 503 again when
draining; served on a real socket, garbage requests answered without harm."""
from __future__ import annotations

import socket
import threading

from recognizer.server.health import HealthServer, Readiness
from tests.pool.cluster import http_json


def test_ready_only_when_everything_is_loaded_and_not_draining() -> None:
    r = Readiness()
    assert r.state() == (False, ["starting"])
    models, gallery = threading.Event(), threading.Event()
    r.require("models", models.is_set)
    r.require("gallery", gallery.is_set)
    assert r.state() == (False, ["models not loaded", "gallery not loaded"])
    models.set()
    gallery.set()
    assert r.state() == (True, [])
    r.require("broken", lambda: 1 / 0)  # a check that raises is "not ready", never an exception
    assert r.state() == (False, ["broken not loaded"])
    r.require("broken", lambda: True)
    r.drain("stopping")
    assert r.state() == (False, ["draining: stopping"]) and r.draining


def test_healthz_on_a_socket() -> None:
    r, loaded = Readiness(), threading.Event()
    r.require("models", loaded.is_set)
    server = HealthServer("127.0.0.1", 0, r, "node7", lambda: 3, lambda: {"gallery": {"seq": 5, "encodings": 9}})
    host, port = server.start()
    try:
        url = f"http://{host}:{port}"
        assert http_json(f"{url}/healthz") == (503, {"ready": False, "node": "node7", "stations": 3,
                                                     "reasons": ["models not loaded"],
                                                     "gallery": {"seq": 5, "encodings": 9}})
        loaded.set()
        assert http_json(f"{url}/healthz")[0] == 200 and http_json(f"{url}/readyz")[0] == 200
        assert http_json(f"{url}/../etc/passwd")[0] == 404
        for junk in (b"\x00\xff" * 100 + b"\r\n\r\n", b"GET " + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"):
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(junk)
                s.recv(1024)
        r.drain("stopping")
        code, body = http_json(f"{url}/healthz")
        assert code == 503 and body["reasons"] == ["draining: stopping"]
    finally:
        server.stop()
