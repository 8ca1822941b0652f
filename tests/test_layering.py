"""The shape of core/: packages in layers (model -> data -> training -> runs, analysis beside training, the
`python -m core.train` entry point on top), no import cycle between modules, none between packages, no core/ module
that imports the app or Streamlit, and no module or function too long to read at once.

The import graph is read from the source with `ast`. Imports inside functions count (they are dependencies that run
later), and so does the body of `if __name__ == "__main__":`: a reader following imports meets it like any other.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "core"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400
LAYERS = [  # a package may import its own layer's modules and the layers before it, never a later one
    {"model"},
    {"data"},
    {"training", "analysis"},  # beside each other: neither imports the other
    {"runs"},
    {"train", "inspect"},  # core/train.py, core/inspect.py: the `python -m core.train` and `core.inspect` entry points
]


def module_name(path: Path) -> str:
    """core/training/loop.py -> 'training.loop'; core/training/__init__.py -> 'training'; core/train.py -> 'train'."""
    parts = path.relative_to(CORE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(CORE.rglob("*.py")) if p != CORE / "__init__.py"}


def _imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The core modules a module's source imports, anywhere in it. `from core.x import y` counts as core.x.y when
    that is a module (a submodule import), else as core.x."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name[len("core."):] for a in node.names if a.name.startswith("core.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("core"):
            base = node.module[len("core."):] if node.module != "core" else ""
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if sub in modules else base)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    modules = core_modules()
    return {m: _imports(ast.parse(p.read_text()), set(modules)) - {m} for m, p in modules.items()}


def package_of(module: str) -> str:
    return module.split(".")[0]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {package_of(m): set() for m in graph}
    for module, targets in graph.items():
        packages[package_of(module)] |= {package_of(t) for t in targets} - {package_of(module)}
    return packages


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, grey/black marking)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "grey"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "grey":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "black"
        path.pop()
        return None

    for module in graph:
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[tuple[int, str]]:
    """(lines, "file:line name") of every function or method in core/ longer than `limit`, longest first."""
    found = []
    for name, path in core_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append((lines, f"{name}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_imports_are_read_from_everywhere_including_main_blocks():
    tree = ast.parse("from core.training import rundir\ndef f():\n    from core.runs.launcher import stop\n"
                     "if __name__ == '__main__':\n    from core.runs.cli import main\n")
    modules = {"training", "training.rundir", "runs", "runs.launcher", "runs.cli"}
    assert _imports(tree, modules) == {"training.rundir", "runs.launcher", "runs.cli"}
    assert package_graph({"training.loop": {"runs.cli"}, "runs.cli": {"training"}, "runs": set(),
                          "training": set()}) == {"training": {"runs"}, "runs": {"training"}}


def test_core_has_no_import_cycle_between_modules_or_packages():
    graph = import_graph()
    assert find_cycle(graph) is None, f"import cycle in core/: {' -> '.join(find_cycle(graph))}"
    packages = package_graph(graph)
    assert find_cycle(packages) is None, f"import cycle between packages: {' -> '.join(find_cycle(packages))}"


def test_core_packages_import_only_their_layer_and_the_ones_below():
    packages = package_graph(import_graph())
    assert set().union(*LAYERS) == set(packages), "place each new core package in LAYERS"
    layer_of = {package: index for index, layer in enumerate(LAYERS) for package in layer}
    upward = [f"{p} -> {t}" for p, targets in packages.items() for t in targets if layer_of[t] >= layer_of[p]]
    assert not upward, f"imports from a package to its own layer or a higher one: {upward}"


def test_every_package_says_what_it_is_and_what_it_may_import():
    for package in set().union(*LAYERS) - {"train", "inspect"}:  # the entry points are modules
        doc = ast.get_docstring(ast.parse((CORE / package / "__init__.py").read_text())) or ""
        assert "import" in doc.lower() and len(doc.splitlines()) <= 4, f"core/{package}/__init__.py: {doc!r}"


def test_no_core_module_imports_the_app_or_streamlit():
    for name, path in core_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in ("app", "streamlit")], f"{name} imports {names}"


def test_no_module_in_core_is_longer_than_400_lines():
    long = {name: n for name, path in core_modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_in_core_is_longer_than_80_lines():
    assert not long_functions(), f"functions over {MAX_FUNCTION_LINES} lines: {long_functions()}"


def test_app_and_bench_import_core_by_its_packages_public_names():
    """`from core.training import train`, not `from core.training.loop import train`: the packages' __init__ is the
    API the app and the benchmarks use."""
    root = CORE.parent
    deep = []
    for path in sorted([*root.glob("app/**/*.py"), *root.glob("bench/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("core.") and module.count(".") > 1:
                deep.append(f"{path.relative_to(root)}: from {module} import ...")
    assert not deep, f"deep imports: {deep}"


@pytest.mark.parametrize("module, must_not_load", [("core.model", "core.data"), ("core.data", "core.training"),
                                                   ("core.training", "core.runs"), ("core.analysis", "core.training"),
                                                   ("core.training", "core.analysis"), ("core.runs", "core.train")])
def test_importing_a_module_does_not_load_the_layer_above(module, must_not_load):
    code = f"import sys, {module}; print({must_not_load!r} in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=CORE.parent).stdout.strip()
    assert loaded == "False", f"importing {module} loaded {must_not_load}"
