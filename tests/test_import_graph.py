"""scripts/import_graph.py: no import cycle, and no import up the recognizer's layers (the README's layers row)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import import_graph  # noqa: E402 - a script, not a package


def test_the_project_has_no_cycle_and_no_upward_import() -> None:
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "import_graph.py")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 cycle(s), 0 upward import(s)" in run.stdout


def test_the_layers_come_from_the_readme_and_an_upward_import_is_reported(tmp_path: Path) -> None:
    order = import_graph.layers()
    assert order[:2] == [["settings"], ["vision", "liveness"]] and order[-1] == ["tools"] and ["station"] in order
    graph = {
        "recognizer.vision.pipeline": {"recognizer.identity.match", "recognizer.vision.detect", "shared.jpeg"},
        "recognizer.identity.enrol": {"recognizer.vision.detect"},
        "recognizer.vision.detect": set(),
        "recognizer.identity.match": set(),
        "recognizer.liveness.blinks": {"recognizer.vision.track"},  # same layer, other folder
        "recognizer.vision.track": set(),
        "recognizer.server.stations": {"recognizer.app"},
        "recognizer.app": {"recognizer.server.stations"},
        "recognizer.vision.sweep": {"recognizer.settings"},  # the lowest layer: pure data, read by every part
        "recognizer.settings": {"recognizer.vision.detect"},
    }
    assert import_graph.upward(graph, order) == [
        "recognizer.liveness.blinks -> recognizer.vision.track",
        "recognizer.server.stations -> recognizer.app",
        "recognizer.settings -> recognizer.vision.detect",
        "recognizer.vision.pipeline -> recognizer.identity.match",
    ]
    readme = tmp_path / "README.md"
    readme.write_text("| path | what |\n|---|---|\n| `recognizer/` | folders |\n")
    with pytest.raises(SystemExit, match="no .* layers"):
        import_graph.layers(readme)
