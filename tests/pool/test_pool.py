"""A pool over real processes on loopback: the dashboard, HAProxy (deploy/haproxy.cfg) and 3 recognizer nodes
following the dashboard's gallery, with 6 edges (the edge's own link) streaming a stranger's face.

One pool for the module, steps in order: stations spread; a node SIGKILLed and its stations back on live nodes;
a node drained with SIGTERM; every alert event at the dashboard exactly once and no incident left open twice;
a Capture through one node recognised by every node; facemon-enrol importing a folder into the same gallery.
Time bounds here are loose on purpose (a loaded 2-core CI box): the figures come from `python -m bench.pool`.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.pool.cluster import SERVICE_TOKEN, Pool, haproxy_missing, stranger_frame, wait_until
from tests.procs import REPO

pytestmark = [pytest.mark.slow, pytest.mark.skipif(haproxy_missing() is not None, reason=haproxy_missing() or "")]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory):
    p = Pool(tmp_path_factory.mktemp("pool"))
    try:
        p.start()
        p.add_edges(6, stranger_frame())
        wait_until("every edge served", lambda: all(e.node() for e in p.edges), 60)
        yield p
    except BaseException:
        print(p.logs())
        raise
    finally:
        p.stop()


def test_stations_spread_over_the_nodes(pool: Pool) -> None:
    spread = pool.spread()
    assert sum(spread.values()) == 6 and max(spread.values()) <= 3, spread
    # what each node says of itself agrees with what the edges were told
    wait_until("the nodes' own counts agree", lambda: {n.name: n.stations() for n in pool.nodes} == pool.spread(), 30)
    wait_until("results at every edge", lambda: all(e.status()["results"] > 3 for e in pool.edges), 30)
    wait_until("an open unknown_face incident per desk", lambda: len(pool.query(
        "SELECT DISTINCT station_id FROM alerts WHERE ended_at IS NULL AND type = 'unknown_face'")) == 6, 30)


def test_killed_node_stations_move_and_its_incidents_close(pool: Pool) -> None:
    victim = max(pool.nodes, key=lambda n: n.stations())
    moved = [e for e in pool.edges if e.node() == victim.name]
    assert moved
    before = {e.station: e.status()["results"] for e in moved}
    victim.proc.kill()
    took = wait_until("the killed node's stations served elsewhere", lambda: all(
        e.node() not in (None, victim.name) and e.status()["results"] > before[e.station] for e in moved), 30, 0.02)
    print(f"failover of {len(moved)} stations: {took:.2f} s")
    assert max(pool.spread().values()) <= 4
    # the dashboard closes what the dead node left open, naming where the station went
    stations = tuple(e.station for e in moved)
    wait_until("the old incidents closed", lambda: all(
        json.loads(d).get("closed_by") == "station_moved"
        for d, in pool.query("SELECT details FROM alerts WHERE ended_at IS NOT NULL AND station_id IN (%s)"
                             % ",".join("?" * len(stations)), *stations)) and len(pool.query(
            "SELECT alert_id FROM alerts WHERE ended_at IS NOT NULL AND station_id IN (%s)"
            % ",".join("?" * len(stations)), *stations)) >= len(stations), 30)
    # restarted (as systemd would): not ready while loading, so it gets no station until it is
    pool.start_node(victim, wait=False)
    code, body = victim.health()
    if code != 200:
        assert code == 503 and body["reasons"], body
    wait_until(f"{victim.name} ready again", victim.ready, 120, 0.2)
    pool.wait_balanced_in(victim)


def test_drained_node_tells_its_stations_to_move(pool: Pool) -> None:
    victim = max(pool.nodes, key=lambda n: n.stations())
    moved = [e for e in pool.edges if e.node() == victim.name]
    assert moved
    victim.proc.proc.send_signal(signal.SIGTERM)
    wait_until("drained stations served elsewhere",
               lambda: all(e.node() not in (None, victim.name) for e in moved), 30, 0.02)
    assert victim.proc.proc.wait(timeout=30) == 0
    assert f"draining: telling {len(moved)} station(s) to move" in victim.proc.output()
    spread = pool.spread()
    assert sum(spread.values()) == 6 and max(spread.values()) <= 3, spread  # leastconn fills the restarted node
    stations = tuple(e.station for e in moved)
    closed = pool.query("SELECT details FROM alerts WHERE ended_at IS NOT NULL AND station_id IN (%s)"
                        % ",".join("?" * len(stations)), *stations)
    assert any(json.loads(d).get("moved_to") is None and json.loads(d).get("closed_by") == "station_moved"
               for d, in closed), closed  # closed by the draining node itself
    pool.start_node(victim)
    pool.wait_balanced_in(victim)


def test_every_alert_event_reaches_the_dashboard_once(pool: Pool) -> None:
    wait_until("every node's outbox delivered", lambda: pool.pending_outbox() == 0, 30, 0.2)
    sent = pool.outbox_events()
    everything = set().union(*sent.values())
    at_dashboard = Counter(r[0] for r in pool.query("SELECT event_id FROM alert_events"))
    assert everything and everything == set(at_dashboard), (everything ^ set(at_dashboard))
    assert max(at_dashboard.values()) == 1
    # one incident open per desk and type: the moves closed the old ones, none is left open twice
    open_ = Counter(pool.query("SELECT station_id, type FROM alerts WHERE ended_at IS NULL"))
    assert open_ and max(open_.values()) == 1, open_
    for (details,) in pool.query("SELECT details FROM alerts WHERE ended_at IS NOT NULL"):
        assert json.loads(details).get("closed_by"), details


def test_capture_through_one_node_is_recognised_by_every_node(pool: Pool) -> None:
    desk = pool.edges[0]
    grant = pool.issue_grant(desk.station, "kit")
    answer = desk.link.enrol("kit", timeout=30, grant=grant)
    assert answer["ok"], answer
    (seq, person, station, by, grant_id, photo), = pool.query(
        "SELECT c.seq, e.person, e.station_id, e.enrolled_by, e.grant_id, e.photo IS NOT NULL FROM gallery_changes c "
        "JOIN gallery_encodings e ON e.id = c.encoding_id")
    assert (person, station, by, photo) == ("kit", desk.station, "admin", 1) and grant_id
    loaded = wait_until("every node has the change", lambda: all(
        (n.health()[1].get("gallery") or {}).get("seq", 0) >= seq for n in pool.nodes), 10, 0.02)
    named = wait_until("every desk names kit", lambda: all(e.names() == ["kit"] for e in pool.edges), 30, 0.02)
    print(f"propagation: change at every node {loaded:.2f} s, then every desk names the face {named:.2f} s later")
    assert loaded < 10


def test_facemon_enrol_imports_a_folder_into_the_gallery(pool: Pool, tmp_path: Path) -> None:
    folder = tmp_path / "known"
    (folder / "barack_obama").mkdir(parents=True)
    src = sorted((REPO / "known_faces" / "barack_obama").glob("*.jpg"))[:1]
    assert src, "known_faces/barack_obama ships with the repository"
    (folder / "barack_obama" / src[0].name).write_bytes(src[0].read_bytes())
    cmd = [sys.executable, "-m", "recognizer.identity.enrol", "--known-faces", str(folder), "--quiet",
           "--dashboard-url", pool.dashboard_url, "--dashboard-token", SERVICE_TOKEN, "--by", "registrar"]
    for _ in range(2):  # the second import of the same photo adds nothing
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
    rows = pool.query("SELECT enrolled_by, source FROM gallery_encodings WHERE person = 'barack_obama'")
    assert rows == [("registrar", f"barack_obama/{src[0].name}")]
    head = pool.query("SELECT seq FROM gallery_head")[0][0]
    wait_until("every node has the import", lambda: all(
        (n.health()[1].get("gallery") or {}).get("encodings") == 2 and n.health()[1]["gallery"]["seq"] == head
        for n in pool.nodes), 10, 0.05)
