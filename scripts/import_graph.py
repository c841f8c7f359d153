"""Print the project's internal import graph, its import cycles, and imports that go up the recognizer's layers.

    python scripts/import_graph.py [PACKAGE ...]      # default: dashboard edge recognizer shared

Fails (exit 1) on a cycle, or on a module of one of the recognizer's folders importing a module of a higher folder.
The layers are the README's layout table row "`recognizer/` layers", lowest first: folders (`vision/`) and modules
directly in recognizer/ (`app.py`) separated by `<`, those of one layer side by side (they may not import each
other); each imports only its own folder's modules and those of lower layers. Modules the row does not name
(`__main__.py`) are not checked.

An edge A -> B means module A imports module B (at top level or inside a function: both load B
when A's code runs). Only modules of the named packages are nodes; `from pkg import mod` counts as
an edge to `pkg.mod` when that is a module. Parsed with `ast`, nothing is imported.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGES = ("dashboard", "edge", "recognizer", "shared")


def modules(packages: list[str]) -> dict[str, Path]:
    """Module name -> file, for every .py under the packages (migrations' revision files included)."""
    found = {}
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules `name` imports."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
            if not all(t in known for t in targets):  # a name from the package itself, not a submodule
                targets.append(base)
        else:
            continue
        for target in targets:
            # the longest known prefix: `dashboard.app.create_app` -> `dashboard.app`
            parts = target.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != name:
                out.add(".".join(parts))
    return out


def layers(readme: Path = ROOT / "README.md") -> list[list[str]]:
    """The recognizer's folders by layer, lowest first, from the README's layout table ("`recognizer/` layers")."""
    for line in readme.read_text().splitlines():
        if line.startswith("| `recognizer/` layers"):
            rule = line.split("|")[2]
            return [re.findall(r"`(\w+)(?:/|\.py)`", part) for part in rule.split("<")]
    raise SystemExit(f"{readme}: no '| `recognizer/` layers' row in the layout table")


def upward(graph: dict[str, set[str]], order: list[list[str]]) -> list[str]:
    """Edges from a recognizer folder to the same layer's other folder or to a higher layer ("a -> b")."""
    rank = {folder: i for i, group in enumerate(order) for folder in group}

    def place(module: str) -> tuple[int, str] | None:
        parts = module.split(".")
        if parts[0] != "recognizer" or len(parts) < 2:
            return None
        if parts[1] not in rank:
            if len(parts) > 2:  # a folder the rule forgot: say so rather than pass it
                raise SystemExit(f"recognizer/{parts[1]}/ is in no layer: add it to the README's layers row")
            return None
        return rank[parts[1]], parts[1]

    bad = []
    for a in sorted(graph):
        pa = place(a)
        if pa is None:
            continue
        for b in sorted(graph[a]):
            pb = place(b)
            if pb is not None and (pb[0] > pa[0] or (pb[0] == pa[0] and pb[1] != pa[1])):
                bad.append(f"{a} -> {b}")
    return bad


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(comps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", default=list(DEFAULT_PACKAGES))
    parser.add_argument("--edges", action="store_true", help="also list every edge")
    args = parser.parse_args(argv)
    known = modules(args.packages)
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    if args.edges:
        for name in sorted(graph):
            for target in sorted(graph[name]):
                print(f"{name} -> {target}")
    comps = strongly_connected(graph)
    up = upward(graph, layers()) if "recognizer" in args.packages else []
    print(f"{len(known)} modules, {sum(map(len, graph.values()))} internal import edges, {len(comps)} cycle(s), "
          f"{len(up)} upward import(s) between the recognizer's layers")
    for comp in comps:
        inner = sorted(f"{a} -> {b}" for a in comp for b in graph[a] if b in comp)
        print(f"cycle: {', '.join(comp)}")
        for edge in inner:
            print(f"    {edge}")
    for edge in up:
        print(f"upward: {edge}")
    return 1 if comps or up else 0


if __name__ == "__main__":
    sys.exit(main())
