"""facemon-replay: recorded clips through the recognizer's own per-frame path and alert rules, with its defaults.

These are the product's promises measured on clip time: the enrolled person is named, a stranger is one
incident, a blinking face becomes live, a photo held up is flagged within tens of seconds, a long eye closure
is `eyes_closed` and not a blink.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recognizer.tools.replay import build_parser, run
from tests.clips import held_closure_clip, still_clip
from tests.conftest import FIXTURES, REPO, SAMPLE_CLIP

pytestmark = pytest.mark.timeout(300)


def replay(video: Path, index: Path, *flags: str) -> tuple[list[dict], list[dict], dict]:
    """(frame lines, alert lines, summary) of a replay with the recognizer's defaults plus `flags`."""
    out = io.StringIO()
    args = build_parser().parse_args([str(video), "--index", str(index), *flags])
    summary = run(args, out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines[-1] == {"summary": summary}
    return [x for x in lines if "frame" in x], [x for x in lines if "alert" in x], summary


def opened(alerts: list[dict], kind: str) -> list[dict]:
    return [a for a in alerts if a["alert"] == kind and a["state"] == "open"]


def test_enrolled_person_is_named_and_only_the_stranger_alerts(sample_index_dir) -> None:
    frames, alerts, summary = replay(SAMPLE_CLIP, sample_index_dir, "--login", "lin_manuel_miranda",
                                     "--unknown-after", "0.5")
    assert summary["frames"] == len(frames) == 275
    lin = [t for t in summary["tracks"].values() if t["names"].get("lin_manuel_miranda")]
    assert lin, summary["tracks"]
    for track in lin:
        assert track["named_after_s"] is not None and track["named_after_s"] <= 1.0
        assert track["states"].get("unknown", 0) == 0  # never called a stranger
    lin_tracks = {int(k) for k, t in summary["tracks"].items() if t["names"].get("lin_manuel_miranda")}
    strangers = opened(alerts, "unknown_face")
    assert len(strangers) == 1  # the audience member: one incident, not one per frame
    assert not lin_tracks & set(strangers[0]["details"]["tracks"])
    assert strangers[0]["details"]["distance"] > 0.6
    assert not opened(alerts, "wrong_person")
    face = next(f for fr in frames for f in fr["faces"] if f["state"] == "known")
    assert set(face) >= {"box", "track", "name", "state", "distance", "liveness", "blinks"}
    assert face["liveness"] in ("unknown", "live", "no_blink", "eyes_closed")


def test_still_photo_is_flagged_no_blink_within_tens_of_seconds(tmp_path, sample_index_dir) -> None:
    clip = still_clip(FIXTURES / "obama_probe.jpg", tmp_path / "photo.mp4", seconds=45, fps=4)
    _, alerts, summary = replay(clip, sample_index_dir, "--login", "barack_obama")
    spoof = opened(alerts, "no_blink")
    assert len(spoof) == 1, alerts
    assert spoof[0]["t"] <= 40.0  # 30 s first-blink timeout + 5 s before the alert, by default
    (track,) = summary["tracks"].values()
    assert track["blinks"] == 0 and track["final_liveness"] == "no_blink"
    assert track["names"].get("barack_obama")  # recognised, and still flagged: a photo of the right person
    assert not opened(alerts, "unknown_face") and not opened(alerts, "wrong_person")


@pytest.mark.data
def test_blinking_face_becomes_live_without_invented_blinks(data_dir, sample_index_dir) -> None:
    truth = json.loads((data_dir / "blink" / "annotations.json").read_text())
    for name in ("dinoman_test.mp4", "dinoman_example.mp4"):
        _, alerts, summary = replay(data_dir / "blink" / name, sample_index_dir)
        (track,) = summary["tracks"].values()
        assert track["liveness"].get("live", 0) > 0, (name, track)
        assert 1 <= track["blinks"] <= truth[name]["blink_count"], (name, track)
        assert not opened(alerts, "no_blink") and not opened(alerts, "eyes_closed")


@pytest.mark.data
def test_long_eye_closure_is_eyes_closed_not_a_blink(tmp_path, data_dir, sample_index_dir) -> None:
    # dinoman_test.mp4's only blink (frames 36-39) replaced by its closed frame 37 held for 14 s
    clip = held_closure_clip(data_dir / "blink" / "dinoman_test.mp4", 37, 14.0, tmp_path / "closed.mp4")
    _, alerts, summary = replay(clip, sample_index_dir)
    (track,) = summary["tracks"].values()
    assert track["blinks"] == 0
    assert track["liveness"].get("eyes_closed", 0) > 0
    closed = opened(alerts, "eyes_closed")
    assert len(closed) == 1 and closed[0]["t"] <= 1.5 + 2.0 + 10.0 + 0.5  # closure start + 2 s + 10 s alert wait
    assert not opened(alerts, "no_blink")


def test_console_entry_point_prints_json_lines_and_refuses_bad_input(tmp_path, sample_index_dir) -> None:
    exe = Path(sys.executable).with_name("facemon-replay")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "recognizer.tools.replay"]
    ok = subprocess.run([*cmd, str(SAMPLE_CLIP), "--index", str(sample_index_dir), "--max-frames", "20", "--every", "3"],
                        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    lines = [json.loads(x) for x in ok.stdout.splitlines()]
    assert sum("frame" in x for x in lines) == 20 and "summary" in lines[-1]
    assert all(x["frame"] % 3 == 0 for x in lines if "frame" in x)
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 100)
    for bad in (tmp_path / "missing.mp4", tmp_path / "junk.mp4"):
        r = subprocess.run([*cmd, str(bad), "--index", str(sample_index_dir)], capture_output=True, text=True,
                           timeout=60, cwd=REPO)
        assert r.returncode == 2 and "facemon-replay:" in r.stderr and "Traceback" not in r.stderr


