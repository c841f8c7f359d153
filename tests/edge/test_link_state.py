"""edge.link_state without sockets, threads or clocks: events in (time passed in), actions out."""
from __future__ import annotations

import pytest

from edge.link_state import (
    Close,
    LinkSettings,
    LinkState,
    Publish,
    Refused,
    Send,
    VerifyDone,
    Welcome,
    hello,
    read_welcome,
)
from shared import protocol
from shared.names import InvalidName
from shared.protocol import MalformedMessage, Message, MessageKind
from shared.results import FaceResult, faces_to_wire

WALL = 1_700_000_000.0  # POSIX seconds at monotonic 0 in these tests


def settings(**overrides) -> LinkSettings:
    return LinkSettings(station="desk-1", login="alice", token="t0ken", **overrides)


def online(window: int = 2, heartbeat_s: float = 1.0, **overrides) -> tuple[LinkState, int]:
    state = LinkState(settings(**overrides), WALL)
    state.connecting(WALL)
    number = state.connected(Welcome(window, heartbeat_s, "rec-1"), 0.0, WALL)
    return state, number


def sent(actions: list) -> list[Message]:
    return [a.message for a in actions if isinstance(a, Send)]


def offer(state: LinkState, seq: int, now: float, ts: float = WALL) -> Message:
    (message,) = sent(state.send_frame(seq, ts, b"jpeg", now))
    return message


# ---- handshake ----

def test_hello_carries_the_station_login_and_token() -> None:
    h = hello(settings(credential="desk-cred")).header
    assert (h["station"], h["login"], h["token"], h["credential"]) == ("desk-1", "alice", "t0ken", "desk-cred")


def test_welcome_sets_the_smaller_window_and_a_floor_on_the_heartbeat() -> None:
    assert read_welcome(protocol.welcome("rec", 8, 0.05), settings(max_in_flight=2)) == Welcome(2, 0.2, "rec")
    assert read_welcome(protocol.welcome("rec", 1, 3), settings(max_in_flight=2)) == Welcome(1, 3.0, "rec")
    no_say = Message(MessageKind.WELCOME, {"protocol": protocol.PROTOCOL_VERSION})
    assert read_welcome(no_say, settings(max_in_flight=3, default_heartbeat_s=4.0)) == Welcome(3, 4.0, "")


def test_a_refusal_or_a_wrong_reply_fails_the_handshake_with_its_reason() -> None:
    with pytest.raises(Refused) as refused:
        read_welcome(protocol.refuse("bad_token", "wrong token for station desk-1"), settings())
    assert refused.value.code == "bad_token" and "wrong token" in refused.value.reason
    with pytest.raises(ConnectionError, match="during the handshake"):
        read_welcome(None, settings())
    with pytest.raises(MalformedMessage, match="expected WELCOME, got RESULT"):
        read_welcome(protocol.result(1, 0.0, []), settings())


# ---- the window ----

def test_the_window_bounds_frames_in_flight_and_a_result_frees_a_slot() -> None:
    state, _ = online(window=2)
    assert state.ready_to_send and state.last_seq == 0
    assert offer(state, 1, 0.1).header == {"seq": 1, "ts": WALL}
    offer(state, 5, 0.2)  # frames 2-4 were captured meanwhile: skipped, never queued
    assert not state.ready_to_send and not state.make_room(0.3)
    assert state.status(0.3, WALL)["in_flight"] == 2 and state.last_seq == 5
    state.receive(protocol.result(1, WALL + 0.1, []), 0.4, WALL + 0.4)
    assert state.ready_to_send
    status = state.status(0.4, WALL + 0.4)
    assert (status["frames_sent"], status["frames_skipped"], status["in_flight"], status["window"]) == (2, 3, 1, 2)


def test_frames_unanswered_past_the_result_timeout_stop_counting() -> None:
    state, _ = online(window=1, heartbeat_s=100.0, result_timeout_s=10.0)
    offer(state, 1, 0.0)
    assert not state.make_room(9.9)
    assert state.make_room(10.1) and state.status(10.1, WALL)["in_flight"] == 0


