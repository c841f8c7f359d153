"""The edge's settings: flags, else `FACEMON_EDGE_*` environment variables, else defaults; validated once.

Each setting is declared once, on its `EdgeConfig` field (`setting_field`: default, help, type, bounds or
choices); the flag `--web-port` and the variable `FACEMON_EDGE_WEB_PORT` are named after the field, and the parser,
`--help` (with the default) and the checks are generated from those declarations. `--recognizer host:port` is the
one flag that is not a field: it sets `recognizer_host` and `recognizer_port`.

Precedence per setting: command-line flag > environment variable > default. A bad value stops the
program at start with a sentence naming the flag or variable.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Sequence

from edge.link import LinkSettings
from shared.config import (ConfigError, Setting, SettingsParser, check_fields, declared_field, flag_settings_of,
                           setting_field)
from shared.names import InvalidName, validate_name
from shared.signin import VERIFY_FRAMES, VERIFY_TIMEOUT
from shared.web_server import WebServerSettings, quiet_web_server_logs

ENV_PREFIX = "FACEMON_EDGE_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
F = setting_field
_RECOGNIZER_HOST, _RECOGNIZER_PORT = "127.0.0.1", 8002


@dataclass(frozen=True)
class EdgeConfig:
    """Everything the edge process needs to start; each field a setting (`--field-name`, `FACEMON_EDGE_FIELD_NAME`)."""

    source: str = F("0", "camera: 'picamera', a USB webcam index (0), a video file (looped), or an rtsp:// / "
                    "http:// URL")
    recognizer_host: str = F(_RECOGNIZER_HOST, "recognizer host", flag=False)  # set by --recognizer
    recognizer_port: int = F(_RECOGNIZER_PORT, "recognizer port", int, ge=1, le=65535, flag=False)
    station: str = F("edge", "this desk's station id", computed="the host name")
    login: str = F("", "login name of the evaluator at this desk")
    token: str = F("", "station token the recognizer expects (prefer the env variable)", repr=False)
    web_host: str = F("127.0.0.1", "address the page listens on (0.0.0.0 for the LAN)")
    web_port: int = F(8001, "port of the page", int, ge=0, le=65535)
    jpeg_quality: int = F(80, "JPEG quality of frames sent", int, ge=1, le=100)
    max_width: int = F(640, "shrink frames wider than this before sending; 0 = never", int, ge=64, le=10000,
                       zero_ok=True)
    max_in_flight: int = F(2, "frames awaiting an answer at most; newer frames are skipped meanwhile", int, ge=1,
                           le=16)
    fps_cap: float = F(0.0, "camera frames per second at most; 0 = the source's own rate", float, ge=0, le=120)
    log_level: str = F("INFO", "DEBUG, INFO, WARNING or ERROR", str.upper, choices=LOG_LEVELS)
    dashboard_url: str = F("", "dashboard base URL (http(s)://host:5000) that checks sign-in passwords; turns "
                           "sign-in on")
    dashboard_token: str = F("", "this station's token (python -m dashboard add-station): used with the dashboard, "
                             "and sent to the recognizer as the station's credential (recognizer --station-auth "
                             "dashboard); prefer the env variable", repr=False)
    auth: str = F("", "on|off: require sign-in for the page", str.lower, choices=("", "on", "off"),
                  computed="on when --dashboard-url is set, else off")
    verify_frames: int = declared_field(VERIFY_FRAMES)  # the recognizer checks the same bounds (shared.signin)
    verify_timeout: float = declared_field(VERIFY_TIMEOUT)
    secret_key: str = F("", "session cookie key, >= 32 characters", repr=False,
                        computed="generated once into STATE_DIR/secret_key")
    state_dir: str = F("var/edge", "folder for the generated session key and the enrolment record")
    session_idle: float = F(1800.0, "seconds without a request after which a signed-in session ends (an open page "
                            "keeps its session alive)", float, ge=60, le=86400)
    session_max: float = F(36000.0, "seconds after sign-in at which any session ends, used or not (36000: 10 h, an "
                           "exam day)", float, ge=60, le=7 * 86400)
    max_sessions: int = F(64, "signed-in sessions kept at most; the least recently used ends first", int, ge=2,
                          le=10000)
    web_threads: int = F(10, "page requests served at once (each live feed holds one)", int, ge=4, le=256)
    max_viewers: int = F(6, "live feeds at once (at most --web-threads - 3); one more is answered 503 and retries",
                         int, ge=1)
    web_connection_limit: int = F(1000, "open connections at most; beyond, the longest silent ones close", int,
                                  ge=16, le=100000)
    web_idle_timeout: float = F(30.0, "seconds a silent connection is kept", float, ge=1, le=3600)
    web_request_timeout: float = F(20.0, "seconds a request's headers and body may take to arrive", float, ge=1,
                                   le=3600)

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError("source is empty: use picamera, a webcam index (0), a video file or an rtsp:// URL")
        if not self.recognizer_host:
            raise ConfigError("recognizer host is empty")
        check_fields(self, _flag_of)  # each field's bounds and choices, as declared above
        if self.max_viewers > self.web_threads - 3:
            raise ConfigError(f"max viewers must be between 1 and web threads - 3 ({self.web_threads - 3}): each "
                              f"viewer holds a thread and the page, status and sign-in need the others, not {self.max_viewers}")
        if self.session_idle > self.session_max:
            raise ConfigError(f"session idle ({self.session_idle:g} s) must not exceed session max ({self.session_max:g} s)")
        if self.auth_on and not self.dashboard_url:
            raise ConfigError("--auth on needs --dashboard-url: accounts are checked by the dashboard")
        if self.auth_on and self.login:
            raise ConfigError("--login cannot be combined with sign-in (auth on): the desk's login is set only "
                              "by an evaluator who passed the face check")
        if self.dashboard_url and not self.dashboard_url.startswith(("http://", "https://")):
            raise ConfigError(f"dashboard url must start with http:// or https://, not {self.dashboard_url!r}")
        if self.secret_key and len(self.secret_key) < 32:
            raise ConfigError("secret key must be at least 32 characters (or leave it unset: one is generated)")
        try:
            validate_name(self.station, "station id")
            if self.login:
                validate_name(self.login, "login")
        except InvalidName as exc:
            raise ConfigError(str(exc)) from None

    @property
    def auth_on(self) -> bool:
        """Sign-in protects the page: --auth on, or by default whenever a dashboard URL is given."""
        return self.auth == "on" or (self.auth == "" and bool(self.dashboard_url))

    def web_server(self) -> WebServerSettings:
        """The page's web server bounds."""
        return WebServerSettings(
            host=self.web_host, port=self.web_port, threads=self.web_threads,
            connection_limit=self.web_connection_limit, idle_timeout_s=self.web_idle_timeout,
            request_timeout_s=self.web_request_timeout, max_body_bytes=1024 * 1024,
            outbuf_high_watermark=2 * 1024 * 1024, stop_grace_s=3.0, name="edge page")

    def link_settings(self) -> LinkSettings:
        return LinkSettings(
            host=self.recognizer_host,
            port=self.recognizer_port,
            station=self.station,
            login=self.login,
            token=self.token,
            credential=self.dashboard_token,
            jpeg_quality=self.jpeg_quality,
            max_width=self.max_width,
            max_in_flight=self.max_in_flight,
        )


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port' or '[v6]:port' -> (host, port); raises ConfigError."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ConfigError(f"recognizer address {text!r} has no host; expected host:port such as 127.0.0.1:8002")
    if not port_text:
        return host, default_port
    try:
        return host, int(port_text)
    except ValueError:
        raise ConfigError(f"recognizer address {text!r}: port {port_text!r} is not a number") from None


