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
    # parts built from a setting that is not an `into` field
    from recognizer.server.pacing import PacingParams
    from recognizer.settings import setting
    from recognizer.vision.regions import RegionParams

    assert RegionParams().full_every == setting("full_detect_every").default == defaults.pipeline.regions.full_every
    assert RegionParams().search_every == setting("search_every").default == defaults.pipeline.regions.search_every
    assert (RegionParams().full_every_max == setting("full_detect_every_max").default
            == defaults.pipeline.regions.full_every_max)
    assert (PacingParams().station_fps, PacingParams().max_fps) == (
        setting("station_fps").default, setting("max_station_fps").default)


def test_the_sign_in_check_and_liveness_defaults_are_the_recognizers() -> None:
    match, verify = OpenSetParams(), VerifyParams()
    assert (verify.accept_distance, verify.margin) == (match.accept_distance, match.margin)
    assert (LivenessParams().first_blink_timeout_s, LivenessParams().blink_timeout_s) == (30.0, 60.0)
    from edge.config import EdgeConfig  # the edge asks for the check's frames and time

    assert (EdgeConfig.verify_frames, EdgeConfig.verify_timeout) == (verify.frames, verify.timeout_s)
    assert set(DETECTORS) == set(ENGINE_DETECTORS) and set(LIVENESS_METHODS) == set(METHODS)


def test_the_sign_in_check_bounds_are_declared_once_for_the_edge_and_the_recognizer() -> None:
    """The edge asks for the check's frames and time (--verify-frames, --verify-timeout) and the recognizer checks
    what it is asked (VerifyParams): one declaration each (shared.signin), so no value one accepts is refused by the
    other. The check's distances are the recognizer's --accept-distance and --margin, with their bounds."""
    from edge.config import EdgeConfig, load_config
    from shared.config import settings_of
    from shared.signin import VERIFY_FRAMES, VERIFY_TIMEOUT

    edge = {s.dest: s for s in settings_of(EdgeConfig)}
    assert (edge["verify_frames"], edge["verify_timeout"]) == (VERIFY_FRAMES, VERIFY_TIMEOUT)
    for flag, field, good, bad in (("--verify-frames", "frames", (1, 300), (0, 301)),
                                   ("--verify-timeout", "timeout_s", (1.0, 600.0), (0.5, 601.0))):
        for value in good:  # the edge's bounds are the recognizer's, both ends
            load_config([flag, str(value)], {})
            VerifyParams(**{field: value})
        for value in bad:
            with pytest.raises(ConfigError, match=f"{flag}: {value!r} is out of range"):
                load_config([flag, str(value)], {})
            with pytest.raises(ConfigError, match=f"{field} \\({flag}\\): {value!r} is out of range"):
                VerifyParams(**{field: value})
    for field, good, bad in (("accept_distance", (0.01, 2.0), (0.0, 2.01)), ("margin", (0.0, 1.0), (-0.01, 1.01))):
        for value in good:  # the same bounds as the recognizer's own setting (OpenSetParams)
            VerifyParams(**{field: value})
            OpenSetParams(**{"tolerance": 2.0, field: value})  # (its accept_distance is also <= its tolerance)
        for value in bad:
            with pytest.raises(ConfigError, match=f"{field} \\(--{field.replace('_', '-')}\\)"):
                VerifyParams(**{field: value})
            with pytest.raises(ConfigError):
                OpenSetParams(**{"tolerance": 2.0, field: value})


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


def test_replay_lists_only_the_settings_it_uses() -> None:
    """facemon-replay's --help leaves out the recognizer's network, dashboard, outbox and pool flags (it ignores
    them); they still parse, so one command line serves both programs."""
    text = replay_parser().format_help()
    for used in ("--accept-distance", "--detector", "--first-blink-timeout", "--unknown-after", "--review-after",
                 "--full-detect-every", "--alert-types", "--index", "--liveness-method", "--sweep-period"):
        assert used in text, used
    for ignored in ("--port", "--token", "--dashboard-url", "--outbox", "--station-auth", "--health-port",
                    "--max-station-fps", "--webhook-url", "--workers", "--gallery", "--credential-grace"):
        assert f"{ignored} " not in text and f"{ignored}\n" not in text, ignored
    args = replay_parser().parse_args(["clip.mp4", "--port", "9", "--dashboard-url", "http://x"])
    assert (args.port, args.dashboard_url) == (9, "http://x")


def test_calibrate_recommends_flags_the_recognizer_takes() -> None:
    tuned = dataclasses.replace(OpenSetParams(), accept_distance=0.52, margin=0.05, min_votes=1, person_slack=0.03)
    line = recommended_flags(tuned)
    assert line == "--accept-distance 0.52 --margin 0.05 --min-votes 1 --person-slack 0.03"
    assert RecognizerSettings.from_args(build_parser().parse_args(line.split())).match == tuned
    assert as_flags({"pipeline.liveness": False}) == "--no-liveness"


