"""A node's view of the dashboard's gallery, against the real dashboard on a socket: it loads it, follows a change
within the long-poll's round trip, starts from its local copy while the dashboard is down, catches up when it is
back, applies a removal, and ignores a damaged copy. No HAProxy or dlib needed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recognizer.identity.gallery import CURSOR_NAME, GalleryClient, GalleryStore, Provenance
from tests.alerts.conftest import TOKEN, Dashboard
from shared.http import HttpError
from tests.pool.cluster import wait_until

WAIT_S = 2.0  # the long-poll's length here


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.09, 128).astype(np.float32)


def enrol(store: GalleryStore, name: str, seed: int) -> None:
    store.add(name, vec(seed)[None, :], [f"{name}.jpg"],
              provenance=Provenance(by="registrar", photo_sha256=f"{seed:064x}"))


@pytest.fixture
def dashboard(tmp_path: Path):
    d = Dashboard(tmp_path / "dashboard.sqlite3")
    d.start()
    yield d
    d.stop()


def store_for(d: Dashboard, folder: Path) -> GalleryStore:
    return GalleryStore(GalleryClient(d.url, TOKEN), folder, wait_s=WAIT_S)


def test_a_node_follows_and_starts_from_its_copy_while_the_dashboard_is_down(dashboard: Dashboard, tmp_path: Path) -> None:
    writer, node = store_for(dashboard, tmp_path / "writer"), store_for(dashboard, tmp_path / "node")
    enrol(writer, "alice", 1)
    node.start()
    try:
        assert node.wait_loaded(10) and node.index.people == ["alice"]
        enrol(writer, "bob", 2)  # another node's Capture
        took = wait_until("bob followed", lambda: "bob" in node.index.people, 10, 0.005)
        assert took < WAIT_S * 0.75  # answered by the change, not by the long-poll's deadline
        assert np.allclose(node.index.encodings[node.index.names.index("bob")], vec(2))
        wait_until("copy written", lambda: json.loads((tmp_path / "node" / CURSOR_NAME).read_text())["seq"] == 2, 5)
    finally:
        node.stop()
    dashboard.stop()
    # the dashboard is down: a node starting now is loaded from its copy at once
    restarted = store_for(dashboard, tmp_path / "node")
    restarted.start()
    try:
        assert restarted.loaded and restarted.index.people == ["alice", "bob"] and restarted.seq == 2
        with pytest.raises(HttpError):
            enrol(restarted, "carol", 3)  # a Capture needs the gallery: refused, not half-done
        assert restarted.index.people == ["alice", "bob"]
        dashboard.start()
        enrol(writer, "carol", 3)
        dashboard.app.test_client().delete("/api/gallery/people/alice", headers={"Authorization": f"Bearer {TOKEN}"})
        wait_until("caught up after the outage", lambda: restarted.index.people == ["bob", "carol"], 20, 0.05)
        assert restarted.seq == 4
    finally:
        restarted.stop()


def test_a_damaged_copy_is_ignored_and_the_gallery_fetched_whole(dashboard: Dashboard, tmp_path: Path) -> None:
    writer = store_for(dashboard, tmp_path / "writer")
    enrol(writer, "alice", 1)
    folder = tmp_path / "node"
    node = store_for(dashboard, folder)
    node.start()
    assert node.wait_loaded(10)
    node.stop()
    (folder / CURSOR_NAME).write_text('{"seq": 1, "ids": [1, 2, 3]}')  # disagrees with the index beside it
    again = store_for(dashboard, folder)
    again.start()
    try:
        assert again.wait_loaded(10) and again.index.people == ["alice"] and len(again.index) == 1
    finally:
        again.stop()
