"""Names kept out of the logs: `who(name)` gives a pseudonym (`person:3f2a91c0`) unless FACEMON_LOG_NAMES=1.

Logs are copied, shipped and kept longer than the data they describe; the name of a person recognised at a desk
is personal data. The pseudonym is a keyed hash with a key drawn once per process, so lines of one run can be
followed for the same person while nobody can recompute it from a list of names. An operator who needs names
(debugging an enrolment) sets FACEMON_LOG_NAMES=1 for that run.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets

ENV = "FACEMON_LOG_NAMES"
_KEY = secrets.token_bytes(16)  # immutable for the life of the process; never written anywhere


def names_logged() -> bool:
    """True when FACEMON_LOG_NAMES is 1/true/yes (read on each call, so a test or a restart can change it)."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def who(name: object) -> str:
    """`name` itself when names are logged, else `person:<8 hex>` (empty or missing names stay as they are)."""
    if not name or names_logged():
        return str(name or "")
    return "person:" + hmac.new(_KEY, str(name).encode(), hashlib.sha256).hexdigest()[:8]
