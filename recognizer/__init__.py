"""The recognizer (lab workstation). Floor plan:

- `vision/`    the per-frame path: decode, detect, track, encode, annotate (`pipeline.py` ties them together)
- `identity/`  the enrolled index, open-set matching, enrolment
- `liveness/`  blink liveness per tracked face
- `alerting/`  alert rules, the monitor, the persistent outbox and its sinks
- `server/`    the TCP server: handshake gate, station sessions, trust, the sign-in face check
- `tools/`     offline: facemon-replay, facemon-calibrate, training, the anti-spoof model
- `app.py`     wiring of the recognizer process; `__main__.py` its command line (facemon-recognizer)
"""