def _flag_of(name: str) -> str:
    return f"--recognizer (port)" if name == "recognizer_port" else f"--{name.replace('_', '-')}"


RECOGNIZER = Setting("--recognizer", f"{_RECOGNIZER_HOST}:{_RECOGNIZER_PORT}", "recognizer address host:port")


def settings() -> tuple[Setting, ...]:
    """The edge's settings in --help order: EdgeConfig's fields with a flag, --recognizer where its host was."""
    fields_ = flag_settings_of(EdgeConfig)
    return (*fields_[:1], RECOGNIZER, *fields_[1:])


def build_parser(environ: Optional[Mapping[str, str]] = None) -> SettingsParser:
    """The edge's flags; `parse_args` resolves each flag > FACEMON_EDGE_<FLAG> in `environ` > the default (None for
    a default worked out at start: the station id, sign-in on or off, the session key)."""
    parser = SettingsParser(
        prog="facemon-edge",
        description="facemon edge: stream a camera to the recognizer and serve the live page on :8001.",
        epilog="Every flag can also be set by an environment variable FACEMON_EDGE_<NAME>, e.g. "
        "FACEMON_EDGE_TOKEN, FACEMON_EDGE_RECOGNIZER=10.0.0.5:8002. Flags win over the environment.",
        env_prefix=ENV_PREFIX, environ=environ, help_format="{help}{default} [{env}]",
    )
    for s in settings():
        parser.add(s)
    return parser


def load_config(argv: Optional[Sequence[str]], environ: Mapping[str, str]) -> EdgeConfig:
    """Parse flags (argparse exits on --help or an unknown flag) and the environment into an EdgeConfig."""
    args = build_parser(environ).parse_args(argv)
    values: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    host, port = parse_host_port(values.pop("recognizer"), _RECOGNIZER_PORT)
    values.update(recognizer_host=host, recognizer_port=port)
    values.setdefault("station", socket.gethostname().split(".")[0] or "edge")
    known = {f.name for f in fields(EdgeConfig)}
    return EdgeConfig(**{k: v for k, v in values.items() if k in known})


def setup_logging(level: str) -> None:
    from shared.config import setup_logging as one_line_logging

    one_line_logging(level)  # control characters in logged values escaped: no forged lines
    quiet_web_server_logs()
