"""Small helpers for configuration from flags with environment-variable defaults."""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Callable


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the setting and why."""


def env_default(prefix: str, name: str, default: Any, parse: Callable[[str], Any] = str) -> Any:
    """Value of env var `{prefix}_{NAME}` parsed with `parse`, else `default`."""
    key = f"{prefix}_{name.upper()}"
    raw = os.environ.get(key)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {key}={raw!r} is not valid: {exc}") from None


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true/false")


def add_env_argument(
    parser: argparse.ArgumentParser, prefix: str, flag: str, default: Any, help: str, parse: Callable = str, **kw: Any
) -> None:
    """Add `--flag` whose default comes from `{prefix}_{FLAG}` in the environment, named in the help."""
    name = flag.lstrip("-").replace("-", "_")
    env = f"{prefix}_{name.upper()}"
    value = env_default(prefix, name, default, parse)
    if parse is parse_bool:
        parser.add_argument(flag, default=value, action=argparse.BooleanOptionalAction, help=f"{help} [env {env}]", **kw)
    else:
        parser.add_argument(flag, default=value, type=parse, help=f"{help} (default: %(default)s) [env {env}]", **kw)


LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c != 0x09} | {0x0A: "\\n", 0x0D: "\\r"}


class OneLineFormatter(logging.Formatter):
    """Escapes control characters (newline, carriage return, ESC ...) in the message, so a value a user typed
    (a name, a `by`) can never start a forged log line or recolour a terminal. Tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's hook
        return super().formatMessage(record).translate(_CONTROL)


def setup_logging(level: str) -> None:
    """Configure root logging once for a console program (one record, one line)."""
    numeric = getattr(logging, level.upper(), None)
    if not isinstance(numeric, int):
        raise ConfigError(f"log level must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    logging.basicConfig(level=numeric, handlers=[handler])
