"""Alert rules as pure logic: plain face dicts and frame statistics in, incident events out."""
from __future__ import annotations

import itertools

import pytest

from recognizer.alerting.rules import ALERT_TYPES, AlertEngine, AlertThresholds, FrameStats
from shared.results import FaceResult

FPS = 10
OK_STATS = FrameStats(mean=110.0, std=40.0, thumb=b"")


def face(state: str = "known", name: str | None = "alice", track: int = 1, size: int = 100,
         liveness: str = "live") -> FaceResult:
    return FaceResult(box=(0, size, size, 0), track=track, name=name, state=state, distance=0.4, confidence=0.9,
                      liveness=liveness)


def run(engine: AlertEngine, t0: float, seconds: float, faces: list[dict], login: str = "alice", stats=OK_STATS,
        evidence_prefix: str = "f"):
    """Feed `seconds` of frames at FPS; return (events, next t)."""
    events = []
    n = int(round(seconds * FPS))
    for i in range(n):
        t = t0 + i / FPS
        ev = stats(t) if callable(stats) else stats
        events += engine.observe(t, faces, login, ev, evidence=f"{evidence_prefix}@{t:.1f}")
    return events, t0 + n / FPS


def of(events, kind: str) -> list:
    return [e for e in events if e.type == kind]


TH = AlertThresholds(cooldown_s=20.0, no_face_after_s=10.0)


def test_evaluator_alone_raises_nothing():
    eng = AlertEngine("desk-01", TH)
    events, _ = run(eng, 0, 120, [face()])
    assert events == []


def test_unknown_face_opens_once_updates_with_larger_face_and_closes_with_hysteresis():
    eng = AlertEngine("desk-01", TH)
    events, t = run(eng, 0, 2.5, [face("unknown", None, 7, 80)])
    assert events == []  # below the 3 s threshold
    ev, t = run(eng, t, 10, [face("unknown", None, 7, 80)])
    events += ev
    opened = of(events, "unknown_face")
    assert [e.state for e in opened] == ["open"]
    assert opened[0].image is not None and opened[0].started_at == 0.0
    assert opened[0].login_name == "alice" and opened[0].station_id == "desk-01"
    ev, t = run(eng, t, 10, [face("unknown", None, 7, 200)], evidence_prefix="big")  # a better (larger) face
    updates = [e for e in ev if e.state == "update"]
    assert len(updates) == 1 and updates[0].best_image.startswith("big@")
    assert updates[0].alert_id == opened[0].alert_id
    # a short absence (detector missed the face) does not close it
    ev, t = run(eng, t, 1.0, [])
    ev2, t = run(eng, t, 5, [face("unknown", None, 7, 200)])
    assert of(ev + ev2, "unknown_face") == []
    ev, t = run(eng, t, 5, [face()])
    closed = of(ev, "unknown_face")
    assert [e.state for e in closed] == ["closed"]
    assert closed[0].alert_id == opened[0].alert_id and closed[0].ended_at is not None
    assert closed[0].details["duration_s"] > 20
    ids = [e.event_id for e in events + updates + closed]
    assert len(set(ids)) == len(ids)


def test_cooldown_then_a_new_incident():
    eng = AlertEngine("desk-01", TH)
    stranger = [face("unknown", None, 3)]
    events, t = run(eng, 0, 5, stranger)
    events2, t = run(eng, t, 4, [face()])
    assert [e.state for e in of(events + events2, "unknown_face")] == ["open", "closed"]
    # back within the 20 s cooldown: nothing until it expires, then one new incident
    ev, t = run(eng, t, 10, stranger)
    assert of(ev, "unknown_face") == []
    ev, t = run(eng, t, 15, stranger)
    new = of(ev, "unknown_face")
    assert [e.state for e in new] == ["open"] and new[0].alert_id != events[0].alert_id


def test_wrong_person_only_while_the_evaluator_is_away():
    eng = AlertEngine("desk-01", TH)
    events, t = run(eng, 0, 10, [face(name="bob", track=2), face(name="alice", track=1)])
    assert of(events, "wrong_person") == []  # alice is there too (that is multiple_faces)
    assert [e.state for e in of(events, "multiple_faces")] == ["open"]
    events, t = run(eng, t, 10, [face(name="bob", track=2)])
    wrong = of(events, "wrong_person")
    assert [e.state for e in wrong] == ["open"]
    assert wrong[0].details["names"] == ["bob"] and wrong[0].details["expected"] == "alice"
    assert [e.state for e in of(events, "multiple_faces")] == ["closed"]
    events, t = run(eng, t, 5, [face(name="alice")])
    assert [e.state for e in of(events, "wrong_person")] == ["closed"]


