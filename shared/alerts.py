"""The alert vocabulary shared by the recognizer (which raises alerts) and the dashboard (which stores them)."""
from __future__ import annotations

# raised by the recognizer's rules, one incident per station and type
RECOGNIZER_ALERT_TYPES = (
    "unknown_face",    # a face nobody enrolled (certainly: nobody within the vote radius)
    "wrong_person",    # an enrolled person other than the signed-in evaluator
    "multiple_faces",  # more than one face at a desk
    "no_face",         # the desk empty too long
    "no_blink",        # a face that never blinks: possible photo or replay
    "eyes_closed",     # eyes closed far longer than a blink (asleep, or a photo with closed eyes)
    "camera_tamper",   # black, covered, frozen or lost camera
)
# raised by the dashboard itself
DASHBOARD_ALERT_TYPES = (
    "failed_sign_in",   # too many failed desk sign-ins
    "station_offline",  # a desk that had a session is gone (edge unplugged, network down, or its recognizer down)
)
ALERT_TYPES = RECOGNIZER_ALERT_TYPES + DASHBOARD_ALERT_TYPES
ALERT_STATES = ("open", "update", "closed")
# what the recognizer's alert outbox can do now, in status reports (dashboard) and heartbeats (edge)
OUTBOX_STATES = (
    "ok",         # events are stored on disk and delivered
    "disk_full",  # the outbox file cannot grow: events are held in memory (bounded) and delivered from there
    "degraded",   # the file cannot be written for another reason (I/O error, read-only, locked): the same
)
