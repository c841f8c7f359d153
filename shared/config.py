"""One way to configure a facemon process: a flag, else its environment variable, else the default; one `ConfigError`.

- `Setting`: one setting declared once (flag, default, help, type, bounds or choices, hidden old names and
  where its value goes). A program declares its settings in one place: the recognizer in a table
  (`recognizer/settings.py`, each `Setting` naming the field it sets with `into`), the edge and the dashboard
  on their config dataclass's fields (`setting_field`: the field's default *is* the setting's). The parser,
  `--help` (defaults printed from the declaration), environment variables and validation (`Setting.check`,
  `check_fields` in a dataclass's `__post_init__`) are generated from those declarations.
- `SettingsParser` (the recognizer, the edge): an `argparse.ArgumentParser` whose settings are added with
  `add` (a `Setting`) or `add_setting`; `parse_args` resolves each one flag > `{env_prefix}NAME` > default,
  converts and checks it, so a bad value from either place raises `ConfigError` naming the flag or the variable.
- `env_settings` (the dashboard, whose settings are mostly environment-only): a dataclass's fields read
  from `{prefix}FIELD`, converted (and checked) by the field's setting, else by the field's type.

An empty variable counts as unset (as for Python's own `PYTHON*` variables), so `FACEMON_X=` in a
systemd environment file means "the default". Typed settings objects validate the values they are built
from and raise `ConfigError` too.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

Parse = Callable[[str], Any]


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the setting and why."""


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true/false")


_KIND_NAMES = {parse_bool: "bool"}


def convert(raw: str, parse: Parse, origin: str) -> Any:
    """`parse(raw)`; a ValueError becomes a ConfigError naming `origin` (the flag or the variable)."""
    try:
        return parse(raw)
    except ValueError:
        kind = _KIND_NAMES.get(parse, getattr(parse, "__name__", "setting"))
        raise ConfigError(f"{origin}: {raw!r} is not a valid {kind} value") from None


