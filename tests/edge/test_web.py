"""The edge's page and MJPEG stream, served by the real assembled edge, read by a real HTTP client."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
import requests

from edge.config import EdgeConfig
from edge.display import BANNER_BGR, draw_banner
from edge.runtime import Edge
from tests.edge.conftest import TOKEN, FakeRecognizer, wait_until
from tests.procs import free_port


def read_parts(response: requests.Response, count: int) -> list[bytes]:
    """Parse `count` JPEG parts out of a multipart/x-mixed-replace response."""
    boundary = response.headers["Content-Type"].split("boundary=")[1].encode()
    stream = response.raw
    parts = []
    while len(parts) < count:
        line = stream.readline()
        if not line:
            raise AssertionError("stream ended")
        if line.strip() != b"--" + boundary:
            continue
        headers = {}
        while (line := stream.readline().strip()):
            key, _, value = line.decode().partition(":")
            headers[key.lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        parts.append(stream.read(int(headers["content-length"])))
    return parts


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "part is not a decodable JPEG"
    return image


def has_banner(image: np.ndarray) -> bool:
    """The offline banner is a red bar across the top-left corner."""
    corner = image[2:6, 2:6].reshape(-1, 3).mean(axis=0)
    return bool(np.abs(corner - np.array(BANNER_BGR)).max() < 40)


def edge_config(clip: Path, port: int) -> EdgeConfig:
    return EdgeConfig(source=str(clip), recognizer_port=port, station="desk-1", login="alice", token=TOKEN,
                      web_port=0, max_width=0)


@pytest.fixture
def offline_edge(clip: Path) -> Iterator[Edge]:
    """The whole edge on the real clip, with no recognizer listening."""
    edge = Edge(edge_config(clip, free_port()))
    edge.start()
    yield edge
    edge.stop()


def base(edge: Edge) -> str:
    return f"http://127.0.0.1:{edge.server.port}"


def test_banner_is_drawn_on_a_copy() -> None:
    frame = np.full((360, 640, 3), 90, np.uint8)
    out = draw_banner(frame, "recognizer offline: connection refused (is the recognizer running?)")
    assert has_banner(out) and not has_banner(frame)


def test_root_redirects_to_the_page(offline_edge: Edge) -> None:
    r = requests.get(base(offline_edge) + "/", allow_redirects=False, timeout=5)
    assert r.status_code == 302 and r.headers["Location"].endswith("/video_feed_page")
    page = requests.get(base(offline_edge) + "/video_feed_page", timeout=5)
    assert page.ok and '<img id="feed" src="/video_feed"' in page.text and "desk-1" in page.text


def test_offline_feed_is_raw_frames_with_a_banner(offline_edge: Edge) -> None:
    with requests.get(base(offline_edge) + "/video_feed", stream=True, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        images = [decode(p) for p in read_parts(r, 3)]
    assert all(img.shape == (360, 640, 3) and has_banner(img) for img in images)
    status = requests.get(base(offline_edge) + "/api/status", timeout=5).json()
    assert status["online"] is False and status["feed"] == "raw"
    assert "refused" in status["reason"] and status["camera"]["running"]


def test_two_viewers_at_once(offline_edge: Edge) -> None:
    results: dict[int, list[bytes]] = {}
    inside = threading.Barrier(3, timeout=10)

    def watch(i: int) -> None:
        with requests.get(base(offline_edge) + "/video_feed", stream=True, timeout=5) as r:
            results[i] = read_parts(r, 2)
            inside.wait()  # both streams open while the status is read
            inside.wait()
            results[i] += read_parts(r, 2)

    viewers = [threading.Thread(target=watch, args=(i,)) for i in range(2)]
    for v in viewers:
        v.start()
    inside.wait()
    watching = requests.get(base(offline_edge) + "/api/status", timeout=5).json()["viewers"]
    inside.wait()
    for v in viewers:
        v.join(10)
    assert watching == 2
    assert all(len(parts) == 4 for parts in results.values())
    for parts in results.values():
        assert all(decode(p).shape == (360, 640, 3) for p in parts)
    assert wait_until(lambda: offline_edge.state.viewers == 0, 5)  # disconnected viewers are dropped


def test_capture_answers(clip: Path) -> None:
    server = FakeRecognizer().start()
    edge = Edge(edge_config(clip, server.port))
    edge.start()
    url = base(edge) + "/api/capture"
    try:
        bad = requests.post(url, json={"name": "../etc"}, timeout=5)
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_name"
        assert wait_until(lambda: edge.link.online and edge.raw.latest() is not None, 5)
        good = requests.post(url, json={"name": "Ada"}, timeout=15)
        assert good.status_code == 200 and good.json()["ok"] is True and good.json()["name"] == "Ada"
        server.kill()
        assert wait_until(lambda: not edge.link.online, 5)
        offline = requests.post(url, data={"name": "Ada"}, timeout=15)  # a plain form post works too
        assert offline.status_code == 503 and "recognizer offline" in offline.json()["reason"]
    finally:
        edge.stop()
        server.kill()


def first_part_where(response: requests.Response, wanted, limit: int = 300) -> int:
    """Read parts until one satisfies `wanted`; return how many were read (the client may lag behind
    by what the socket buffers hold, so a fixed count would test the buffers, not the edge)."""
    for n in range(1, limit + 1):
        if wanted(decode(read_parts(response, 1)[0])):
            return n
    raise AssertionError(f"no wanted part in {limit}")


def test_feed_turns_annotated_goes_raw_when_the_recognizer_dies_and_recovers(clip: Path) -> None:
    server = FakeRecognizer().start()
    edge = Edge(edge_config(clip, server.port))
    edge.start()
    clean = lambda image: not has_banner(image)  # noqa: E731
    try:
        with requests.get(base(edge) + "/video_feed", stream=True, timeout=10) as r:
            first_part_where(r, clean)
            assert not any(has_banner(decode(p)) for p in read_parts(r, 3))
            assert edge.display_thread.mode == "annotated"
            server.kill()
            first_part_where(r, has_banner)
            assert all(has_banner(decode(p)) for p in read_parts(r, 3))
            assert requests.get(base(edge) + "/api/status", timeout=5).json()["feed"] == "raw"
            server.start()
            first_part_where(r, clean)
            assert not any(has_banner(decode(p)) for p in read_parts(r, 3))
        status = requests.get(base(edge) + "/api/status", timeout=5).json()
        assert status["online"] and status["feed"] == "annotated" and status["faces"][0]["name"] == "alice"
        assert status["connects"] == 2
    finally:
        edge.stop()
        server.kill()
