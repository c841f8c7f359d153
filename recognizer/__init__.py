"""The recognizer (lab workstation). Floor plan:

- `vision/`    seeing faces: decode, detect, sweep, track, encode, annotate
- `liveness/`  blink liveness per tracked face
- `identity/`  the enrolled index, open-set matching, enrolment, the pool's gallery
- `station/`   one station: the per-frame composer, its session without sockets, the sign-in face check, and the
               types that cross layers (FrameOutcome, StationSnapshot)
- `alerting/`  alert rules, the monitor, the persistent outbox and its sinks
- `server/`    sockets and threads: the handshake gate, station connections, trust, /healthz
- `settings.py` every setting, declared once; `app.py` wiring of the process; `__main__.py` facemon-recognizer
- `tools/`     offline: facemon-replay, facemon-calibrate, training, the anti-spoof model

Lower layers never import higher ones (the README's layers row; scripts/import_graph.py checks it).
"""
