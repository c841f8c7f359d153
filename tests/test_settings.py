"""recognizer/settings.py: each setting declared once; the parts' own defaults are the product's."""
from __future__ import annotations

import dataclasses

import pytest

from recognizer.app import RecognizerSettings
from recognizer.identity.match import OpenSetParams
from recognizer.liveness.blinks import METHODS, LivenessParams
from recognizer.station.verify import VerifyParams
from recognizer.settings import DETECTORS, ENV_PREFIX, LIVENESS_METHODS, SETTINGS, as_flags, build_parser
from recognizer.tools.calibrate import recommended_flags
from recognizer.tools.replay import build_parser as replay_parser
from recognizer.vision.detect import DETECTORS as ENGINE_DETECTORS
from shared.config import ConfigError


def test_every_default_of_a_part_is_the_settings_default() -> None:
    """A part's config class (OpenSetParams, LivenessParams, PipelineConfig ...) built with no arguments is the
    product: the value a setting's flag defaults to is the field's own default, field by field."""
    defaults = RecognizerSettings()
    for s in SETTINGS:
        for target in s.into:
            section, _, name = target.rpartition(".")
            part = getattr(defaults, section) if section else defaults
            value = getattr(part, name)
            assert value == (type(value)(s.default) if not isinstance(value, (int, float, bool)) else s.default), (
                f"{type(part).__name__}.{name} defaults to {value!r} but {s.flag} to {s.default!r}")
    # and as a whole: no flag and no variable gives exactly the parts' defaults
    assert RecognizerSettings.from_args(build_parser().parse_args([])) == defaults


def test_the_sign_in_check_and_liveness_defaults_are_the_recognizers() -> None:
    match, verify = OpenSetParams(), VerifyParams()
    assert (verify.accept_distance, verify.margin) == (match.accept_distance, match.margin)
    assert (LivenessParams().first_blink_timeout_s, LivenessParams().blink_timeout_s) == (30.0, 60.0)
    from edge.config import EdgeConfig  # the edge asks for the check's frames and time

    assert (EdgeConfig.verify_frames, EdgeConfig.verify_timeout) == (verify.frames, verify.timeout_s)
    assert set(DETECTORS) == set(ENGINE_DETECTORS) and set(LIVENESS_METHODS) == set(METHODS)


def test_every_setting_has_its_variable_and_checks_its_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = {a.option_strings[0]: a for a in build_parser()._actions if a.option_strings}
    for s in SETTINGS:
        assert s.flag in flags and s.env(ENV_PREFIX) in flags[s.flag].help
    monkeypatch.setenv("FACEMON_RECOGNIZER_ACCEPT_DISTANCE", "0.5")
    monkeypatch.setenv("FACEMON_RECOGNIZER_DOWNSCALE", "0.5")
    settings = RecognizerSettings.from_args(build_parser().parse_args(["--person-slack", "0.03"]))
    assert (settings.match.accept_distance, settings.match.person_slack, settings.pipeline.detect_scale) == (0.5, 0.03, 0.5)
    with pytest.raises(ConfigError, match="--downscale: 2.0 is out of range 0.25..1"):
        build_parser().parse_args(["--downscale", "2"])
    monkeypatch.setenv("FACEMON_RECOGNIZER_PERSON_SLACK", "0.5")
    with pytest.raises(ConfigError, match="FACEMON_RECOGNIZER_PERSON_SLACK: 0.5 is out of range 0..0.2"):
        build_parser().parse_args([])
    with pytest.raises(ConfigError, match="--detector: 'bogus' is not one of hog, hog"):
        build_parser().parse_args(["--detector", "bogus"])


def test_replay_takes_every_recognizer_setting_from_the_same_table() -> None:
    args = replay_parser().parse_args(["clip.mp4", "--first-blink-timeout", "12", "--no-liveness"])
    settings = RecognizerSettings.from_args(args)
    assert settings.liveness.first_blink_timeout_s == 12.0 and settings.pipeline.liveness is False
    assert settings.liveness.blink_timeout_s == 60.0


def test_calibrate_recommends_flags_the_recognizer_takes() -> None:
    tuned = dataclasses.replace(OpenSetParams(), accept_distance=0.52, margin=0.05, min_votes=1, person_slack=0.03)
    line = recommended_flags(tuned)
    assert line == "--accept-distance 0.52 --margin 0.05 --min-votes 1 --person-slack 0.03"
    assert RecognizerSettings.from_args(build_parser().parse_args(line.split())).match == tuned
    assert as_flags({"pipeline.liveness": False}) == "--no-liveness"
