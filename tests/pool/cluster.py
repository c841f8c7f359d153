"""A pool on loopback, as real processes: the dashboard, N recognizer nodes following its gallery, HAProxy with
deploy/haproxy.cfg in front of them, and edges (the edge's own `RecognizerLink`, in this process) streaming a
small still frame through the balancer. Used by tests/pool and bench/pool.py."""
from __future__ import annotations

import json
import logging
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from tests.procs import REPO, ManagedProcess, free_port

log = logging.getLogger(__name__)
STATION_TOKEN = "pool-shared-station-token"
SERVICE_TOKEN = "pool-service-token-0123456789abcdef"
FIXTURES = REPO / "tests" / "fixtures"
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"


def haproxy_missing() -> Optional[str]:
    """Why the pool cannot run here (None when it can)."""
    if shutil.which("haproxy") is None:
        return "haproxy is not installed (scripts/test.sh installs Debian's haproxy when run as root)"
    return None


def stranger_frame() -> np.ndarray:
    """A 320x240 BGR frame with one face (tests/fixtures/stranger_kit.jpg, nobody enrolled): an unknown_face alert."""
    img = cv2.imread(str(FIXTURES / "stranger_kit.jpg"))
    return np.ascontiguousarray(img[49:289, 575:895])


def http_json(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.05) -> float:
    """Seconds until `check()` held; AssertionError naming `what` after `timeout`."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(every)
    return time.monotonic() - t0


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@dataclass
class Node:
    name: str
    port: int
    health_port: int
    folder: Path
    proc: Optional[ManagedProcess] = None

    def health(self) -> tuple[int, dict]:
        try:
            return http_json(f"http://127.0.0.1:{self.health_port}/healthz")
        except OSError:
            return 0, {}

    def ready(self) -> bool:
        return self.health()[0] == 200

    def stations(self) -> int:
        return int(self.health()[1].get("stations", 0))


class Edge:
    """One desk: the edge's RecognizerLink to the balancer, fed the same frame `fps` times a second."""

    def __init__(self, station: str, port: int, frame: np.ndarray, fps: float = 4.0) -> None:
        from edge.frames import LatestFrame
        from edge.link import RecognizerLink
        from edge.link_state import LinkSettings

        self.station = station
        self.raw: LatestFrame = LatestFrame()
        self.link = RecognizerLink(LinkSettings(host="127.0.0.1", port=port, station=station, token=STATION_TOKEN),
                                   self.raw, LatestFrame())
        self._frame, self._period = frame, 1.0 / fps
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, name=f"feed-{station}", daemon=True)

    def set_fps(self, fps: float) -> None:
        self._period = 1.0 / fps

    def _feed(self) -> None:
        while not self._stop.is_set():
            self.raw.publish(self._frame)
            self._stop.wait(self._period)

    def start(self) -> None:
        self._feeder.start()
        self.link.start()

    def stop(self) -> None:
        self._stop.set()
        self.link.stop()
        self._feeder.join(timeout=2)

    def status(self) -> dict:
        return self.link.status()

    def node(self) -> Optional[str]:
        """The node serving this desk now (from its WELCOME), None when offline."""
        st = self.status()
        server = st.get("server") or ""
        return server.split("node=", 1)[1] if st["online"] and "node=" in server else None

    def names(self) -> list[str]:
        return [f.get("name") or f.get("identity") or "" for f in self.status().get("faces") or []]


