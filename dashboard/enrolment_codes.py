"""Single-use enrolment codes, the alternative to carrying env files to the desks.

`facemon-dashboard add-stations desk-01..desk-40 --codes` prints one short code per desk (`7KQ2-M9XD-PAWE`, ~59
bits); at the desk, `scripts/setup.sh edge --code CODE --dashboard URL` (edge/enrolment_code.py) sends it to
`POST /api/enrolment-codes/redeem` and gets the desk's env file back. The station token in that file is made at
redemption, so no secret waits in the database in clear; only the code's hash is stored.

A code is claimed with one conditional UPDATE (not used, not voided, not expired), so of N redemptions at once on
any backend exactly one gets the file; the others, and any later try, are refused with what happened ("already used
at 10:14 from 10.0.0.7", "expired at ..."). Issue, redemption and refusal are audited (dashboard.audit).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dashboard import audit
from dashboard.models import ApiToken, EnrolmentCode, utcnow
from dashboard.provisioning import EdgeSite, ProvisionError, edge_env, expand_stations
from dashboard.station_tokens import hash_token
from shared.envfile import render_env_file

ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"  # no 0/O, 1/I/L, U: read aloud or typed from paper
CODE_CHARS = 12  # 12 of 30 symbols: ~59 bits, beyond guessing through a web endpoint
DEFAULT_TTL_H = 48.0
MAX_TTL_H = 24.0 * 30


class CodeRefused(Exception):
    """A code that gives no env file: `why` unknown | used | expired | voided | malformed, with a sentence."""

    def __init__(self, why: str, reason: str) -> None:
        super().__init__(reason)
        self.why, self.reason = why, reason


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
    return "-".join(raw[i:i + 4] for i in range(0, CODE_CHARS, 4))


def normalise(code: object) -> str:
    """The code as stored (upper case, no dashes or spaces); CodeRefused('malformed') when it cannot be one."""
    if not isinstance(code, str) or len(code) > 64:
        raise CodeRefused("malformed", f"an enrolment code is {CODE_CHARS} letters and digits, like 7KQ2-M9XD-PAWE")
    flat = "".join(code.split()).replace("-", "").upper()
    if len(flat) != CODE_CHARS or any(c not in ALPHABET for c in flat):
        raise CodeRefused("malformed", f"an enrolment code is {CODE_CHARS} letters and digits, like 7KQ2-M9XD-PAWE "
                                       f"(no 0, 1, I, L, O or U); check it was typed as printed")
    return flat


def _digest(code: str) -> str:
    return hashlib.sha256(normalise(code).encode()).hexdigest()


def _when(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Issued:
    station: str
    code: str
    expires_at: dt.datetime


def issue(db: Session, specs: Sequence[str], site: EdgeSite, actor: str, ttl_h: float = DEFAULT_TTL_H,
          replace: bool = False, now: Optional[dt.datetime] = None) -> list[Issued]:
    """One code per station (committed, audited); refused before anything is made when a station holds a live token
    or an open code, unless `replace` (its tokens revoked, its open codes voided)."""
    if not 0 < ttl_h <= MAX_TTL_H:
        raise ProvisionError(f"a code's lifetime must be more than 0 and at most {MAX_TTL_H:g} hours, not {ttl_h:g}")
    stations = expand_stations(specs)
    now = now or utcnow()
    taken = sorted(set(db.scalars(sa.select(ApiToken.name).where(ApiToken.name.in_(stations),
                                                                 ApiToken.revoked_at.is_(None)))))
    open_codes = sorted(set(db.scalars(sa.select(EnrolmentCode.station_id).where(
        EnrolmentCode.station_id.in_(stations), EnrolmentCode.used_at.is_(None), EnrolmentCode.voided_at.is_(None),
        EnrolmentCode.expires_at > now))))
    if not replace and (taken or open_codes):
        what = [f"already holding a token: {', '.join(taken[:5])}"] if taken else []
        what += [f"with an unused code: {', '.join(open_codes[:5])}"] if open_codes else []
        raise ProvisionError("; ".join(what) + " (use --replace to revoke and make new ones)")
    if replace:
        db.execute(sa.update(ApiToken).where(ApiToken.name.in_(stations), ApiToken.revoked_at.is_(None))
                   .values(revoked_at=now))
        db.execute(sa.update(EnrolmentCode).where(EnrolmentCode.station_id.in_(stations), EnrolmentCode.used_at.is_(None),
                                                  EnrolmentCode.voided_at.is_(None)).values(voided_at=now, site=""))
    # codes that ran out unused need their copy of the recognizer's token no longer
    db.execute(sa.update(EnrolmentCode).where(EnrolmentCode.expires_at <= now, EnrolmentCode.site != "").values(site=""))
    expires = now + dt.timedelta(hours=ttl_h)
    out = []
    for station in stations:
        code = new_code()
        db.add(EnrolmentCode(code_hash=_digest(code), station_id=station, site=json.dumps(asdict(site)),
                             created_at=now, expires_at=expires))
        audit.record(db, actor, "enrolment_code_issued", station, f"expires {_when(expires)}"
                     + ("; replaced its token/code" if replace and (station in taken or station in open_codes) else ""))
        out.append(Issued(station, code, expires))
    db.commit()
    return out


@dataclass(frozen=True)
class Redeemed:
    station: str
    env: str  # the desk's env file, station token inside


def redeem(db: Session, code: str, address: str, now: Optional[dt.datetime] = None) -> Redeemed:
    """The env file for `code`, once: claimed, token made and audited in one transaction. CodeRefused otherwise
    (the refusal is audited too, except for a malformed code)."""
    digest = _digest(code)  # CodeRefused('malformed') first: nothing recorded for typing noise
    now = now or utcnow()
    claimed = db.execute(sa.update(EnrolmentCode).where(
        EnrolmentCode.code_hash == digest, EnrolmentCode.used_at.is_(None), EnrolmentCode.voided_at.is_(None),
        EnrolmentCode.expires_at > now).values(used_at=now, used_from=address[:64])).rowcount
    row = db.scalar(sa.select(EnrolmentCode).where(EnrolmentCode.code_hash == digest))
    if claimed != 1 or row is None:
        db.rollback()
        refusal = _refusal(row)
        if row is not None and row.site and refusal.why == "expired":  # nobody will use its copy of the secrets
            db.execute(sa.update(EnrolmentCode).where(EnrolmentCode.id == row.id).values(site=""))
        audit.record(db, "desk", "enrolment_code_refused", row.station_id if row else "-", refusal.why, address)
        db.commit()
        raise refusal
    site = EdgeSite(**json.loads(row.site))
    token = secrets.token_urlsafe(32)
    db.add(ApiToken(name=row.station_id, kind="station", token_hash=hash_token(token), created_at=now))
    row.site = ""  # the recognizer's token is in the file now; the database keeps no copy
    audit.record(db, "desk", "enrolment_code_redeemed", row.station_id, "station token made", address)
    db.commit()
    header = (f"facemon edge {row.station_id}, from enrolment code redeemed at {_when(now)}.\n"
              "Secrets inside: keep it 0600.")
    return Redeemed(row.station_id, render_env_file(edge_env(site, row.station_id, token), header))


def _refusal(row: Optional[EnrolmentCode]) -> CodeRefused:
    if row is None:
        return CodeRefused("unknown", "this enrolment code is not known to this dashboard: check it was typed as "
                                      "printed, and that --dashboard is the dashboard that made it")
    again = f"ask the administrator for a new one (facemon-dashboard add-stations {row.station_id} --codes --replace)"
    if row.used_at is not None:
        return CodeRefused("used", f"the enrolment code of {row.station_id} was already used at {_when(row.used_at)}"
                                   f" from {row.used_from or 'an unknown address'}; a code works once: {again}")
    if row.voided_at is not None:
        return CodeRefused("voided", f"the enrolment code of {row.station_id} was replaced by a newer one at "
                                     f"{_when(row.voided_at)}: use that one, or {again}")
    return CodeRefused("expired", f"the enrolment code of {row.station_id} expired at {_when(row.expires_at)}: {again}")
