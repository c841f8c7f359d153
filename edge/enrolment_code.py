"""`python -m edge.enrolment_code --code CODE --dashboard URL --out FILE`: trade a desk's single-use enrolment code
(`facemon-dashboard add-stations ... --codes`) for its env file, written 0600 and checked with the edge's own
settings rules (edge.env_check). Used by `scripts/setup.sh edge --code CODE --dashboard URL`.

Exit 0 with the file written; 2 with the dashboard's sentence when the code is refused (used, expired, unknown,
mistyped) or the dashboard cannot be reached. Nothing is written unless the whole file came back and checks out.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from edge.env_check import check
from shared.config import ConfigError
from shared.envfile import EnvFileError
from shared.http import HttpError, post_json


class CodeError(Exception):
    """The code gave no env file; the message says why and what to do."""


def fetch(dashboard: str, code: str, timeout_s: float = 15.0) -> tuple[str, str]:
    """(station id, env file text) for `code` from the dashboard at `dashboard`; CodeError when refused."""
    if not dashboard.startswith(("http://", "https://")):
        raise CodeError(f"--dashboard must be the dashboard's http:// or https:// URL, not {dashboard!r}")
    url = f"{dashboard.rstrip('/')}/api/enrolment-codes/redeem"
    try:
        answer = post_json(url, {"code": code}, timeout_s=timeout_s)
    except HttpError as exc:
        raise CodeError(f"cannot reach the dashboard: {exc}") from None
    body = answer.json() or {}
    if not answer.ok:
        raise CodeError(f"the dashboard refused the code (HTTP {answer.status}): {answer.reason()}")
    station, env = body.get("station_id"), body.get("env")
    if not isinstance(station, str) or not isinstance(env, str):
        raise CodeError(f"{url} did not answer with an env file: is --dashboard the facemon dashboard?")
    return station, env


def write_checked(path: Path, text: str) -> str:
    """`text` to `path`, mode 0600, only once the edge's settings rules accept it (their summary is returned), and
    atomically: a half-written or refused secrets file never exists."""
    path = path.resolve()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
        summary = check(Path(tmp))
        os.replace(tmp, path)
        return summary
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.enrolment_code", description=__doc__.split("\n\n")[0])
    p.add_argument("--code", required=True, help="the desk's code, as printed (dashes and case do not matter)")
    p.add_argument("--dashboard", required=True, help="the dashboard's URL, e.g. https://dash.lab")
    p.add_argument("--out", required=True, type=Path, help="where to write the desk's env file (0600)")
    args = p.parse_args(argv)
    try:
        station, env = fetch(args.dashboard, args.code)
    except CodeError as exc:
        print(f"enrolment code: {exc}", file=sys.stderr)
        return 2
    try:
        summary = write_checked(args.out, env)
    except (OSError, ConfigError, EnvFileError) as exc:
        print(f"{args.out}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
