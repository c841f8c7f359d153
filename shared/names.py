"""Person and station names that are safe to use as folder names and to show on screen."""
from __future__ import annotations

import re

MAX_NAME = 64
_NAME = re.compile(r"^[^\W_][\w .'-]*$")


class InvalidName(ValueError):
    """A user-typed name that cannot be used (empty, too long, a path, odd characters)."""


def validate_name(raw: object, what: str = "name") -> str:
    """Return the trimmed name, or raise InvalidName with a sentence saying what is wrong.

    Allowed: letters (any script), digits, space, `_ . ' -`, 1 to 64 characters, starting with a letter or
    digit; never `..`, `/` or `\\`, so the name can be a folder under known_faces/.
    """
    if not isinstance(raw, str):
        raise InvalidName(f"{what} must be text")
    name = raw.strip()
    if not name:
        raise InvalidName(f"{what} is empty")
    if len(name) > MAX_NAME:
        raise InvalidName(f"{what} is longer than {MAX_NAME} characters")
    if "/" in name or "\\" in name or ".." in name:
        raise InvalidName(f"{what} must not contain '/', '\\' or '..'")
    if not _NAME.match(name):
        raise InvalidName(f"{what} may only hold letters, digits, spaces and _ . ' - (starting with a letter or digit)")
    return name


def validate_login(raw: object, what: str = "login") -> str:
    """An evaluator's login: empty (nobody signed in) or a valid name by `validate_name`.

    The one rule for logins everywhere: the recognizer checks HELLO and SESSION with it, the dashboard checks
    alerts with it, so a login the recognizer accepts is never refused later.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return ""
    return validate_name(raw, what)
