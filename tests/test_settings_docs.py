"""The docs' tables of settings say what the programs declare: every default and variable a table names is checked
against the declarations (`recognizer/settings.py`, `EdgeConfig`'s and `DashboardConfig`'s fields, and the
sign-in check's `shared.signin`), and every edge and dashboard setting is in some table, so they cannot drift.

A table is checked when a column is headed `default`; its names are the backticked words of the columns headed
flag / variable / field / setting / parameter (`--web-port`, `FACEMON_EDGE_WEB_PORT`, `offline_after_s`,
`RETENTION_AUDIT_DAYS`), its program is the file's (`DOCS`) or, in a table with a `where` column, that column's.
Several names in one cell take as many defaults ("3, 5, 30 s"; "5 / 3") or one for all. A default worked out at
start (`computed`) must read as the declaration says it (`--help` prints the same words)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
# which program's declarations each file's default tables describe ("where": the table's own `where` column)
DOCS = {"edge.md": "edge", "signin.md": "edge", "dashboard.md": "dashboard", "privacy.md": "dashboard",
        "alerts.md": "recognizer", "trust.md": "where", "recognition.md": "OpenSetParams"}
NAME_HEADERS = ("flag", "variable", "field", "setting", "parameter")
UNITS = {"": 1, "s": 1, "days": 1, "MiB": 1024 * 1024, "KiB": 1024}
EMPTY = ("", "empty", "—", "-", "none")


class Declared(NamedTuple):
    default: Any
    computed: str
    env: str  # "" when it has no variable


def declarations() -> dict[str, tuple[str, dict[str, Declared]]]:
    """Program -> (its variables' prefix, {name: declaration}) for every program a table may describe."""
    from dashboard.config import ENV_PREFIX as DASH, DashboardConfig
    from edge.config import ENV_PREFIX as EDGE, RECOGNIZER, EdgeConfig
    from recognizer.identity.match import OpenSetParams
    from recognizer.settings import ENV_PREFIX as REC, SETTINGS
    from shared.config import settings_of

    def table(settings: Any, prefix: str) -> tuple[str, dict[str, Declared]]:
        return prefix, {s.dest: Declared(s.default, s.computed, s.env(prefix)) for s in settings}

    return {
        "edge": table((*settings_of(EdgeConfig), RECOGNIZER), EDGE),
        "dashboard": table(settings_of(DashboardConfig), DASH),
        "recognizer": table(SETTINGS, REC),
        "OpenSetParams": ("", {f.name: Declared(f.default, "", "") for f in dataclasses.fields(OpenSetParams)}),
    }


class Row(NamedTuple):
    where: str  # file:line
    program: str
    names: list[list[str]]  # per name column, the names it gives
    default: str  # the default cell as written
    variables: list[str]  # every FACEMON_ variable the row names, in any column


def cells(line: str) -> list[str]:
    """A table line's cells (`\\|` inside a cell is a literal bar)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def default_rows(path: Path) -> Iterator[Row]:
    """The rows of `path`'s tables that have a `default` column."""
    lines = path.read_text().splitlines()
    header: list[str] = []
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            header = []
            continue
        if not header:
            header = [h.lower() for h in cells(line)]
            continue
        if set(line) <= set("|-: "):  # the rule under the header
            continue
        if "default" not in header:
            continue
        row = cells(line)
        assert len(row) == len(header), f"{path.name}:{i + 1}: {len(row)} cells under {len(header)} headers"
        by = dict(zip(header, row))
        program = by["where"] if DOCS.get(path.name) == "where" else DOCS.get(path.name, "?")
        names = [[t.split()[0] for t in re.findall(r"`([^`]+)`", row[j])]
                 for j, h in enumerate(header) if h.startswith(NAME_HEADERS)]
        variables = re.findall(r"`(FACEMON_[A-Z_]+)`", line)
        if any(names):
            yield Row(f"{path.name}:{i + 1}", program, names, by["default"], variables)


def all_rows() -> list[Row]:
    return [r for path in sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"] for r in default_rows(path)]


def key(token: str, prefix: str) -> str:
    """A name as the declarations key it: `--web-port`, `FACEMON_EDGE_WEB_PORT`, `WEB_PORT` -> web_port."""
    if token.startswith("--"):
        return token[2:].replace("-", "_")
    if prefix and token.startswith(prefix):
        return token[len(prefix):].lower()
    return token.lower() if token.isupper() else token


def parse(text: str) -> tuple[str, Any]:
    """A default as written -> (its words, its value: a number, a bool, "" for none, else the words)."""
    words = re.sub(r"\s*\([^)]*\)$", "", re.sub(r"\*\*|`", "", text).strip())
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*(s|days|MiB|KiB)?", words)
    if m:
        return words, float(m.group(1)) * UNITS[m.group(2) or ""]
    if words.lower() in ("on", "off", "true", "false"):
        return words, words.lower() in ("on", "true")
    return words, "" if words.lower() in EMPTY else words


def agrees(written: str, d: Declared) -> bool:
    words, value = parse(written)
    if d.computed:
        return words == d.computed
    if d.default is None or d.default == "":
        return value == ""
    if isinstance(d.default, bool):
        return value is d.default
    if isinstance(d.default, (int, float)):
        return not isinstance(value, (bool, str)) and value == float(d.default)
    return words == str(d.default)


def split_defaults(text: str, n: int) -> list[str]:
    parts = re.split(r",\s*|\s+/\s+", text) if n > 1 else [text]
    return parts if len(parts) == n else [text] * n


def test_the_docs_tables_of_settings_are_checked() -> None:
    """Each file with a `default` table is in DOCS (a new table is not silently left unchecked), and there are
    tables to check."""
    rows = all_rows()
    assert {r.program for r in rows} >= {"edge", "dashboard", "recognizer", "OpenSetParams"}
    assert not [r.where for r in rows if r.program not in declarations()], "add the file to DOCS"


def test_every_default_and_variable_in_the_docs_tables_is_the_declared_one() -> None:
    known = declarations()
    wrong: list[str] = []
    for row in all_rows():
        prefix, declared = known[row.program]
        first, *others = row.names
        keys = [key(t, prefix) for t in first]
        for column in others:  # a second name column (the variable beside the flag) names the same settings
            if [key(t, prefix) for t in column] != keys:
                wrong.append(f"{row.where}: {column} do not name {first}")
        for token in row.variables:  # a program's variable (its prefix says which): known, spelt as it reads it
            program, var_prefix, its = next(((p, v, k) for p, (v, k) in known.items() if v and token.startswith(v)),
                                            (None, "", {}))
            if program is None:  # not a program's setting (FACEMON_DATA_KEY: the key itself)
                continue
            d = its.get(key(token, var_prefix))
            if d is None or d.env != token:
                wrong.append(f"{row.where}: {token} is not a variable of {program}")
        for name, written in zip(keys, split_defaults(row.default, len(keys))):
            d = declared.get(name)
            if d is None:
                wrong.append(f"{row.where}: {name} is not a {row.program} setting")
            elif not agrees(written, d):
                wrong.append(f"{row.where}: {name} defaults to {d.computed or repr(d.default)}, the doc says {written!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("program", ["edge", "dashboard"])
def test_every_edge_and_dashboard_setting_is_in_a_docs_table(program: str) -> None:
    """The edge's and the dashboard's settings are all documented in a table (the recognizer's ~60 flags are
    documented by `facemon-recognizer --help`, generated from the same table, and in part in docs tables)."""
    prefix, declared = declarations()[program]
    documented = {key(t, prefix) for row in all_rows() if row.program == program for t in row.names[0]}
    assert not sorted(set(declared) - documented - {"recognizer_host", "recognizer_port"})  # those: --recognizer


def test_the_checker_reads_defaults_as_written() -> None:
    """The reading rules themselves, on cells the docs use."""
    assert agrees("5 MiB", Declared(5 * 1024 * 1024, "", "")) and agrees("**30 days**", Declared(30.0, "", ""))
    assert agrees("0 (off)", Declared(0.0, "", "")) and agrees("—", Declared("", "", ""))
    assert agrees("`0`", Declared("0", "", "")) and not agrees("`1`", Declared("0", "", ""))
    assert agrees("off", Declared(False, "", "")) and not agrees("0", Declared(False, "", ""))
    assert not agrees("21 s", Declared(20.0, "", "")) and not agrees("1", Declared(True, "", ""))
    assert agrees("on when `--dashboard-url` is set, else off",
                  Declared("", "on when --dashboard-url is set, else off", ""))
    assert split_defaults("3, 5, 30 s", 3) == ["3", "5", "30 s"] and split_defaults("—", 2) == ["—", "—"]
