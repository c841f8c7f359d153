"""Names stay out of the logs unless FACEMON_LOG_NAMES=1: the recognizer's alert line and a node's enrolment line
carry a pseudonym, stable within a run, that a list of names cannot be hashed into."""
from __future__ import annotations

import io
import logging

import pytest

from shared.alert_wire import AlertEvent
from shared.lognames import ENV, who


def test_who_is_a_stable_pseudonym_unless_names_are_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert who("alice") == who("alice") != who("bob")
    assert who("alice").startswith("person:") and "alice" not in who("alice")
    assert who("") == "" and who(None) == ""
    monkeypatch.setenv(ENV, "1")
    assert who("alice") == "alice"


def test_recognizer_info_lines_name_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger("recognizer")
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    try:
        from recognizer.alerting import monitor

        ev = AlertEvent(event_id="e" * 32, alert_id="a" * 32, station_id="desk-01", login_name="alice_smith",
                        type="wrong_person", state="open", started_at=1.0e9, ended_at=None,
                        details={"expected": "alice_smith", "names": ["bob_jones", "unknown"]})
        sent: list = []
        mon = monitor.AlertMonitor.__new__(monitor.AlertMonitor)  # only _send's logging is exercised here
        mon._emit = sent.append
        mon._send([ev])
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
    text = out.getvalue()
    assert sent and "alert wrong_person open station=desk-01" in text
    assert "alice_smith" not in text and "bob_jones" not in text, text