# ---- heartbeats, silence, camera ----

def test_a_heartbeat_goes_when_nothing_was_sent_for_its_period() -> None:
    state, _ = online(heartbeat_s=1.0)
    assert state.deadline() == 1.0
    assert state.tick(0.9, WALL) == []
    offer(state, 1, 0.5)  # a frame counts as traffic
    assert state.tick(1.2, WALL) == [] and state.deadline() == 1.5
    (beat,) = sent(state.tick(1.5, WALL + 1.5))
    assert beat.kind == MessageKind.HEARTBEAT and beat.header == {"ts": WALL + 1.5}
    assert state.tick(2.0, WALL) == []


def test_three_heartbeats_of_silence_close_the_connection_and_traffic_keeps_it() -> None:
    state, number = online(heartbeat_s=1.0)
    state.receive(protocol.heartbeat(WALL), 2.0, WALL + 2)
    assert not [a for a in state.tick(4.9, WALL) if isinstance(a, Close)]
    assert state.deadline() == pytest.approx(5.0)  # a heartbeat just went: the silence limit comes first
    actions = state.tick(5.1, WALL)
    assert Close("no answer from the recognizer for 3.1 s") in actions
    assert state.dead() and state.dead(number) and state.deadline() is None
    reason, refused, _ = state.disconnected(number, False, WALL + 6)
    assert (reason, refused) == ("no answer from the recognizer for 3.1 s", False)
    assert state.status(6, WALL)["state"] == "offline" and state.reason == reason


def test_a_camera_change_is_told_at_once_and_then_rides_on_each_heartbeat() -> None:
    state, _ = online(heartbeat_s=1.0)
    assert state.report_camera(None, 0.1, WALL) == []  # not known yet: nothing to say
    (told,) = sent(state.report_camera({"state": "ok", "error": None, "lost_s": None}, 0.2, WALL))
    assert told.header["camera"] == "ok"
    assert state.report_camera({"state": "ok", "error": None, "lost_s": None}, 0.3, WALL) == []
    lost = {"state": "lost", "error": "read failed", "lost_s": 2.5}
    (told,) = sent(state.report_camera(lost, 0.4, WALL))
    assert (told.header["camera"], told.header["camera_error"], told.header["camera_lost_s"]) == ("lost", "read failed", 2.5)
    assert state.tick(1.3, WALL) == []
    (beat,) = sent(state.tick(1.5, WALL))
    assert beat.header["camera"] == "lost"


# ---- results ----

def test_a_result_publishes_its_picture_with_its_faces_and_measures_latency() -> None:
    state, _ = online()
    offer(state, 1, 1.0, ts=WALL + 0.9)
    faces = [FaceResult((1, 2, 3, 4), 7, "known", "alice", 0.41, 0.8, "live", 2)]
    actions = state.receive(protocol.result(1, WALL + 0.9, faces_to_wire(faces), b"annotated"), 1.2, WALL + 1.2)
    assert actions == [Publish(b"annotated", WALL + 1.2, faces, 1)]
    status = state.status(1.2, WALL + 1.5)
    assert status["latency_ms"] == pytest.approx(300.0) and status["faces"] == faces_to_wire(faces)
    assert status["results"] == 1 and status["last_result_age_s"] == pytest.approx(0.3)
    # a server that does not echo ts: latency from our own send time
    offer(state, 2, 2.0)
    assert state.receive(protocol.result(2, 0, [], error="bad jpeg"), 2.05, WALL + 2.05) == []
    status = state.status(2.05, WALL + 2.05)
    assert status["latency_ms"] == pytest.approx(50.0) and status["last_error"] == "bad jpeg"
    assert status["latency_avg_ms"] == pytest.approx(0.8 * 300 + 0.2 * 50, abs=0.1)


