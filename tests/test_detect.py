"""The dlib engine over real photos, including many threads detecting at once (this once crashed dlib)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import cv2

from tests.conftest import FIXTURES, REPO


def rgb(name: str):
    return cv2.cvtColor(cv2.imread(str(FIXTURES / name)), cv2.COLOR_BGR2RGB)


def test_detect_and_encode_real_photos(engine):
    boxes = engine.detect(rgb("two_people.jpg"), upsample=1)
    assert len(boxes) == 2
    assert (boxes[0][2] - boxes[0][0]) >= (boxes[1][2] - boxes[1][0])  # largest first
    enc = engine.encode(rgb("two_people.jpg"), boxes)
    assert enc.shape == (2, 128) and float(((enc[0] - enc[1]) ** 2).sum()) ** 0.5 > 0.6  # two different people
    marks = engine.landmarks68(rgb("obama_probe.jpg"), engine.detect(rgb("obama_probe.jpg")))
    assert marks[0].shape == (68, 2)


def test_concurrent_detection_with_mixed_settings_does_not_crash():
    """Station threads (upsample 0) and an enrolment (upsample 1) detecting together, in a child process
    so that a crash shows up as a failed test rather than killing the test run."""
    code = textwrap.dedent(f"""
        import threading, cv2
        from recognizer.vision.detect import FaceEngine
        e = FaceEngine()
        img = cv2.cvtColor(cv2.imread({str(FIXTURES / 'two_people.jpg')!r}), cv2.COLOR_BGR2RGB)
        counts = []
        def work(up):
            for _ in range(6):
                counts.append(len(e.detect(img, upsample=up)))
        ts = [threading.Thread(target=work, args=(i % 2,)) for i in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        assert len(counts) == 24 and all(c == 2 for c in counts), counts
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_hog_detectors_are_at_most_one_per_core_however_many_stations_detect_at_once() -> None:
    """16 stations borrowing at once: only `limit` detectors are built (each ~0.7 s of CPU); the rest wait."""
    import threading
    import time

    from recognizer.vision.detect import _Lease

    made, busy, peak = [], [0], [0]
    lock = threading.Lock()
    lease = _Lease(lambda: made.append(object()) or made[-1], limit=2)
    start = threading.Barrier(16)

    def station() -> None:
        start.wait()
        with lease.borrow():
            with lock:
                busy[0] += 1
                peak[0] = max(peak[0], busy[0])
            time.sleep(0.02)
            with lock:
                busy[0] -= 1

    threads = [threading.Thread(target=station) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(made) == 2 and peak[0] == 2
