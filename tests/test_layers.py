"""The layers point one way: trainables <- run directory <- engine and analysis <- CLI.

Read from the source (no imports run): which modules import Ray, and what analysis/ and
trainables/ may import from search/. search.settings and search.spaces belong to the floor with
analysis.records: they import nothing of the engine or the CLI, and no Ray.
"""

import ast
import subprocess
import sys

from tests.conftest import REPO

# The engine's modules that need Ray; no other module imports it.
RAY_MODULES = {
    "search._adapter",
    "search.engine",
    "search.gpu_packing",
    "search.ray_session",
    "search.recorder",
    "search.strategies",
    "search.trial",
    "search.tracking",
    "search.tuner",
    "search.workers",
    # The scheduler registry's builders import Ray when a search starts, never at import.
    "search.schedulers",
}
# search.settings checks --sampler and --scheduler against the registries: they are floor too.
FLOOR = {
    "search.settings",
    "search.spaces",
    "search.registry",
    "search.samplers",
    "search.schedulers",
    "search.grid_sampler",
    "search.proposals",  # the repeat and stopped-trial rules: stdlib only
}


def _imports(package: str) -> dict[str, set[str]]:
    found = {}
    for path in sorted((REPO / package).glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[f"{package}.{path.stem}"] = names
    return found


def test_only_the_engines_modules_import_ray():
    modules = _imports("search") | _imports("analysis") | _imports("trainables")
    importing = {name for name, names in modules.items() if any(n == "ray" or n.startswith("ray.") for n in names)}
    assert importing == RAY_MODULES


def test_analysis_and_trainables_import_only_the_floor_of_search():
    for package in ("analysis", "trainables"):
        for module, names in _imports(package).items():
            upward = {n for n in names if n.startswith("search") and n not in FLOOR}
            assert not upward, f"{module} imports {sorted(upward)}"


def test_the_floor_of_search_imports_no_engine_and_no_cli():
    for module, names in _imports("search").items():
        if module in FLOOR | {"search.prepare", "search._adapter"}:
            assert not {n for n in names if n.startswith("search.") and n not in FLOOR}, module


def test_checking_input_imports_no_ray():
    code = "import sys, search.cli, search.prepare, analysis.records, analysis.leaderboard; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