def test_the_edge_asks_for_results_without_a_picture_and_draws_the_faces_itself() -> None:
    """HELLO annotate false (docs/protocol.md): a RESULT without a picture asks the shell to draw the faces on the
    frame sent as that seq; one with a picture (an older recognizer) is shown as it comes; an error draws nothing."""
    assert hello(settings()).header["annotate"] is False
    assert "annotate" not in hello(settings(edge_draws=False)).header  # absent: the recognizer annotates
    state, _ = online()
    faces = [FaceResult((1, 2, 3, 4), 7, "known", "alice", 0.41, 0.8, "live", 2)]
    offer(state, 1, 1.0)
    assert state.receive(protocol.result(1, WALL, faces_to_wire(faces)), 1.1, WALL + 1.1) == [
        Publish(b"", WALL + 1.1, faces, 1)]
    offer(state, 2, 2.0)
    assert state.receive(protocol.result(2, WALL, faces_to_wire(faces), b"jpeg"), 2.1, WALL + 2.1) == [
        Publish(b"jpeg", WALL + 2.1, faces, 2)]
    offer(state, 3, 3.0)
    assert state.receive(protocol.result(3, WALL, [], error="bad_image: x"), 3.1, WALL + 3.1) == []
    state, _ = online(edge_draws=False)
    offer(state, 1, 1.0)
    assert state.receive(protocol.result(1, WALL, faces_to_wire(faces)), 1.1, WALL + 1.1) == []


def test_a_malformed_result_closes_the_connection_with_a_reason() -> None:
    state, _ = online()
    actions = state.receive(Message(MessageKind.RESULT, {"seq": "one", "ts": 0, "faces": []}), 1.0, WALL)
    (close,) = actions
    assert isinstance(close, Close) and close.reason.startswith("recognizer sent a bad message:")
    assert state.dead()


@pytest.mark.parametrize("face, says", [
    ({"box": [1, 2, 3], "track": 1, "state": "known"}, "box"),
    ({"box": [1, 2, 3, 4], "track": 1, "state": "famous"}, "state must be one of"),
    ({"box": [1, 2, 3, 4], "track": 1, "state": "known", "distance": "near"}, "distance"),
    ("alice", "JSON object"),
])
def test_a_result_with_a_malformed_face_closes_the_connection_and_says_which(face, says) -> None:
    state, _ = online()
    offer(state, 1, 1.0)
    (close,) = state.receive(protocol.result(1, WALL, [face], b"annotated"), 1.2, WALL)
    assert isinstance(close, Close) and close.reason.startswith("recognizer sent a bad message: RESULT: faces[0]")
    assert says in close.reason and state.dead() and state.status(1.3, WALL)["faces"] == []


def test_replies_arriving_a_byte_at_a_time_are_handled_like_whole_ones() -> None:
    state, _ = online(window=1)
    offer(state, 7, 0.0)
    wire = protocol.encode(protocol.heartbeat(WALL)) + protocol.encode(protocol.result(7, WALL, [], b"jpg"))
    decoder, actions = protocol.Decoder(), []
    for i in range(len(wire)):
        decoder.feed(wire[i:i + 1])
        for message in decoder.messages():
            actions += state.receive(message, 0.5, WALL + 0.5)
    assert actions == [Publish(b"jpg", WALL + 0.5, [], 7)] and state.ready_to_send


# ---- refusals and state transitions ----

def test_a_refuse_mid_connection_leaves_the_state_refused_with_its_reason() -> None:
    state, number = online()
    assert state.status(0, WALL)["state"] == "online" and state.status(0, WALL)["connects"] == 1
    (close,) = state.receive(protocol.refuse("revoked", "station revoked"), 1.0, WALL)
    assert close == Close("refused: station revoked (revoked)")
    assert state.close(number, "connection closed") == []  # the first reason wins
    reason, refused, _ = state.disconnected(number, True, WALL + 1)
    assert refused and reason == "refused: station revoked (revoked)"
    status = state.status(1, WALL + 1)
    assert (status["state"], status["reason"], status["since"]) == ("refused", reason, WALL + 1)


