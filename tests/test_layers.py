"""The package's layers (docs/architecture.md, "Layers"): every import of a frozen_det module,
at module level or inside a function, points to the same or a lower layer, so no loop runs
through the packages. Read from the source (ast), nothing imported."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "frozen_det")

# Bottom to top: a room (a top-level module or sub-package of frozen_det) imports only rooms of
# its own layer or below.
LAYERS = (
    ("drawing", "losses", "ops", "runtime", "schema", "tree_paths"),
    ("data", "evaluation", "localization", "models"),
    ("checkpoints",),
    ("tasks",),
    ("config", "config_defaults", "strategies"),
    ("training",),
    ("classify", "dry_run", "evaluate", "export", "predict", "pseudo_boxes", "resources", "train", "quickstart"),
    ("projects",),
)
LAYER = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "frozen_det" and len(parts) > 1 else None


def _imports():
    """(importing room, imported room, file:line) of every frozen_det import in the package."""
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, PACKAGE).split(os.sep)
            source = rel[0][: -len(".py")] if len(rel) == 1 else rel[0]
            if source == "__init__":
                continue
            with open(path) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                else:
                    continue
                for target in {_room(m) for m in modules} - {None, source}:
                    yield source, target, f"{os.path.relpath(path, ROOT)}:{node.lineno}"


def test_every_room_has_a_layer():
    rooms = {n[: -len(".py")] if n.endswith(".py") else n for n in os.listdir(PACKAGE)}
    rooms -= {"__init__", "__pycache__"}
    assert rooms == set(LAYER), "place new top-level modules / packages in LAYERS (and docs/architecture.md)"


def test_no_import_points_up_a_layer():
    upward = [f"{where}: {src} -> {dst}" for src, dst, where in _imports() if LAYER[dst] > LAYER[src]]
    assert not upward, "imports that run back up the layers:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("low, high", [("evaluation", "training"), ("evaluation", "tasks"), ("models", "data")])
def test_named_rules(low, high):
    assert not [w for s, d, w in _imports() if s == low and d == high]