def test_replay_with_sweeps_boxes_the_turned_face_and_raises_no_stranger_for_it(sample_index_dir) -> None:
    """--detector hog+cnn: the sweep runs inline on clip time, so a replay is repeatable. Alex Lacamoire
    (enrolled) in profile at 0.7-1.6 s is never boxed by HOG; the sweep finds him, he is followed, and,
    since only the sweep sees him, a poor match makes him `unsure`, never a stranger alert."""
    frames, alerts, summary = replay(SAMPLE_CLIP, sample_index_dir, "--detector", "hog+cnn", "--max-frames", "50",
                                     "--login", "lin_manuel_miranda", "--unknown-after", "0.5", "--no-liveness")
    # sweeps at 0 s and then every 1 s while HOG sees nobody: the one at 1.0 s (frame 30) finds him
    swept = [f for fr in frames if 30 <= fr["frame"] <= 45 for f in fr["faces"] if f["found_by"] == "sweep"]
    assert len(swept) >= 14, [fr["faces"] for fr in frames[30:46]]
    assert len({f["track"] for f in swept}) == 1  # one track followed between sweeps, not a new one per sweep
    assert all(f["state"] in ("pending", "unsure", "known") for f in swept)
    assert not opened(alerts, "unknown_face")


@pytest.mark.data
def test_a_not_sure_face_is_the_one_crop_the_server_would_queue_for_review(tmp_path, data_dir, engine) -> None:
    """A stranger close to an enrolled person (scarlett_johansson's photo; marissa_mayer enrolled) at a vote radius
    wide enough to reach her: not sure, no alert, and one review line (what the server posts to the review queue)."""
    import numpy as np

    from recognizer.identity.enrol import FOLDER_RULES, face_encoding_for_enrolment
    from recognizer.identity.index import MODEL_ID, FaceIndex, save_index
    from recognizer.vision.imageio import decode_image

    photos = sorted((data_dir / "faces" / "marissa_mayer").glob("*.jpg"))
    encs = [face_encoding_for_enrolment(engine, decode_image(p.read_bytes()), FOLDER_RULES)[0] for p in photos]
    save_index(FaceIndex(("marissa_mayer",) * len(encs), np.asarray(encs, np.float32), tuple(map(str, photos)), MODEL_ID),
               tmp_path / "index")
    clip = still_clip(data_dir / "faces" / "scarlett_johansson" / "deepface_img8.jpg", tmp_path / "s.mp4", seconds=8, fps=4)
    out = io.StringIO()
    summary = run(build_parser().parse_args([str(clip), "--index", str(tmp_path / "index"), "--tolerance", "0.66",
                                             "--review-after", "1", "--no-liveness"]), out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    reviews = [x["review"] for x in lines if "review" in x]
    assert summary["review_faces"] == len(reviews) == 1, reviews
    assert reviews[0]["verdict"] == "unsure" and reviews[0]["candidate"] == "marissa_mayer" and reviews[0]["distance"] <= 0.66
    assert not [x for x in lines if x.get("alert") == "unknown_face"], "not sure is not a stranger: no alert"


def test_replay_opens_an_index_sealed_at_rest_with_the_key_and_refuses_without_it(tmp_path, sample_index_dir) -> None:
    """An index the recognizer sealed (a data key configured) replays with the same key; without it the replay stops
    with a sentence naming the setting, instead of calling every face unknown."""
    from recognizer.identity.index import load_index, save_index
    from shared.crypto import KeyRing, new_key, write_ring

    key_file = tmp_path / "data.key"
    ring = KeyRing((new_key(),))
    write_ring(key_file, ring)
    sealed = tmp_path / "sealed"
    save_index(load_index(sample_index_dir), sealed, ring)
    assert b"lin_manuel_miranda" not in (sealed / "index.npz").read_bytes()
    _, _, summary = replay(SAMPLE_CLIP, sealed, "--data-key-file", str(key_file), "--max-frames", "60")
    assert any(t["names"].get("lin_manuel_miranda") for t in summary["tracks"].values()), summary["tracks"]
    exe = Path(sys.executable).with_name("facemon-replay")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "recognizer.tools.replay"]
    r = subprocess.run([*cmd, str(SAMPLE_CLIP), "--index", str(sealed), "--max-frames", "5"], capture_output=True,
                       text=True, timeout=120, cwd=REPO, env={k: v for k, v in os.environ.items() if not k.startswith("FACEMON_")})
    assert r.returncode == 2 and "facemon-replay:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "key" in r.stderr.lower(), r.stderr