def test_a_draining_node_closes_the_connection_for_a_prompt_reconnect_not_a_refusal() -> None:
    state, number = online()
    (close,) = state.receive(protocol.error("draining", "this recognizer node is stopping"), 1.0, WALL)
    assert close == Close("recognizer node stopping, moving to another (this recognizer node is stopping)")
    reason, refused, _ = state.disconnected(number, False, WALL + 1)
    assert not refused and reason.startswith("recognizer node stopping")
    assert state.status(2.0, WALL + 1)["state"] == "offline"


def test_a_stale_connections_failure_does_not_touch_the_next_one() -> None:
    state, first = online()
    state.close(first, "send failed: broken pipe")
    state.disconnected(first, False, WALL + 1)
    second = state.connected(Welcome(2, 1.0, "rec-1"), 2.0, WALL + 2)
    assert second != first and state.dead(first) and not state.dead(second)
    assert state.close(first, "send failed: late") == [] and not state.dead()
    assert state.status(2, WALL + 2)["connects"] == 2


def test_states_before_and_after_connecting() -> None:
    state = LinkState(settings(host="10.0.0.5", port=9002), WALL)
    assert (state.status(0, WALL)["state"], state.reason) == ("offline", "not started")
    state.connecting(WALL + 1)
    assert state.reason == "connecting to 10.0.0.5:9002" and state.dead() and not state.ready_to_send
    state.connect_failed("connection refused (is the recognizer running?)", False, WALL + 2)
    assert state.status(2, WALL + 2)["state"] == "offline"
    state.connect_failed("refused: wrong token (bad_token)", True, WALL + 3)
    assert state.status(3, WALL + 3)["state"] == "refused" and state.status(3, WALL + 3)["since"] == WALL + 3
    state.stopped(WALL + 4)
    assert (state.status(4, WALL + 4)["state"], state.reason) == ("offline", "edge stopped")


# ---- enrolment ----

def test_an_enrolment_is_sent_and_its_answer_kept_by_request_id() -> None:
    state, _ = online()
    asked = state.ask_enrol("r1", "  Alice  ", b"face", grant="g1")
    assert isinstance(asked, Send) and asked.message.header == {"request_id": "r1", "name": "Alice", "grant": "g1"}
    assert state.enrol_answer("r1") is None
    box_and_crop = protocol.enrol_result("r1", True, "enrolled", name="Alice", count=3, box=(1, 2, 3, 4), crop=b"crop")
    state.receive(box_and_crop, 1.0, WALL)
    assert state.enrol_answer("r1") == {"ok": True, "reason": "enrolled", "name": "Alice", "count": 3,
                                        "box": [1, 2, 3, 4], "crop": b"crop"}
    state.forget_enrol("r1")
    state.receive(protocol.enrol_result("r1", False, "late", code="grant_used"), 2.0, WALL)  # ignored
    assert state.enrol_answer("r1") is None


def test_enrolments_answered_here_invalid_offline_no_frame_and_lost_with_the_connection() -> None:
    state = LinkState(settings(), WALL)
    assert state.ask_enrol("r0", "../etc", b"face")["code"] == "invalid_name"
    offline = state.ask_enrol("r0", "Alice", b"face")
    assert offline == {"ok": False, "code": "offline", "reason": "recognizer offline: not started", "name": "Alice"}
    number = state.connected(Welcome(2, 1.0, "rec"), 0.0, WALL)
    assert state.ask_enrol("r0", "Alice", None)["code"] == "no_frame"
    assert isinstance(state.ask_enrol("r1", "Alice", b"face"), Send)
    state.close(number, "connection lost: reset")
    state.disconnected(number, False, WALL)
    assert state.enrol_answer("r1") == {"ok": False, "code": "offline",
                                        "reason": "recognizer offline: connection lost: reset"}


