"""Tracker: the same face keeps its id across frames; new faces get new ids; lost faces end."""
from recognizer.vision.track import Tracker, TrackerParams, iou


def test_iou_basics():
    assert iou((0, 10, 10, 0), (0, 10, 10, 0)) == 1.0
    assert iou((0, 10, 10, 0), (20, 30, 30, 20)) == 0.0
    assert 0.3 < iou((0, 10, 10, 0), (0, 13, 10, 3)) < 0.6


def test_face_keeps_id_while_moving():
    t = Tracker()
    first = t.update([(100, 200, 200, 100)]).tracks[0].id
    for dx in range(5, 60, 5):
        u = t.update([(100, 200 + dx, 200, 100 + dx)])
        assert u.tracks[0].id == first and not u.new


def test_fast_motion_uses_centre_fallback():
    t = Tracker()
    a = t.update([(100, 200, 200, 100)]).tracks[0].id
    u = t.update([(100, 240, 200, 140)])  # moved 40% of its size: IoU ~0.43; still linked
    assert u.tracks[0].id == a
    u = t.update([(100, 285, 200, 185)])  # 45% jump, IoU < 0.3: centre fallback
    assert u.tracks[0].id == a


def test_second_face_gets_new_id_and_order_is_kept():
    t = Tracker()
    a = t.update([(100, 200, 200, 100)]).tracks[0].id
    u = t.update([(100, 500, 200, 400), (102, 202, 202, 102)])
    assert u.tracks[1].id == a
    assert u.tracks[0].id != a and u.new == [u.tracks[0].id]


def test_track_ends_after_max_misses():
    t = Tracker(TrackerParams(max_misses=2))
    a = t.update([(100, 200, 200, 100)]).tracks[0].id
    assert t.update([]).ended == []
    assert t.update([]).ended == []
    assert t.update([]).ended == [a]
    assert t.update([(100, 200, 200, 100)]).tracks[0].id != a


def test_two_faces_swapping_nearby_do_not_steal_ids():
    t = Tracker()
    u = t.update([(100, 200, 200, 100), (100, 420, 200, 320)])
    a, b = u.tracks[0].id, u.tracks[1].id
    u = t.update([(100, 430, 200, 330), (100, 210, 200, 110)])
    assert [x.id for x in u.tracks] == [b, a]