def test_every_part_checks_the_bounds_its_setting_declares() -> None:
    """Bounds are written once (recognizer/settings.py): each part's config refuses a value just outside its
    setting's bounds, naming the field and the flag, and takes the bound itself."""
    from recognizer.app import RecognizerSettings as RS

    defaults = RS()
    checked = 0
    for s in SETTINGS:
        for target in s.into:
            section, _, name = target.rpartition(".")
            part = getattr(defaults, section) if section else defaults
            build = (lambda v, part=part, name=name: dataclasses.replace(part, **{name: v}))
            for outside in [b for b in ((s.ge - 1) if s.ge is not None else None, s.gt,
                                       (s.le + 1) if s.le is not None else None) if b is not None]:
                with pytest.raises(ValueError, match=rf"{name} \({s.flag}\)"):
                    build(type(getattr(part, name))(outside) if s.parse is int else float(outside))
                checked += 1
            for inside in [b for b in (s.ge, s.le) if b is not None]:  # the bound itself is within the bounds
                try:
                    build(int(inside) if s.parse is int else float(inside))
                except ValueError as exc:  # only a rule between two values may refuse it (station_fps <= max ...)
                    assert f"{name} ({s.flag})" not in str(exc)
            if s.choices:
                with pytest.raises(ValueError, match=rf"{name} \({s.flag}\): 'bogus' is not one of"):
                    build("bogus")
    assert checked > 40
    from recognizer.vision.regions import RegionParams

    with pytest.raises(ValueError, match=r"full_every \(--full-detect-every\): 0 is out of range 1..1000"):
        RegionParams(full_every=0)


def test_help_prints_each_default_from_its_declaration() -> None:
    """No help text restates a default by hand; --help prints it from the declaration."""
    import re

    from dashboard.config import DashboardConfig
    from edge.config import EdgeConfig, settings as edge_settings
    from shared.config import settings_of

    for s in (*SETTINGS, *edge_settings(), *settings_of(DashboardConfig)):
        assert not re.search(r"\(default\b|default \d", s.help), f"{s.flag}: the help restates its default: {s.help!r}"
    from edge.config import build_parser as edge_parser

    text = edge_parser({}).format_help()
    assert "(default: 8001) [FACEMON_EDGE_WEB_PORT]" in " ".join(text.split())
    assert "(default: 127.0.0.1:8002) [FACEMON_EDGE_RECOGNIZER]" in " ".join(text.split())
    assert EdgeConfig.web_port == 8001


def test_the_edge_settings_are_its_config_fields() -> None:
    """Each edge setting is an EdgeConfig field declared once: no flag and no variable gives EdgeConfig's defaults
    (the station id is the host name); flags and variables are checked by the field's bounds."""
    import socket

    from edge.config import RECOGNIZER, EdgeConfig, build_parser as edge_parser, load_config, settings as edge_settings

    config = load_config([], {})
    assert config == EdgeConfig(station=socket.gethostname().split(".")[0] or "edge")
    assert RECOGNIZER.default == f"{EdgeConfig.recognizer_host}:{EdgeConfig.recognizer_port}"
    for s in edge_settings():
        if s is not RECOGNIZER and not s.computed:
            assert getattr(EdgeConfig, s.dest) == s.default, s.flag
    envs = {env for _, env in edge_parser({})._settings}
    assert {"FACEMON_EDGE_RECOGNIZER", "FACEMON_EDGE_WEB_PORT", "FACEMON_EDGE_STATION", "FACEMON_EDGE_AUTH"} <= envs
    assert "FACEMON_EDGE_RECOGNIZER_PORT" not in envs  # set through --recognizer only
    with pytest.raises(ConfigError, match="FACEMON_EDGE_MAX_SESSIONS: 1 is out of range 2..10000"):
        load_config([], {"FACEMON_EDGE_MAX_SESSIONS": "1"})
    with pytest.raises(ConfigError, match=r"--recognizer \(port\): 70000 is out of range 1..65535"):
        load_config(["--recognizer", "host:70000"], {})
    with pytest.raises(ConfigError, match="--web-threads: 2 is out of range 4..256"):
        EdgeConfig(web_threads=2)
    # the sign-in part's own defaults are the edge's settings' (it is built from them: edge/runtime.py)
    from edge.auth import AuthSettings

    auth = AuthSettings()
    assert (auth.verify_frames, auth.verify_timeout_s, auth.session_idle_s, auth.session_max_s, auth.max_sessions) == (
        EdgeConfig.verify_frames, EdgeConfig.verify_timeout, EdgeConfig.session_idle, EdgeConfig.session_max,
        EdgeConfig.max_sessions)


def test_the_dashboard_settings_are_its_config_fields() -> None:
    """Each dashboard setting is a DashboardConfig field declared once: no variable gives its defaults; a variable
    is converted and checked by the field's declaration; the serve flags' help comes from it."""
    from dashboard.__main__ import build_parser as dashboard_parser
    from dashboard.config import ENV_PREFIX, DashboardConfig
    from shared.config import settings_of

    assert DashboardConfig.from_env({}) == DashboardConfig()
    for s in settings_of(DashboardConfig):
        assert getattr(DashboardConfig, s.dest) == s.default and s.env(ENV_PREFIX) == ENV_PREFIX + s.dest.upper()
    with pytest.raises(ConfigError, match="FACEMON_DASHBOARD_WEB_THREADS: 2 is out of range 4..256"):
        DashboardConfig.from_env({"FACEMON_DASHBOARD_WEB_THREADS": "2"})
    with pytest.raises(ConfigError, match="vacuum_interval_s: 10.0 is out of range 0 or 60..2592000"):
        DashboardConfig(vacuum_interval_s=10.0)
    assert DashboardConfig(vacuum_interval_s=0, offline_after_s=0).vacuum_interval_s == 0  # 0: off
    assert DashboardConfig.from_env({"FACEMON_DASHBOARD_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    serve = next(a for a in dashboard_parser()._actions if a.dest == "command").choices["serve"]
    text = " ".join(serve.format_help().split())
    assert "(default: 16) [env FACEMON_DASHBOARD_WEB_THREADS]" in text and "(default: 5000)" in text