@dataclass
class Pool:
    root: Path
    nodes_n: int = 3
    workers: int = 1
    extra_args: tuple[str, ...] = ()
    dashboard_port: int = field(default_factory=free_port)
    lb_port: int = field(default_factory=free_port)
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    dashboard: Optional[ManagedProcess] = None
    balancer: Optional[ManagedProcess] = None

    @property
    def db_path(self) -> Path:
        return self.root / "dashboard.sqlite3"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _dashboard_cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "dashboard", "--db", f"sqlite:///{self.db_path}", *args],
                             cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
        return out.stdout

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._dashboard_cli("add-station", "--station-id", "pool", "--kind", "service", "--token", SERVICE_TOKEN)
        self.dashboard = ManagedProcess("dashboard", [sys.executable, "-m", "dashboard", "--db",
                                                      f"sqlite:///{self.db_path}", "serve", "--port",
                                                      str(self.dashboard_port)], self.root / "dashboard.log")
        self.dashboard.start(lambda: accepts(self.dashboard_port), timeout=60)
        for i in range(1, self.nodes_n + 1):
            node = Node(f"node{i}", free_port(), free_port(), self.root / f"node{i}")
            node.folder.mkdir()
            self.nodes.append(node)
        for node in self.nodes:  # all loading at once, as after a power cut
            self.start_node(node, wait=False)
        for node in self.nodes:
            wait_until(f"{node.name} ready", node.ready, 120, 0.2)
        env = {"FACEMON_LB_BIND": f"127.0.0.1:{self.lb_port}", "FACEMON_LB_STATS": str(self.stats_socket)}
        for i in (1, 2, 3):  # the shipped file names three nodes; a smaller pool repeats the last
            node = self.nodes[min(i, len(self.nodes)) - 1]
            env[f"FACEMON_NODE{i}"], env[f"FACEMON_NODE{i}_HEALTH"] = f"127.0.0.1:{node.port}", str(node.health_port)
        self.balancer = ManagedProcess("haproxy", ["haproxy", "-db", "-f", str(HAPROXY_CFG)], self.root / "haproxy.log", env)
        self.balancer.start(lambda: accepts(self.lb_port), timeout=20)

    @property
    def stats_socket(self) -> Path:
        return self.root / "haproxy.sock"

    def balancer_states(self) -> dict[str, str]:
        """Each node's state in HAProxy (UP, DOWN, "UP 1/2" ...), from its stats socket."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats_socket))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "recognizers" and row.get("svname", "").startswith("node"):
                out[row["svname"]] = row["status"]
        return out

    def wait_balanced_in(self, node: Node, timeout: float = 30) -> float:
        """Wait until HAProxy sends new stations to `node` (its health check passed `rise` times)."""
        index = self.nodes.index(node) + 1
        return wait_until(f"HAProxy sees {node.name} up", lambda: self.balancer_states().get(f"node{index}") == "UP",
                          timeout, 0.1)

    def node_cmd(self, node: Node) -> list[str]:
        return [sys.executable, "-m", "recognizer", "--host", "127.0.0.1", "--port", str(node.port),
                "--health-port", str(node.health_port), "--node-name", node.name, "--token", STATION_TOKEN,
                "--gallery", "dashboard", "--dashboard-url", self.dashboard_url, "--dashboard-token", SERVICE_TOKEN,
                "--station-auth", "shared", "--index", str(node.folder / "gallery"),
                "--known-faces", str(node.folder / "known_faces"), "--outbox", str(node.folder / "outbox.sqlite3"),
                "--detector", "hog", "--workers", str(self.workers), "--no-liveness", "--unknown-after", "0.5",
                "--status-interval", "1", "--drain-timeout", "5", *self.extra_args]

    def start_node(self, node: Node, wait: bool = True) -> None:
        node.proc = ManagedProcess(node.name, self.node_cmd(node), node.folder / "recognizer.log",
                                   {"OPENBLAS_NUM_THREADS": "1"})
        node.proc.start(lambda: accepts(node.health_port), timeout=60)
        if wait:
            wait_until(f"{node.name} ready", node.ready, 120, 0.2)

    def add_edges(self, n: int, frame: np.ndarray, fps: float = 4.0) -> None:
        for i in range(n):
            edge = Edge(f"desk-{len(self.edges) + 1:02d}", self.lb_port, frame, fps)
            self.edges.append(edge)
            edge.start()

    def spread(self) -> dict[str, int]:
        """Stations per node as the edges see them (the WELCOME names the node)."""
        out = {n.name: 0 for n in self.nodes}
        for e in self.edges:
            node = e.node()
            if node is not None:
                out[node] = out.get(node, 0) + 1
        return out

    def node_of(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def issue_grant(self, station: str, identity: str) -> str:
        from dashboard import db as dbmod
        from dashboard import grants

        engine = dbmod.make_engine(f"sqlite:///{self.db_path}")
        try:
            with dbmod.make_session_factory(engine, write=True)() as db:
                grant, _row = grants.issue_grant(db, "admin", station, identity, 60)
                return grant
        finally:
            engine.dispose()

    def query(self, sql: str, *params: object) -> list[tuple]:
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(sql, params).fetchall()

    def outbox_events(self) -> dict[str, set[str]]:
        """Event ids each node's outbox holds (delivered rows are kept a day), by node."""
        out = {}
        for node in self.nodes:
            path = node.folder / "outbox.sqlite3"
            if path.exists():
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
                    out[node.name] = {r[0] for r in db.execute("SELECT event_id FROM outbox")}
        return out

    def pending_outbox(self) -> int:
        total = 0
        for node in self.nodes:
            path = node.folder / "outbox.sqlite3"
            if path.exists():
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
                    total += db.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0]
        return total

    def stop(self) -> None:
        for e in self.edges:
            e.stop()
        for proc in [self.balancer, *[n.proc for n in self.nodes], self.dashboard]:
            if proc is not None:
                proc.stop()

    def logs(self) -> str:
        parts = []
        for proc in [self.balancer, *[n.proc for n in self.nodes], self.dashboard]:
            if proc is not None:
                parts.append(f"==== {proc.name} ====\n{proc.output()[-3000:]}")
        return "\n".join(parts)

