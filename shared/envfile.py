"""Environment files as systemd's `EnvironmentFile=` reads them (the subset we write): `KEY=VALUE` lines, `#`
comments, blank lines. Written by provisioning, read by set-up scripts and the tests that run the docs. Pure."""
from __future__ import annotations

import re
from typing import Mapping

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SAFE = re.compile(r"^[A-Za-z0-9_@%+=:,./\[\]-]*$")  # written bare; anything else is refused, never quoted wrongly


class EnvFileError(ValueError):
    """A line that is not KEY=VALUE, or a value that cannot be written bare."""


def render_env_file(values: Mapping[str, str], header: str = "") -> str:
    """`header` as comment lines, then one KEY=VALUE line per item (in order)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in values.items():
        if not _KEY.match(key):
            raise EnvFileError(f"{key!r} is not an environment variable name")
        if not _SAFE.match(value):
            raise EnvFileError(f"the value of {key} holds characters an environment file would need quoted")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines into a dict (later lines win); surrounding double or single quotes are taken off."""
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _KEY.match(key):
            raise EnvFileError(f"line {number}: expected KEY=VALUE, got {raw[:60]!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out