def read_env(environ: Mapping[str, str], name: str, parse: Parse = str) -> Optional[Any]:
    """Variable `name` converted with `parse`; None when it is unset or empty."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    return convert(raw, parse, name)


Number = float


def _number(x: Optional[Number]) -> str:
    """A bound as a user writes it: 86400 (not 86400.0 or 8.64e+04), 0.25; "" for none."""
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Setting:
    """One setting, declared once: its flag (the environment variable is `{prefix}{FLAG}`), default, help text,
    type (`parse`: text -> value), bounds (`ge`/`le`/`gt`, inclusive/exclusive; `zero_ok`: 0 also allowed, meaning
    "off") or `choices`, the flags it was once called (`aliases`: still accepted, hidden from --help), and `into`:
    the field(s) of the program's typed settings it sets, as "section.field" or "field" (empty: the program reads
    it itself). `computed`: the default is worked out at start (e.g. "the host name"): --help says so and an unset
    setting parses as None."""

    flag: str
    default: Any
    help: str
    parse: Parse = str
    ge: Optional[Number] = None
    le: Optional[Number] = None
    gt: Optional[Number] = None
    choices: tuple[str, ...] = ()
    into: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    zero_ok: bool = False
    computed: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.into, str):
            object.__setattr__(self, "into", (self.into,) if self.into else ())
        if self.default is not None:
            self.check(self.default, f"{self.flag} (default)")

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def env(self, prefix: str) -> str:
        return f"{prefix}{self.dest.upper()}"

    @property
    def bounds(self) -> str:
        """The bounds as a user reads them: "0.25..1", "> 0", "0 or 64..10000", "" when there are none."""
        if self.gt is not None:
            text = f"> {_number(self.gt)}" + ("" if self.le is None else f", <= {_number(self.le)}")
        elif self.ge is not None or self.le is not None:
            text = f"{_number(self.ge)}..{_number(self.le)}"
        else:
            return ""
        return f"0 or {text}" if self.zero_ok else text

    def shown_default(self) -> str:
        """The default as --help prints it ("" when there is none to say)."""
        if self.computed:
            return self.computed
        if self.default is None or self.default == "":
            return ""
        if self.parse is parse_bool:
            return "on" if self.default else "off"
        return str(self.default)

    def help_line(self, env: str, fmt: str = "{help}{default} [env {env}]") -> str:
        """The --help text: `fmt` with `{help}`, `{default}` (" (default: X)" or nothing) and `{env}`."""
        shown = self.shown_default()
        return fmt.format(help=self.help, default=f" (default: {shown})" if shown else "", env=env)

    def check(self, value: Any, origin: str) -> Any:
        """`value` when it is within the bounds and choices; ConfigError naming `origin` otherwise."""
        if self.choices and value not in self.choices:
            raise ConfigError(f"{origin}: {value!r} is not one of {', '.join(c or '(empty)' for c in self.choices)}")
        if self.zero_ok and value == 0 or value is None:
            return value
        if self.ge is not None and value < self.ge or self.le is not None and value > self.le \
                or self.gt is not None and value <= self.gt:
            if self.gt is None:
                raise ConfigError(f"{origin}: {value!r} is out of range {self.bounds}")
            raise ConfigError(f"{origin}: {value!r} must be {self.bounds}")
        return value


def setting_field(default: Any, help: str, parse: Parse = str, *, flag: bool = True, repr: bool = True,  # noqa: A002
                  **declared: Any) -> Any:
    """A config dataclass field that is a setting, declared once: `x: int = setting_field(5, "help", int, ge=1)`.
    Its flag is `--x` and its variable `{prefix}X` (`settings_of` completes the `Setting`); `flag=False`: a field
    set only through another setting (e.g. the edge's --recognizer host:port), still checked by `check_fields`."""
    # the flag is filled in from the field's name by settings_of; a placeholder until then
    spec = dict(default=default, help=help, parse=parse, **declared)
    return dataclasses.field(default=default, repr=repr, metadata={"setting": spec, "flag": flag})


def declared_field(setting: Setting) -> Any:
    """A config dataclass field that is `setting`, declared elsewhere because two programs read it (e.g. the sign-in
    check's `shared.signin.VERIFY_FRAMES`, asked for by the edge and checked by the recognizer). The field must be
    named after the setting's flag (`settings_of` names it from the field)."""
    return setting_field(setting.default, setting.help, setting.parse, ge=setting.ge, le=setting.le, gt=setting.gt,
                         choices=setting.choices, aliases=setting.aliases, zero_ok=setting.zero_ok,
                         computed=setting.computed)


def settings_of(cls: type) -> tuple[Setting, ...]:
    """The settings declared on dataclass `cls`'s fields (`setting_field`), in field order."""
    cached = _SETTINGS_OF.get(cls)
    if cached is None:
        cached = tuple(Setting("--" + f.name.replace("_", "-"), **f.metadata["setting"])
                       for f in dataclasses.fields(cls) if "setting" in f.metadata)
        _SETTINGS_OF[cls] = cached
    return cached


def flag_settings_of(cls: type) -> tuple[Setting, ...]:
    """`settings_of(cls)` less the fields that have no flag of their own."""
    flagged = {f.name for f in dataclasses.fields(cls) if f.metadata.get("flag", False)}
    return tuple(s for s in settings_of(cls) if s.dest in flagged)


_SETTINGS_OF: dict[type, tuple[Setting, ...]] = {}


def check_fields(obj: Any, origin: Callable[[str], str] = str) -> None:
    """Check each field of dataclass instance `obj` declared with `setting_field` against its bounds and choices
    (a `__post_init__` calls this rather than restating them); ConfigError naming `origin(field name)`."""
    for s in settings_of(type(obj)):
        s.check(getattr(obj, s.dest), origin(s.dest))


class SettingsParser(argparse.ArgumentParser):
    """Flags backed by environment variables `{env_prefix}{DEST}`, resolved flag > variable > default by `parse_args`.

    `help_format` renders each setting's help from `{help}`, `{default}` (" (default: X)", or nothing when the
    setting has no default to say) and `{env}` (`bool_help_format` for on/off settings, given as
    `--name/--no-name`). A setting whose default is None (or `computed`) is left None when neither the flag nor
    the variable is set, so a typed config's own default (or the program) applies. Other arguments are plain
    argparse.
    """

    def __init__(self, *args: Any, env_prefix: str, environ: Optional[Mapping[str, str]] = None,
                 help_format: str = "{help}{default} [env {env}]",
                 bool_help_format: str = "{help} [env {env}]", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env_prefix = env_prefix
        self.environ = environ  # None: os.environ as it is when parsing
        self.help_format, self.bool_help_format = help_format, bool_help_format
        self._settings: list[tuple[Setting, str]] = []  # (setting, its environment variable)

    def add(self, setting: Setting) -> None:
        """Add `setting`'s flag (and its hidden old names), also settable by `{env_prefix}{FLAG}`."""
        dest, env = setting.dest, setting.env(self.env_prefix)
        if setting.parse is parse_bool:
            text = setting.help_line(env, self.bool_help_format).replace("%", "%%")
            kwargs: dict[str, Any] = dict(action=argparse.BooleanOptionalAction)
        else:
            text = setting.help_line(env, self.help_format).replace("%", "%%")
            kwargs = {}
        self.add_argument(setting.flag, dest=dest, default=None, help=text, **kwargs)
        for alias in setting.aliases:
            self.add_argument(alias, dest=dest, default=None, help=argparse.SUPPRESS, **kwargs)
        self._settings.append((setting, env))

    def add_setting(self, flag: str, default: Any = None, help: str = "", parse: Parse = str) -> None:  # noqa: A002
        """Add `--flag`, also settable by `{env_prefix}{FLAG}`; `parse` converts a flag's or variable's text."""
        self.add(Setting(flag, default, help, parse))

    def setting(self, dest: str) -> Setting:
        return next(s for s, _ in self._settings if s.dest == dest)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        """argparse's parsing (exits on --help or an unknown flag), then each setting resolved; ConfigError on a bad value."""
        ns, rest = super().parse_known_args(args, namespace)
        environ = os.environ if self.environ is None else self.environ
        for setting, env in self._settings:
            given = getattr(ns, setting.dest, None)
            if isinstance(given, str):
                value = setting.check(convert(given, setting.parse, setting.flag), setting.flag)
            elif given is not None:  # --name / --no-name
                value = given
            else:
                value = read_env(environ, env, setting.parse)
                if value is not None:
                    setting.check(value, env)
            if value is None and not setting.computed:
                value = setting.default
            setattr(ns, setting.dest, value)
        return ns, rest


_FIELD_PARSERS: dict[str, Parse] = {"int": int, "float": float, "bool": parse_bool}


def env_settings(cls: type, prefix: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """The fields of dataclass `cls` set in `environ` as `{prefix}{FIELD}`: converted and checked by the field's
    setting (`setting_field`; ConfigError naming the variable), else converted by the field's type."""
    declared = {s.dest: s for s in settings_of(cls)}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = prefix + f.name.upper()
        s = declared.get(f.name)
        value = read_env(environ, name, s.parse if s else _FIELD_PARSERS.get(str(f.type), str))
        if value is not None:
            values[f.name] = s.check(value, name) if s else value
    return values


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