def test_wrong_person_needs_a_login():
    eng = AlertEngine("desk-01", TH)
    events, _ = run(eng, 0, 20, [face(name="bob")], login="")
    assert events == []


def test_no_face_after_threshold_and_closes_when_someone_sits_down():
    eng = AlertEngine("desk-01", TH)
    events, t = run(eng, 0, 9.5, [])
    assert events == []
    events, t = run(eng, t, 30, [])
    assert [e.state for e in events] == ["open"] and events[0].type == "no_face"
    events, t = run(eng, t, 1, [face()])
    assert events == []  # hysteresis: 1 s back is not enough
    events, t = run(eng, t, 5, [face()])
    assert [e.state for e in of(events, "no_face")] == ["closed"]


def test_no_blink_requires_persistence():
    eng = AlertEngine("desk-01", TH)
    # liveness flickering between live and no_blink for short moments never opens
    events = []
    t = 0.0
    for _ in range(10):
        ev, t = run(eng, t, 2, [face(liveness="no_blink")])
        events += ev
        ev, t = run(eng, t, 2, [face(liveness="live")])
        events += ev
    assert of(events, "no_blink") == []
    events, t = run(eng, t, 8, [face(liveness="no_blink")])
    assert [e.state for e in of(events, "no_blink")] == ["open"]


@pytest.mark.parametrize("stats,reason", [
    (FrameStats(3.0, 1.0, b"a"), "black"),
    (FrameStats(90.0, 2.0, b"b"), "covered"),
])
def test_camera_tamper_black_and_covered(stats, reason):
    eng = AlertEngine("desk-01", TH)
    thumbs = itertools.count()
    varying = lambda t: FrameStats(stats.mean, stats.std, str(next(thumbs)).encode())  # noqa: E731 - never frozen
    events, t = run(eng, 0, 40, [], stats=varying)
    assert [(e.type, e.state) for e in events] == [("camera_tamper", "open")]  # no no_face: the cause is known
    assert events[0].details["reason"] == reason
    events, t = run(eng, t, 5, [face()])
    assert [(e.type, e.state) for e in events] == [("camera_tamper", "closed")]


def test_camera_tamper_frozen():
    eng = AlertEngine("desk-01", TH)
    counter = itertools.count()
    moving = lambda t: FrameStats(100.0, 40.0, str(next(counter)).encode())  # noqa: E731
    events, t = run(eng, 0, 5, [face()], stats=moving)
    events, t = run(eng, t, 9.5, [face()], stats=FrameStats(100.0, 40.0, b"same"))
    assert events == []
    events, t = run(eng, t, 3, [face()], stats=FrameStats(100.0, 40.0, b"same"))
    assert [(e.type, e.state, e.details["reason"]) for e in events] == [("camera_tamper", "open", "frozen")]
    events, t = run(eng, t, 5, [face()], stats=moving)
    assert [(e.type, e.state) for e in events] == [("camera_tamper", "closed")]


def test_no_stats_leaves_tamper_undecided():
    eng = AlertEngine("desk-01", TH)
    events, t = run(eng, 0, 5, [face()], stats=FrameStats(3.0, 1.0, b"x"))
    assert [e.state for e in events] == ["open"]
    events, t = run(eng, t, 20, [face()], stats=None)
    assert events == []


def test_close_all_on_disconnect_and_a_fresh_start():
    eng = AlertEngine("desk-01", TH)
    events, t = run(eng, 0, 6, [face("unknown", None), face("unknown", None, 2)])
    assert {e.type for e in events} == {"unknown_face", "multiple_faces"}
    closed = eng.close_all(t)
    assert {(e.type, e.state, e.details["closed_by"]) for e in closed} == {
        ("unknown_face", "closed", "station_disconnected"), ("multiple_faces", "closed", "station_disconnected")}
    assert eng.open_incidents() == {} and eng.close_all(t + 1) == []


