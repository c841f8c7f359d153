"""shared.config: the one settings loader (flag > environment variable > default) and its one ConfigError."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from dashboard.config import DashboardConfig
from edge.config import load_config
from recognizer.settings import build_parser
from shared.config import ConfigError, SettingsParser, env_settings, parse_bool


def parser(environ: dict) -> SettingsParser:
    p = SettingsParser(prog="t", env_prefix="T_", environ=environ)
    p.add_setting("--port", 8002, "port", int)
    p.add_setting("--name", "x", "name")
    p.add_setting("--live", True, "on/off", parse_bool)
    return p


def test_flag_wins_over_variable_which_wins_over_default() -> None:
    env = {"T_PORT": "9000", "T_NAME": "from-env", "T_LIVE": "no"}
    args = parser(env).parse_args(["--port", "9100"])
    assert (args.port, args.name, args.live) == (9100, "from-env", False)
    args = parser({}).parse_args([])
    assert (args.port, args.name, args.live) == (8002, "x", True)
    assert parser(env).parse_args(["--live"]).live is True
    assert parser({}).parse_args(["--no-live"]).live is False


def test_an_empty_variable_counts_as_unset() -> None:
    args = parser({"T_PORT": "", "T_NAME": ""}).parse_args([])
    assert (args.port, args.name) == (8002, "x")


@pytest.mark.parametrize(("argv", "env", "words"), [
    (["--port", "http"], {}, "--port: 'http' is not a valid int value"),
    ([], {"T_PORT": "http"}, "T_PORT: 'http' is not a valid int value"),
    ([], {"T_LIVE": "maybe"}, "T_LIVE: 'maybe' is not a valid bool value"),
])
def test_a_bad_value_names_the_flag_or_variable(argv: list[str], env: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parser(env).parse_args(argv)


def test_the_three_programs_raise_the_same_error_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recognizer, edge and dashboard: one ConfigError, messages of one shape."""
    monkeypatch.setenv("FACEMON_RECOGNIZER_PORT", "eighty")
    with pytest.raises(ConfigError, match="FACEMON_RECOGNIZER_PORT: 'eighty' is not a valid int value"):
        build_parser().parse_args([])
    with pytest.raises(ConfigError, match="FACEMON_EDGE_WEB_PORT: 'eighty' is not a valid int value"):
        load_config([], {"FACEMON_EDGE_WEB_PORT": "eighty"})
    with pytest.raises(ConfigError, match="FACEMON_DASHBOARD_PORT: 'eighty' is not a valid int value"):
        DashboardConfig.from_env({"FACEMON_DASHBOARD_PORT": "eighty"})


def test_recognizer_settings_problems_are_config_errors() -> None:
    from recognizer.app import RecognizerSettings

    with pytest.raises(ConfigError, match="--detector"):
        build_parser().parse_args(["--detector", "bogus"])
    args = build_parser().parse_args(["--station-auth", "dashboard"])
    with pytest.raises(ConfigError, match="--station-auth dashboard needs --dashboard-url"):
        RecognizerSettings.from_args(args)


def test_env_settings_converts_by_field_type() -> None:
    @dataclass
    class Example:
        count: int = 1
        ratio: float = 0.5
        enabled: bool = False
        label: str = ""

    env = {"X_COUNT": "3", "X_RATIO": "0.25", "X_ENABLED": "yes", "X_LABEL": "", "X_OTHER": "ignored"}
    assert env_settings(Example, "X_", env) == {"count": 3, "ratio": 0.25, "enabled": True}
