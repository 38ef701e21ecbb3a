"""The package's structure holds: no import cycle, one owner of the run directory's names, serve asks the recipe.

Static checks over the source (ast), no imports of ftkit's modules: fast lane.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Where each importable name's source lives: ftkit/ as it is, recipes/ installed as ftkit.recipes.
ROOTS = {"ftkit": REPO / "ftkit", "ftkit.recipes": REPO / "recipes"}
# The run directory's own file and folder names, which only ftkit/run_dir.py may spell.
RUN_DIR_NAMES = (
    "config.yaml",
    "overrides.yaml",
    "metrics.json",
    "log_history.json",
    "report.md",
    "launch.sbatch",
    "deepspeed.json",
    "result.json",
    "predictions.jsonl",
    "checkpoint-",
    "train.log",
    "train.rank",
    "splits.json",
    "augmented.jsonl",
    "cv.json",
    "cv.md",
)


def source_modules() -> dict[str, Path]:
    """Module name -> file, for every module of ftkit and of the recipes (data generators live outside)."""
    modules = {}
    for prefix, root in ROOTS.items():
        for file in root.rglob("*.py"):
            if "data" in file.relative_to(root).parts[:1] and prefix == "ftkit.recipes":
                continue
            parts = list(file.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([prefix, *parts])] = file
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Edges module -> module for every import statement, at module level and inside functions alike.

    Importing a.b.c runs the packages a and a.b first, so the edge goes to each of them too.
    """
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, file in modules.items():
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base]) if base else ".".join(anchor)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                parts = target.split(".")
                for end in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:end])
                    if prefix in modules and prefix != name:
                        graph[name].add(prefix)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a cycle or a knot of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_sees_function_level_and_package_imports(tmp_path, monkeypatch):
    package = tmp_path / "ftkit"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "one.py").write_text("def f():\n    from ftkit.two import g\n")
    (package / "two.py").write_text("from ftkit.sub import one\n")
    monkeypatch.setitem(ROOTS, "ftkit", package)
    monkeypatch.setitem(ROOTS, "ftkit.recipes", tmp_path / "none")
    graph = import_graph(source_modules())
    assert "ftkit.two" in graph["ftkit.sub.one"] and "ftkit.sub.one" in graph["ftkit.two"]
    assert cycles(graph) == [["ftkit.sub.one", "ftkit.two"]]


def test_no_import_cycle_among_ftkit_and_recipe_modules():
    modules = source_modules()
    assert len(modules) > 50 and "ftkit.recipes.ner" in modules and "ftkit.run_dir" in modules
    assert cycles(import_graph(modules)) == []


def string_constants(file: Path) -> list[tuple[int, str]]:
    """Every string literal of a module that is not a docstring (f-strings' literal parts included)."""
    tree = ast.parse(file.read_text(), str(file))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_run_directory_names_are_spelt_only_in_run_dir():
    spelt = []
    for name, file in source_modules().items():
        if name == "ftkit.run_dir":
            continue
        for line, text in string_constants(file):
            spelt += [f"{file.relative_to(REPO)}:{line}: {word}" for word in RUN_DIR_NAMES if word in text]
    assert spelt == []
    run_dir_strings = " ".join(text for _, text in string_constants(REPO / "ftkit" / "run_dir.py"))
    assert all(word in run_dir_strings for word in RUN_DIR_NAMES)  # the check above looks for the real names


def test_serve_asks_the_recipe():
    """No isinstance on recipe classes in serve, and no prediction of its own: no scorer, parser or BIO code."""
    for file in (REPO / "ftkit" / "serve").glob("*.py"):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                assert "Recipe" not in ast.unparse(node.args[1]) and "Task" not in ast.unparse(node.args[1]), file
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("ftkit.recipes.", "ftkit.tasks")), (file, node.module)


def test_every_ftkit_package_is_packaged():
    """A non-editable install carries each sub-package only when pyproject lists it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {
        ".".join(("ftkit", *init.parent.relative_to(REPO / "ftkit").parts))
        for init in (REPO / "ftkit").rglob("__init__.py")
    }
    assert packages - listed == set()