def test_at_most_one_event_per_update_interval_under_a_long_incident():
    """A stranger at the desk for 10 minutes whose face keeps growing: one open, few updates, no per-frame messages."""
    eng = AlertEngine("desk-01", TH)
    events = []
    for i in range(600 * FPS):
        t = i / FPS
        events += eng.observe(t, [face("unknown", None, 1, 50 + i // 10)], "alice", OK_STATS, evidence=i)
    kinds = [(e.type, e.state) for e in events]
    assert kinds.count(("unknown_face", "open")) == 1
    updates = kinds.count(("unknown_face", "update"))
    assert 1 <= updates <= 600 / TH.update_every_s
    times = [e.event_id for e in events]
    assert len(times) == len(set(times))


def test_disabled_types_and_validation():
    eng = AlertEngine("desk-01", AlertThresholds(enabled=frozenset({"no_face"}), no_face_after_s=1))
    events, _ = run(eng, 0, 10, [face("unknown", None), face("unknown", None, 2)])
    assert events == []
    with pytest.raises(ValueError, match="no_face_after_s"):
        AlertThresholds(no_face_after_s=-1)
    with pytest.raises(ValueError, match="unknown alert type"):
        AlertThresholds(enabled=frozenset({"fire"}))
    assert set(ALERT_TYPES) == set(AlertThresholds().enabled)


def test_frame_stats_on_real_jpegs():
    import cv2
    import numpy as np

    from recognizer.alerting.monitor import frame_stats
    from tests.conftest import FIXTURES

    photo = (FIXTURES / "stranger_kit.jpg").read_bytes()
    s = frame_stats(photo)
    assert s is not None and s.mean > 30 and s.std > 20 and len(s.thumb) == 256
    black = cv2.imencode(".jpg", np.zeros((480, 640, 3), np.uint8))[1].tobytes()
    b = frame_stats(black)
    assert b is not None and b.mean < 2 and b.std < 2
    assert frame_stats(photo) == s  # identical frames give identical thumbnails (frozen detection)
    assert frame_stats(b"not a jpeg") is None


def test_camera_lost_opens_one_tamper_incident_at_once_and_closes_when_the_camera_is_back():
    eng = AlertEngine("desk-01", TH)
    events, t = run(eng, 0, 5, [face()])
    assert events == []
    lost = eng.camera_state(t, True, "alice", {"error": "stream: cannot open"}, evidence="last-frame", since=t - 2.5)
    assert [(e.type, e.state) for e in lost] == [("camera_tamper", "open")]
    assert lost[0].details["reason"] == "camera_lost" and lost[0].details["error"] == "stream: cannot open"
    assert lost[0].started_at == t - 2.5 and lost[0].image == "last-frame"
    assert eng.camera_state(t + 5, True, "alice") == []  # told again (a heartbeat): still one incident
    back = eng.camera_state(t + 60, False, "alice")
    assert [(e.state, e.alert_id) for e in back] == [("closed", lost[0].alert_id)]
    assert back[0].details["closed_by"] == "camera_back" and back[0].details["duration_s"] == 62.5
    assert eng.camera_state(t + 61, False, "alice") == []  # "ok" without a loss: nothing
    events, _ = run(eng, t + 61, 10, [face()])
    assert of(events, "camera_tamper") == []  # good frames after it: nothing reopens


def test_camera_lost_joins_an_open_black_frame_incident():
    eng = AlertEngine("desk-01", TH)
    events, t = run(eng, 0, 5, [], stats=FrameStats(mean=2.0, std=1.0, thumb=b""))
    opened = of(events, "camera_tamper")
    assert [e.state for e in opened] == ["open"]
    assert eng.camera_state(t, True, "alice") == []  # the same incident, one more reason
    back = eng.camera_state(t + 3, False, "alice")
    assert back[0].alert_id == opened[0].alert_id and back[0].details["reasons"] == ["black", "camera_lost"]


def test_alert_event_wire_shape_round_trips() -> None:
    """What the recognizer's outbox sends is exactly what the dashboard parses (one shape, shared.alert_wire)."""
    import json

    from shared.alert_wire import AlertEvent
    from shared.alert_wire import encode_event, parse_meta

    ev = AlertEvent("a" * 32, "b" * 32, "desk-01", "alice", "eyes_closed", "closed", 1_780_000_000.25,
                    1_780_000_012.5, {"tracks": [3], "names": ["alice"]})
    msg = parse_meta(json.dumps(encode_event(ev)))
    assert (msg.event_id, msg.alert_id, msg.station_id, msg.login_name, msg.type, msg.state) == \
        ("a" * 32, "b" * 32, "desk-01", "alice", "eyes_closed", "closed")
    assert msg.started_at.timestamp() == 1_780_000_000.25 and msg.ended_at.timestamp() == 1_780_000_012.5
    assert msg.details == {"tracks": [3], "names": ["alice"]}
