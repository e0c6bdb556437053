"""No module of src/lottery imports one that imports it back, directly or through others: the graph of imports
between modules (module level, inside functions and under `if TYPE_CHECKING:` alike: an annotation names a
dependency too) is acyclic. A package's `__init__` counts as a module; importing `a.b.c` is an edge to `a.b.c` only
(not to the packages above it, which Python runs first but which a module does not depend on by naming them).

And the layers (docs/architecture.md): the readers (trackers, reports, export, the results layer, the API's
readers) never import the engine (`experiments`, `training`), and the engine never imports a reader (`loggers`,
`reports`); they meet in `lottery.results` and `lottery.events`."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (in functions, under `if TYPE_CHECKING:`)."""
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def module_names(root: Path) -> dict[str, Path]:
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(root: Path, package: str = "lottery") -> dict[str, set[str]]:
    """module -> the modules of `package` it imports."""
    modules = {name: path for name, path in module_names(root).items() if name.split(".")[0] == package}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in modules else base)
            for target in targets:
                while target and target not in modules:  # `import lottery.x.y as z` of a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_of_lottery_imports_one_that_imports_it_back():
    assert cycles(import_graph(SOURCE)) == []


def _package(tmp_path: Path, run_dir: str, loop: str) -> Path:
    package = tmp_path / "lottery"
    (package / "store").mkdir(parents=True, exist_ok=True)
    (package / "training").mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "store" / "__init__.py").write_text("from lottery.store.run_dir import RunDir\n")
    (package / "store" / "run_dir.py").write_text(run_dir)
    (package / "training" / "__init__.py").write_text("")
    (package / "training" / "loop.py").write_text(loop)
    return tmp_path


def test_the_check_finds_a_cycle_through_a_function_level_import(tmp_path):
    loop = "from typing import TYPE_CHECKING\nfrom ..store import run_dir\n"
    root = _package(tmp_path, "def write():\n    from lottery.training import loop\n", loop)
    graph = import_graph(root)
    assert graph["lottery.training.loop"] == {"lottery.store.run_dir"}
    assert cycles(graph) == [["lottery.store.run_dir", "lottery.training.loop"]]
    _package(tmp_path, "def write():\n    pass\n", loop)
    assert cycles(import_graph(root)) == []


def test_the_check_finds_a_cycle_through_an_import_under_type_checking(tmp_path):
    run_dir = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lottery.training.loop import Job\n"
    root = _package(tmp_path, run_dir, "from lottery.store.run_dir import RunDir\n")
    graph = import_graph(root)
    assert graph["lottery.store.run_dir"] == {"lottery.training.loop"}
    assert cycles(graph) == [["lottery.store.run_dir", "lottery.training.loop"]]
    (tmp_path / "lottery" / "store" / "run_dir.py").write_text("from typing import TYPE_CHECKING\n")
    assert cycles(import_graph(root)) == []


READERS = (
    "lottery.loggers",
    "lottery.reports",
    "lottery.export",
    "lottery.results",
    "lottery.api.notebook",
    "lottery.api.analysis",
)
ENGINE = ("lottery.experiments", "lottery.training")


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def layer_violations(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """reader -> the engine modules it imports, engine module -> the readers it imports (`lottery.loggers`,
    `lottery.reports`): what the layering forbids."""
    found = {}
    for module, targets in graph.items():
        if _within(module, READERS):
            bad = [t for t in targets if _within(t, ENGINE)]
        elif _within(module, ENGINE):
            bad = [t for t in targets if _within(t, ("lottery.loggers", "lottery.reports"))]
        else:
            continue
        if bad:
            found[module] = sorted(bad)
    return found


def test_no_reader_imports_the_engine_and_the_engine_imports_no_reader():
    graph = import_graph(SOURCE)
    assert {"lottery.reports.load", "lottery.loggers.track", "lottery.training.loop"} <= set(graph)
    assert layer_violations(graph) == {}


def test_the_results_layer_and_the_readers_reach_no_experiment_module_even_through_others():
    graph = import_graph(SOURCE)

    def reach(module: str) -> set[str]:
        seen, todo = set(), [module]
        while todo:
            for target in graph[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        return seen

    results = {m: sorted(t for t in reach(m) if _within(t, ENGINE)) for m in graph if _within(m, ("lottery.results",))}
    assert results == {m: [] for m in results}
    readers = {
        m: sorted(t for t in reach(m) if _within(t, ("lottery.experiments",))) for m in graph if _within(m, READERS)
    }
    assert readers == {m: [] for m in readers}


def test_the_layering_check_finds_a_reader_importing_the_engine_and_the_engine_importing_a_reader(tmp_path):
    graph = {
        "lottery.reports.load": {"lottery.experiments.run", "lottery.results.source"},
        "lottery.training.loop": {"lottery.loggers.track", "lottery.events"},
        "lottery.experiments.run": {"lottery.results.rows"},
        "lottery.wiring": {"lottery.experiments.run", "lottery.loggers.track"},
    }
    assert layer_violations(graph) == {
        "lottery.reports.load": ["lottery.experiments.run"],
        "lottery.training.loop": ["lottery.loggers.track"],
    }


def test_the_store_and_the_collectives_import_nothing_above_them():
    graph = import_graph(SOURCE)
    above = ("lottery.training", "lottery.experiments", "lottery.reports", "lottery.cli", "lottery.api")
    low = [m for m in graph if m.startswith(("lottery.store", "lottery.collective"))]
    assert "lottery.store.layout" in low and "lottery.collective" in low
    assert {m: sorted(t for t in graph[m] if t.startswith(above)) for m in low} == {m: [] for m in low}


def test_every_built_in_registry_gives_its_names_below_the_plugins(tmp_path):
    """lottery.plugins and the spec ask lottery.registry which names are built in; the registries fill it as they
    are imported, which `import lottery` (run first by any import of lottery.x) does before anything can ask."""
    import os
    import subprocess
    import sys

    script = (
        "from lottery.registry import builtin_names, is_builtin\n"
        "from lottery.plugins import KINDS\n"
        "print([(kind, len(builtin_names(kind)) > 0, all(is_builtin(kind, n) for n in builtin_names(kind))) "
        "for kind in KINDS], is_builtin('model', 'resnet56'), is_builtin('dataset', 'no_such_set'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SOURCE)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.split("\n")[0] == "[('model', True, True), ('dataset', True, True), ('loss', True, True)] True False"
    )


def unresolved_imports(root: Path, package: str = "lottery") -> list[str]:
    """`module: name` of every `from <package>.x import ...` / `import <package>.x` whose module is neither a module
    nor a package directory under `root` (a module moved away: the graph above would see the package instead)."""
    modules = module_names(root)
    found = []
    for name, path in sorted(modules.items()):
        if name.split(".")[0] != package:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            named = [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
            named += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for target in named:
                if target and target.split(".")[0] == package and target not in modules:
                    if not (root / Path(*target.split("."))).is_dir():
                        found.append(f"{name}: {target}")
    return found


def test_every_import_of_the_package_names_a_module_that_exists(tmp_path):
    assert unresolved_imports(SOURCE) == []
    (tmp_path / "lottery" / "reports").mkdir(parents=True)
    (tmp_path / "lottery" / "reports" / "figures.py").write_text("from lottery.experiments.gone import label\n")
    assert unresolved_imports(tmp_path) == ["lottery.reports.figures: lottery.experiments.gone"]
