"""Provisioning a room in one step: station ids from ranges (`desk-01..desk-40`), one token each, and one ready
edge environment file per desk (mode 0600 in a 0700 folder), which `scripts/setup.sh edge --env-file` or the edge
unit's `EnvironmentFile=` consumes. The id and file rules are pure; `provision` does the writing."""
from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dashboard.models import ApiToken, utcnow
from dashboard.station_tokens import create_token
from shared.envfile import render_env_file
from shared.names import InvalidName, validate_name

MAX_STATIONS = 1000
_RANGE = re.compile(r"^(?P<prefix>.*?)(?P<first>\d+)\.\.(?P=prefix)?(?P<last>\d+)$")


class ProvisionError(ValueError):
    """Provisioning that cannot be done as asked; nothing was created."""


def expand_stations(specs: Iterable[str]) -> list[str]:
    """`desk-01..desk-40` (or `desk-01..40`), single ids, in order, each once; zero padding kept."""
    out: list[str] = []
    for spec in specs:
        m = _RANGE.match(spec.strip())
        if m:
            first, last = int(m["first"]), int(m["last"])
            if last < first:
                raise ProvisionError(f"{spec!r}: the range runs backwards")
            if last - first + 1 > MAX_STATIONS:
                raise ProvisionError(f"{spec!r}: more than {MAX_STATIONS} stations")
            width = len(m["first"])
            names = [f"{m['prefix']}{n:0{width}d}" for n in range(first, last + 1)]
        else:
            names = [spec.strip()]
        for name in names:
            try:
                name = validate_name(name, "station id")
            except InvalidName as exc:
                raise ProvisionError(str(exc)) from None
            if name not in out:
                out.append(name)
    if not out:
        raise ProvisionError("no station ids given")
    if len(out) > MAX_STATIONS:
        raise ProvisionError(f"more than {MAX_STATIONS} stations at once")
    return out


@dataclass(frozen=True)
class EdgeSite:
    """What every desk of the room shares: where the recognizer and the dashboard are, the camera, the page."""

    recognizer: str  # host:port the edges connect to
    recognizer_token: str  # the recognizer's shared --token (admits a client; the station token proves the desk)
    dashboard_url: str  # as the edges reach it (sign-in, enrol grants)
    source: str = "picamera"
    web_host: str = "0.0.0.0"

    def __post_init__(self) -> None:
        if not self.recognizer or not self.recognizer_token:
            raise ProvisionError("the recognizer's address and token are needed (--recognizer, --recognizer-token)")
        if not self.dashboard_url.startswith(("http://", "https://")):
            raise ProvisionError(f"dashboard URL must start with http:// or https://, not {self.dashboard_url!r}")


def edge_env(site: EdgeSite, station: str, token: str) -> dict[str, str]:
    """The FACEMON_EDGE_* settings of one desk. No FACEMON_EDGE_LOGIN: with a dashboard, evaluators sign in."""
    return {
        "FACEMON_EDGE_STATION": station,
        "FACEMON_EDGE_SOURCE": site.source,
        "FACEMON_EDGE_RECOGNIZER": site.recognizer,
        "FACEMON_EDGE_TOKEN": site.recognizer_token,
        "FACEMON_EDGE_DASHBOARD_URL": site.dashboard_url,
        "FACEMON_EDGE_DASHBOARD_TOKEN": token,
        "FACEMON_EDGE_WEB_HOST": site.web_host,
    }


def provision(db: Session, specs: Sequence[str], site: EdgeSite, out: Path, replace: bool = False,
              now: Optional[dt.datetime] = None) -> list[Path]:
    """Create a token and write `<out>/<station>.env` for every station; returns the files.

    Refused before anything is created when a station already holds a live token or its file exists (unless
    `replace`: their old tokens are revoked and the files rewritten)."""
    stations = expand_stations(specs)
    now = now or utcnow()
    out = Path(out)
    taken = sorted(set(db.scalars(sa.select(ApiToken.name).where(
        ApiToken.name.in_(stations), ApiToken.revoked_at.is_(None)))))
    existing = [s for s in stations if (out / f"{s}.env").exists()]
    if not replace and (taken or existing):
        what = [f"already holding a token: {', '.join(taken[:5])}"] if taken else []
        what += [f"already with a file in {out}: {', '.join(existing[:5])}"] if existing else []
        raise ProvisionError("; ".join(what) + " (use --replace to revoke and make new ones)")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    if replace and taken:
        db.execute(sa.update(ApiToken).where(ApiToken.name.in_(taken), ApiToken.revoked_at.is_(None))
                   .values(revoked_at=now))
        db.commit()
    files = []
    for station in stations:
        token = create_token(db, station, "station")
        header = (f"facemon edge {station}, made by facemon-dashboard add-stations at {now.isoformat(timespec='seconds')}.\n"
                  "Secrets inside: keep it 0600. Install on the desk's Pi with\n"
                  f"  scripts/setup.sh edge --pi --env-file {station}.env")
        path = out / f"{station}.env"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # an existing file keeps its old mode through O_CREAT
            f.write(render_env_file(edge_env(site, station, token), header))
        files.append(path)
    return files
