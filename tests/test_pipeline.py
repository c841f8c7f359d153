"""The per-frame pipeline as the server builds it: liveness really runs on every tracked face."""
from __future__ import annotations

import pytest

from recognizer.app import RecognizerSettings, pipeline_factory
from recognizer.vision.detect import EngineConfig
from recognizer.identity.index import IndexStore
from recognizer.station.pipeline import PipelineConfig
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def obama_jpeg() -> bytes:
    return (FIXTURES / "obama_probe.jpg").read_bytes()


def test_liveness_is_fed_from_the_first_frame(engine, sample_index_dir, obama_jpeg) -> None:
    settings = RecognizerSettings(engine=EngineConfig(detector="hog"), index_dir=sample_index_dir)
    t = [100.0]
    pipeline = pipeline_factory(settings, engine, engine, IndexStore(sample_index_dir), clock=lambda: t[0])()
    # FaceLiveness has __len__ (tracks held), 0 at the start: it must be used anyway
    assert pipeline.liveness is not None and len(pipeline.liveness) == 0
    faces = pipeline.process(obama_jpeg).faces
    assert len(pipeline.liveness) == 1
    assert faces[0].liveness == "unknown" and faces[0].blinks == 0
    for _ in range(3):
        t[0] += settings.liveness.first_blink_timeout_s / 2  # a still photo: never blinks
        faces = pipeline.process(obama_jpeg).faces
    assert faces[0].liveness == "no_blink"
    assert faces[0].name == "barack_obama"


def test_liveness_off_says_so(engine, sample_index_dir, obama_jpeg) -> None:
    settings = RecognizerSettings(engine=EngineConfig(detector="hog"), index_dir=sample_index_dir, pipeline=PipelineConfig(liveness=False))
    pipeline = pipeline_factory(settings, engine, engine, IndexStore(sample_index_dir))()
    assert pipeline.liveness is None
    assert pipeline.process(obama_jpeg).faces[0].liveness == "off"


def test_a_named_face_is_checked_again_without_holding_frames(engine, sample_index_dir, obama_jpeg) -> None:
    """With the server's encoder processes, a face still being judged is waited for (named as soon as it can be),
    but the re-check of a decided face goes to a worker while frames go on, and is voted on once it is back; a face
    whose look stayed the same since its last encoding is re-checked every `stable_reencode_every` frames."""
    from recognizer.vision.encoders import EncoderPool

    settings = RecognizerSettings(engine=EngineConfig(detector="hog"), index_dir=sample_index_dir,
                                  pipeline=PipelineConfig(reencode_every=3, stable_reencode_every=5))
    pool = EncoderPool(1)
    try:
        pipeline = pipeline_factory(settings, engine, pool, IndexStore(sample_index_dir))()
        names = [pipeline.process(obama_jpeg).faces[0].name for _ in range(3)]
        assert names[-1] == "barack_obama" and not pipeline._asked  # judged on frames that waited for it
        track = next(iter(pipeline.tracker.tracks.values()))
        decided_at = track.encoded_frame
        outcomes = [pipeline.process(obama_jpeg) for _ in range(5)]  # the same look: the fifth is due a re-check
        assert [o.encoded for o in outcomes] == [0, 0, 0, 0, 1]
        assert len(pipeline._asked) == 1 and track.encoded_frame == decided_at  # asked, not waited for
        pipeline._asked[0].future.result(timeout=60)
        faces = pipeline.process(obama_jpeg).faces
        assert not pipeline._asked and track.encoded_frame == decided_at + 5  # voted, as of the frame it was asked on
        assert faces[0].name == "barack_obama"
    finally:
        pool.close()
