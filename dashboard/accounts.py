"""People's accounts: created or reset with a hashed password (werkzeug), and checked at login.

A password hash is werkzeug's scrypt (N=32768, r=8, p=1): ~32 MiB of memory and ~0.1 s of a core per check,
on purpose. So checks run in `PasswordChecks`, a small pool of worker threads (1 by default) with a short
queue: whatever number of logins arrive at once, at most that many hashes are in memory, and a login that
finds the queue full is answered 429 at once (it was: 120 concurrent logins, 1.33 GB).
"""
from __future__ import annotations

import contextlib
import functools
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from dashboard.models import ROLES, User, WebSession, utcnow
from shared.names import InvalidName, validate_name

MIN_PASSWORD_CHARS = 8


class AccountError(ValueError):
    """An account that cannot be saved as asked (bad name, short password, unknown role, missing identity)."""


def create_user(db: Session, username: str, password: str, role: str = "viewer", identity: Optional[str] = None) -> User:
    """Add an account, or reset the password, role (and identity) of an existing one.

    `identity`: the enrolled face name (known_faces/<identity>) a desk sign-in is checked against;
    required for evaluators, optional for staff and admins (then they sign in at a desk by password only).
    """
    if role not in ROLES:
        raise AccountError(f"role {role!r} must be one of {', '.join(ROLES)}")
    if identity:
        try:
            identity = validate_name(identity, "identity")
        except InvalidName as exc:
            raise AccountError(str(exc)) from None
    elif role == "evaluator":
        raise AccountError("an evaluator needs --identity: the enrolled face name their sign-in is checked against")
    username = username.strip()
    if not username or len(username) > 64:
        raise AccountError("username must be 1 to 64 characters")
    if not username.isprintable():
        raise AccountError("username must not contain control characters (newline, tab ...)")
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    user = db.scalar(sa.select(User).where(User.username == username))
    if user is None:
        user = User(username=username, created_at=utcnow())
        db.add(user)
    if user.id is not None:  # a new password (or role) ends every page session of the account
        db.execute(sa.delete(WebSession).where(WebSession.user_id == user.id))
    user.password_hash = generate_password_hash(password)
    user.role = role
    if identity or role == "evaluator":
        user.identity = identity
    db.commit()
    return user


_DUMMY_LOCK = threading.Lock()  # a thousand first logins at once make the dummy hash once, not a thousand times


@functools.lru_cache(maxsize=1)
def _make_dummy_hash() -> str:
    return generate_password_hash(secrets.token_urlsafe(16))


def _dummy_hash() -> str:
    """A hash of a random password with the current method, made once per process (same cost as a real one)."""
    with _DUMMY_LOCK:
        return _make_dummy_hash()


class ChecksBusy(Exception):
    """Every password-check slot and queue place is taken: answer 429 and let the client try again shortly."""

    retry_after = 1


class PasswordChecks:
    """Password hashes computed by `workers` threads, with at most as many more waiting; the rest refused.

    Only these threads ever hash, so the memory a hash takes (and that the allocator keeps per thread) is
    bounded by `workers`, not by the web server's thread count. A place is taken (`place()`) before the
    account is even looked up, so a refused login costs next to nothing. `checked` counts hashes verified.
    """

    def __init__(self, workers: int = 1, queue: Optional[int] = None) -> None:
        self.workers = workers
        self.max_pending = workers + (workers if queue is None else queue)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="password-check")
        self._lock = threading.Lock()
        self._pending = 0
        self.checked = 0

    @contextlib.contextmanager
    def place(self) -> Iterator[Callable[[Optional[str], str], bool]]:
        """Hold a place (raises ChecksBusy when `max_pending` are taken); yields `verify(pw_hash, password)`,
        which checks in a worker (pw_hash None: against the dummy hash, made there too)."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise ChecksBusy(f"{self._pending} password checks already under way; try again in a second")
            self._pending += 1
        try:
            yield lambda pw_hash, password: self._pool.submit(self._check, pw_hash, password).result()
        finally:
            with self._lock:
                self._pending -= 1

    def _check(self, pw_hash: Optional[str], password: str) -> bool:
        ok = check_password_hash(pw_hash or _dummy_hash(), password)
        with self._lock:
            self.checked += 1
        return ok

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def check_login(db: Session, username: str, password: str, checks: Optional[PasswordChecks] = None) -> Optional[User]:
    """The user when the password is right. One hash check whether or not the name exists, so the answer
    time does not tell a wrong name from a wrong password (it used to: 535 ms vs 272 ms). With `checks`, a
    place there is taken first (ChecksBusy when there is none) and the hash computed there."""
    with checks.place() if checks is not None else contextlib.nullcontext(_verify_here) as verify:
        user = db.scalar(sa.select(User).where(User.username == username.strip()))
        ok = verify(user.password_hash if user is not None else None, password)
    return user if ok and user is not None else None


def _verify_here(pw_hash: Optional[str], password: str) -> bool:
    return check_password_hash(pw_hash or _dummy_hash(), password)
