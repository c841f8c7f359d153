"""The edge's settings: flags, else `FACEMON_EDGE_*` environment variables, else defaults; validated once.

Precedence per setting: command-line flag > environment variable > default. A bad value stops the
program at start with a sentence naming the flag or variable.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Optional, Sequence

from edge.link import LinkSettings
from shared.config import ConfigError, SettingsParser
from shared.names import InvalidName, validate_name
from shared.web_server import WebServerSettings, quiet_web_server_logs

ENV_PREFIX = "FACEMON_EDGE_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class EdgeConfig:
    """Everything the edge process needs to start."""

    source: str = "0"
    recognizer_host: str = "127.0.0.1"
    recognizer_port: int = 8002
    station: str = "edge"
    login: str = ""
    token: str = field(default="", repr=False)
    web_host: str = "127.0.0.1"
    web_port: int = 8001
    jpeg_quality: int = 80
    max_width: int = 640
    max_in_flight: int = 2
    fps_cap: float = 0.0
    log_level: str = "INFO"
    dashboard_url: str = ""
    dashboard_token: str = field(default="", repr=False)
    auth: str = ""  # "on", "off", or "" = on exactly when dashboard_url is set
    verify_frames: int = 10
    verify_timeout: float = 20.0
    secret_key: str = field(default="", repr=False)
    state_dir: str = "var/edge"
    session_idle: float = 1800.0  # a staff or desk session with no request for 30 min ends
    session_max: float = 36000.0  # any session ends 10 h after sign-in (an exam day), whatever its use
    max_sessions: int = 64
    web_threads: int = 10
    max_viewers: int = 6
    web_connection_limit: int = 1000
    web_idle_timeout: float = 30.0
    web_request_timeout: float = 20.0

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError("source is empty: use picamera, a webcam index (0), a video file or an rtsp:// URL")
        if not self.recognizer_host:
            raise ConfigError("recognizer host is empty")
        for name, value, low, high in (
            ("recognizer port", self.recognizer_port, 1, 65535),
            ("web port", self.web_port, 0, 65535),
            ("jpeg quality", self.jpeg_quality, 1, 100),
            ("max width", self.max_width, 0, 10000),
            ("max in flight", self.max_in_flight, 1, 16),
            ("session idle", self.session_idle, 60, 86400),
            ("session max", self.session_max, 60, 7 * 86400),
            ("max sessions", self.max_sessions, 2, 10000),
            ("web threads", self.web_threads, 4, 256),
            ("web connection limit", self.web_connection_limit, 16, 100000),
            ("web idle timeout", self.web_idle_timeout, 1, 3600),
            ("web request timeout", self.web_request_timeout, 1, 3600),
        ):
            if not low <= value <= high:
                raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
        if not 1 <= self.max_viewers <= self.web_threads - 3:
            raise ConfigError(f"max viewers must be between 1 and web threads - 3 ({self.web_threads - 3}): each "
                              f"viewer holds a thread and the page, status and sign-in need the others, not {self.max_viewers}")
        if self.session_idle > self.session_max:
            raise ConfigError(f"session idle ({self.session_idle:g} s) must not exceed session max ({self.session_max:g} s)")
        if self.max_width and self.max_width < 64:
            raise ConfigError(f"max width must be 0 (no resizing) or at least 64, not {self.max_width}")
        if not 0 <= self.fps_cap <= 120:
            raise ConfigError(f"fps cap must be between 0 (no cap) and 120, not {self.fps_cap}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        if self.auth not in ("", "on", "off"):
            raise ConfigError(f"auth must be 'on' or 'off', not {self.auth!r}")
        if self.auth_on and not self.dashboard_url:
            raise ConfigError("--auth on needs --dashboard-url: accounts are checked by the dashboard")
        if self.auth_on and self.login:
            raise ConfigError("--login cannot be combined with sign-in (auth on): the desk's login is set only "
                              "by an evaluator who passed the face check")
        if self.dashboard_url and not self.dashboard_url.startswith(("http://", "https://")):
            raise ConfigError(f"dashboard url must start with http:// or https://, not {self.dashboard_url!r}")
        if not 1 <= self.verify_frames <= 300:
            raise ConfigError(f"verify frames must be between 1 and 300, not {self.verify_frames}")
        if not 1 <= self.verify_timeout <= 600:
            raise ConfigError(f"verify timeout must be between 1 and 600 seconds, not {self.verify_timeout}")
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


# (flag, converter, help). The environment variable is FACEMON_EDGE_<FLAG>; defaults come from EdgeConfig.
_SETTINGS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("--source", str, "camera: 'picamera', a USB webcam index (0), a video file (looped), or an rtsp:// / http:// URL"),
    ("--recognizer", str, "recognizer address host:port (default 127.0.0.1:8002)"),
    ("--station", str, "this desk's station id (default: the host name)"),
    ("--login", str, "login name of the evaluator at this desk"),
    ("--token", str, "station token the recognizer expects (prefer the env variable)"),
    ("--web-host", str, "address the page listens on (default 127.0.0.1; 0.0.0.0 for the LAN)"),
    ("--web-port", int, "port of the page (default 8001)"),
    ("--jpeg-quality", int, "JPEG quality 1-100 of frames sent (default 80)"),
    ("--max-width", int, "shrink frames wider than this before sending; 0 = never (default 640)"),
    ("--max-in-flight", int, "frames awaiting an answer at most; newer frames are skipped meanwhile (default 2)"),
    ("--fps-cap", float, "camera frames per second at most; 0 = the source's own rate"),
    ("--log-level", str.upper, "DEBUG, INFO, WARNING or ERROR (default INFO)"),
    ("--dashboard-url", str,
     "dashboard base URL (http(s)://host:5000) that checks sign-in passwords; turns sign-in on"),
    ("--dashboard-token", str,
     "this station's token (python -m dashboard add-station): used with the dashboard, and sent to the recognizer "
     "as the station's credential (recognizer --station-auth dashboard); prefer the env variable"),
    ("--auth", str.lower, "on|off: require sign-in for the page (default: on when --dashboard-url is set, else off)"),
    ("--verify-frames", int, "consecutive agreeing frames the sign-in face check needs (default 10)"),
    ("--verify-timeout", float, "seconds the sign-in face check may take (default 20)"),
    ("--secret-key", str, "session cookie key, >= 32 characters (default: generated once into STATE_DIR/secret_key)"),
    ("--state-dir", str, "folder for the generated session key and the enrolment record (default var/edge)"),
    ("--session-idle", float, "seconds without a request after which a signed-in session ends (default 1800: "
                              "30 min; an open page keeps its session alive)"),
    ("--session-max", float, "seconds after sign-in at which any session ends, used or not (default 36000: "
                             "10 h, an exam day)"),
    ("--max-sessions", int, "signed-in sessions kept at most; the least recently used ends first (default 64)"),
    ("--web-threads", int, "page requests served at once (default 10; each live feed holds one)"),
    ("--max-viewers", int, "live feeds at once; one more is answered 503 and retries (default 6)"),
    ("--web-connection-limit", int, "open connections at most; beyond, the longest silent ones close (default 1000)"),
    ("--web-idle-timeout", float, "seconds a silent connection is kept (default 30)"),
    ("--web-request-timeout", float, "seconds a request's headers and body may take to arrive (default 20)"),
)


def build_parser(environ: Optional[Mapping[str, str]] = None) -> SettingsParser:
    """The edge's flags; `parse_args` resolves each flag > FACEMON_EDGE_<FLAG> in `environ` > None (EdgeConfig's default)."""
    parser = SettingsParser(
        prog="facemon-edge",
        description="facemon edge: stream a camera to the recognizer and serve the live page on :8001.",
        epilog="Every flag can also be set by an environment variable FACEMON_EDGE_<NAME>, e.g. "
        "FACEMON_EDGE_TOKEN, FACEMON_EDGE_RECOGNIZER=10.0.0.5:8002. Flags win over the environment.",
        env_prefix=ENV_PREFIX, environ=environ, help_format="{help} [{env}]",
    )
    for flag, convert, help_text in _SETTINGS:
        parser.add_setting(flag, help=help_text, parse=convert)
    return parser


def load_config(argv: Optional[Sequence[str]], environ: Mapping[str, str]) -> EdgeConfig:
    """Parse flags (argparse exits on --help or an unknown flag) and the environment into an EdgeConfig."""
    args = build_parser(environ).parse_args(argv)
    values: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    if "recognizer" in values:
        host, port = parse_host_port(values.pop("recognizer"), EdgeConfig.recognizer_port)
        values.update(recognizer_host=host, recognizer_port=port)
    values.setdefault("station", socket.gethostname().split(".")[0] or "edge")
    known = {f.name for f in fields(EdgeConfig)}
    return EdgeConfig(**{k: v for k, v in values.items() if k in known})


def setup_logging(level: str) -> None:
    from shared.config import setup_logging as one_line_logging

    one_line_logging(level)  # control characters in logged values escaped: no forged lines
    quiet_web_server_logs()