# ---- the sign-in face check ----

def test_a_face_check_reports_progress_then_ends_once() -> None:
    state, _ = online()
    (ask,) = sent(state.ask_verify("v1", "alice", 5, 8.0, now=1.0))
    assert ask.header == {"request_id": "v1", "identity": "alice", "frames": 5, "timeout_s": 8.0}
    assert state.verify_progress("v1")["state"] == "pending" and state.verify_progress("other") is None
    state.receive(protocol.verify_result("v1", {"state": "pending", "agreeing": 2, "needed": 5}), 2.0, WALL)
    assert state.verify_progress("v1") == {"state": "pending", "agreeing": 2, "needed": 5}
    done = state.receive(protocol.verify_result("v1", {"state": "passed", "reason": "matched"}), 3.0, WALL)
    assert done == [VerifyDone("v1", {"state": "passed", "reason": "matched"})]
    assert state.verify_progress("v1") is None
    assert state.receive(protocol.verify_result("v1", {"state": "failed"}), 3.1, WALL) == []  # told once


def test_a_new_check_cancels_the_old_one_and_an_offline_edge_starts_none() -> None:
    state, number = online()
    state.ask_verify("v1", "alice", 5, 8.0, now=0.0)
    actions = state.ask_verify("v2", "bob", 5, 8.0, now=1.0)
    assert [type(a) for a in actions] == [Send, VerifyDone, Send]
    assert actions[0].message.header == {"request_id": "v1", "cancel": True}
    assert actions[1] == VerifyDone("v1", {"state": "failed", "reason": "cancelled", "message": "cancelled"})
    with pytest.raises(InvalidName):
        state.ask_verify("v3", "", 5, 8.0, now=1.0)
    _, _, gone = state.disconnected(number, False, WALL)  # the check's state went with the connection
    assert gone == [VerifyDone("v2", {"state": "failed", "reason": "offline",
                                      "message": "recognizer offline: connection closed"})]
    assert state.ask_verify("v4", "alice", 5, 8.0, now=2.0) == []


def test_a_check_the_recognizer_never_finishes_expires_after_its_grace() -> None:
    state, _ = online()
    state.ask_verify("v1", "alice", 5, 8.0, now=10.0)
    assert state.expire_verify(23.0) == []  # 8 s + 5 s grace
    (done,) = state.expire_verify(23.1)
    assert done.request_id == "v1" and done.progress["reason"] == "timed_out"


def test_a_new_login_is_sent_as_session_and_used_by_the_next_hello() -> None:
    state = LinkState(settings(), WALL)
    assert state.set_login("bob") == [] and hello(state.settings).header["login"] == "bob"
    state.connected(Welcome(2, 1.0, "rec"), 0.0, WALL)
    (session,) = sent(state.set_login("carol"))
    assert session.kind == MessageKind.SESSION and session.header == {"login": "carol"}
    assert state.status(0, WALL)["login"] == "carol"


def test_the_recognizers_alert_outbox_state_comes_with_its_heartbeats() -> None:
    state, number = online()
    assert state.status(0.0, WALL)["alerts"] is None  # not said yet
    assert state.receive(protocol.heartbeat(WALL, alerts="disk_full"), 0.1, WALL) == []
    assert state.status(0.1, WALL)["alerts"] == "disk_full"
    state.receive(protocol.heartbeat(WALL, alerts="bogus"), 0.2, WALL)  # not a state: ignored
    assert state.status(0.2, WALL)["alerts"] == "disk_full"
    state.receive(protocol.heartbeat(WALL, alerts="ok"), 0.3, WALL)
    assert state.status(0.3, WALL)["alerts"] == "ok"
    state.close(number, "gone")
    state.connected(Welcome(2, 1.0, "rec-2"), 1.0, WALL)  # another recognizer says its own
    assert state.status(1.0, WALL)["alerts"] is None
