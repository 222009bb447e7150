"""The layers point one way: trainables <- run directory (analysis.records) and search.config <-
engine and analysis <- CLI, with no import circle between any two files.

Read from the source (no imports run), module-level and function-level imports alike: the graph of
the project's own imports, which modules import Ray, and what each floor may import from the others.
"""

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("search", "analysis", "trainables", "spaces")
# The engine's modules that need Ray; no other module imports it, at any level.
RAY_MODULES = {
    "search._adapter",
    "search.engine",
    "search.gpu_packing",
    "search.ray_session",
    "search.recorder",
    "search.strategies.searcher",
    "search.trial",
    "search.tracking",
    "search.tuner",
    "search.workers",
    # The scheduler registry's builders import Ray when a search starts, never at import.
    "search.strategies.schedulers",
}
# Heavy third-party packages that a function may import lazily, to keep them off a fast path.
HEAVY = ("torch", "torchvision", "ray", "timm", "mlflow", "optuna", "sklearn", "matplotlib", "PIL", "pandas")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function, line) for every import in the file. ``from a import b``
    names module ``a.b`` when that is a module, else ``a``."""
    modules = _modules()
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, inside, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    found.append((full if full in modules else child.module, inside, child.lineno))
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found


def _graph(packages: bool = False) -> dict[str, set[str]]:
    """Module -> the project modules it imports. ``packages``: importing ``a.b`` from another
    top-level package runs ``a/__init__.py`` first, so that package's ``__init__`` is an edge too."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = {target for target, _, _ in _imports(path) if target in modules}
        if packages:
            targets |= {t.split(".")[0] for t in targets if t.split(".")[0] != name.split(".")[0]}
        graph[name] = targets - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_function_level_imports_and_finds_a_planted_circle():
    graph = _graph(packages=True)
    assert "search.config.settings" in graph["analysis.records"] and "search" in graph["analysis.records"]
    assert "search.config.sampling" in graph["search.strategies.samplers"]  # imported inside a function
    assert _cycle(graph | {"search.config.settings": graph["search.config.settings"] | {"analysis.records"}})


def test_no_import_circle_between_files():
    assert _cycle(_graph(packages=True)) is None


def test_only_the_engines_modules_import_ray():
    importing = {
        name for name, path in _modules().items() if any(t == "ray" or t.startswith("ray.") for t, _, _ in _imports(path))
    }
    assert importing == RAY_MODULES


def test_each_floor_imports_only_the_floors_below():
    for name, targets in _graph().items():
        if name.startswith("trainables"):
            assert not {t for t in targets if t.startswith(("search", "analysis"))}, name
        if name.startswith("analysis"):
            upward = {t for t in targets if t.split(".")[0] == "search" and not t.startswith("search.config")}
            assert not upward, f"{name} imports {sorted(upward)}"
        if name.startswith("search.config"):
            assert not {t for t in targets if t.startswith("search") and not t.startswith("search.config")}, name


def test_function_level_imports_of_the_project_say_why():
    """Imports belong at the top; one inside a function keeps a heavy dependency off a fast path,
    and a comment on its line (or on a comment line right above it) says so."""
    modules = _modules()
    for name, path in modules.items():
        lines = path.read_text().splitlines()
        for target, inside, line in _imports(path):
            if inside and target in modules:
                said = "#" in lines[line - 1] or any(lines[i].strip().startswith("#") for i in range(max(0, line - 3), line - 1))
                assert said, f"{path.relative_to(REPO)}:{line} imports {target} inside a function without a comment"


def test_checking_input_imports_no_ray_torch_timm_or_mlflow():
    code = (
        "import sys, search.cli, search.prepare, search.config.spaces, search.strategies, analysis.records, "
        "analysis.leaderboard; print(sorted(m for m in ('ray', 'torch', 'timm', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_help_imports_no_ray_torch_timm_mlflow_or_numpy():
    code = (
        "import sys, runpy\nsys.argv = ['search', '--help']\ntry:\n    runpy.run_module('search', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('ray', 'torch', 'timm', 'mlflow', 'numpy') if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "[]"
