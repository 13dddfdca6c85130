"""The shape of the code: imports between the project's modules form no circle, and no function outgrows a screen.
Imports inside functions count too: a lazy import hides a circle from Python, not from a reader."""

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ssast", "pretrain", "finetune", "probes", "slurm")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports: ``import a.b``, ``from a.b import c`` (a.b.c when it is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out |= {
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names
            }
    return {m for m in out if m in known and m != name}


def test_no_import_circle():
    known = modules()
    graph = {name: imports(name, path, set(known)) for name, path in known.items()}
    assert "ssast.models.formats" not in graph["ssast.models.ast"]  # the models do not know their file formats
    state: dict[str, str] = {}  # "open" on the current path, "done" when fully explored

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            assert state.get(dep) != "open", "import circle: " + " -> ".join(path[path.index(dep) :] + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert len(state) == len(known) > 40


def test_no_function_longer_than_60_lines():
    long = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long


def test_moved_entry_points_keep_working_as_aliases():
    from ssast import models
    from ssast.models import loading

    assert models.load_encoder is loading.load_encoder


# The data package's layers, bottom first: each module imports only those before it (the tools at the end sit on
# the four layers), and only the loader imports fairseq2.
DATA_LAYERS = ("sources", "index", "sampling", "loader", "stats", "shards", "prepare")


def test_the_data_layers_import_only_downward():
    known = modules()
    data = {n for n in known if n.startswith("ssast.data.")}
    assert data == {f"ssast.data.{m}" for m in DATA_LAYERS}
    for i, layer in enumerate(DATA_LAYERS):
        name = f"ssast.data.{layer}"
        below = {f"ssast.data.{m}" for m in DATA_LAYERS[:i]}
        assert imports(name, known[name], set(known)) & data <= below, name
        tree = ast.parse(known[name].read_text())
        third_party = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        third_party |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert any(m.startswith("fairseq2") for m in third_party) == (layer == "loader"), name
    # the project modules the layers build on do not reach back into the data package
    for name in ("ssast.config", "ssast.features", "ssast.files"):
        assert not imports(name, known[name], set(known)) & (data | {"ssast.data"}), name


def test_no_docstring_joins_its_lines_with_a_lone_backslash():
    """A backslash ending a line of a (non-raw) docstring joins it with the next one: the help text then shows a
    run of spaces mid-line instead of the command's continuation."""
    joined = []
    for path in [*modules().values(), *(ROOT / "benchmarks").glob("*.py")]:
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None:
                text = ast.get_source_segment(source, node.body[0])
                if not text.startswith(("r", "R")) and re.search(r"(?<!\\)\\\n", text):
                    joined.append(f"{path.relative_to(ROOT)}:{node.body[0].lineno}")
    assert not joined


def test_every_test_module_declares_its_tier_and_imports_no_other_test_module():
    tests = sorted((ROOT / "tests").glob("test_*.py"))
    untiered, borrowing = [], []
    for path in tests:
        tree = ast.parse(path.read_text())
        marks = [
            ast.unparse(n.value)
            for n in tree.body
            if isinstance(n, ast.Assign) and [ast.unparse(t) for t in n.targets] == ["pytestmark"]
        ]
        if len(marks) != 1 or ("pytest.mark.unit" in marks[0]) == ("pytest.mark.integration" in marks[0]):
            untiered.append(path.name)
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        if any(name.split(".")[0].startswith("test_") or name == "conftest" for name in names):
            borrowing.append(path.name)
    assert len(tests) > 30 and not untiered and not borrowing, (untiered, borrowing)


# The library's rooms, bottom first (README "Layout", CONTRIBUTING.md): each imports only its own and those before.
ROOMS = (
    {"ssast.config", "ssast.cli", "ssast.files", "ssast.distributed", "ssast.features"},
    {"ssast.models"},
    {"ssast.data"},
    {"ssast.eval"},
    {"ssast.train"},
    {"ssast.demo"},
)


def test_the_library_rooms_import_only_downward():
    known = modules()

    def room(name: str) -> int:
        return next(i for i, r in enumerate(ROOMS) if any(name == m or name.startswith(m + ".") for m in r))

    library = {n for n in known if n.startswith("ssast.") and n != "ssast"}
    upward = [
        f"{name} -> {dep}"
        for name in sorted(library)
        for dep in imports(name, known[name], set(known))
        if dep in library and room(dep) > room(name)
    ]
    assert not upward
    flat = [n for n in library if n.count(".") == 1 and not (ROOT / n.replace(".", "/")).is_dir()]
    assert sorted(flat) == sorted(ROOMS[0])  # every other module lives in a room of its own name
