"""The shape of core/: its modules import each other without a cycle and in layers (model -> training ->
runs/monitoring -> command line), no core/ module imports the app, and no function is too long to read at once.

The import graph is read from the source with `ast` (imports inside functions count: they are dependencies that
run later). The body of `if __name__ == "__main__":` does not count: it runs only when the file is the script
(`python -m core.train`), as the module __main__, never when core.train is imported.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "core"
MAX_FUNCTION_LINES = 80
LAYERS = [  # a module may import its own layer and the ones before it, never a later one
    {"pooling", "model", "losses", "checkpoint", "images", "render", "viewable", "experiments", "attribution"},
    {"data", "batches", "distributed", "rundir", "devices", "train"},
    {"monitor", "launch"},
    {"cli"},
]


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The core modules a module's source imports, anywhere but under its `if __name__ == "__main__":`."""
    found: set[str] = set()
    pending: list[ast.AST] = [node for node in tree.body if not _is_main_guard(node)]
    while pending:
        node = pending.pop()
        pending.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("core.")}
        elif isinstance(node, ast.ImportFrom) and node.module == "core":
            found |= {a.name for a in node.names if a.name in modules}  # from core import rundir
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("core."):
            found.add(node.module.split(".")[1])
    return found & modules


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in CORE.glob("*.py") if p.stem != "__init__"}
    return {m: _imports(ast.parse((CORE / f"{m}.py").read_text()), modules) - {m} for m in sorted(modules)}


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
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append((lines, f"{path.name}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    tree = ast.parse("from core import rundir\ndef f():\n    from core.launch import reap\n"
                     "if __name__ == '__main__':\n    from core.cli import main\n")
    assert _imports(tree, {"rundir", "launch", "cli"}) == {"rundir", "launch"}


def test_core_has_no_import_cycle():
    assert find_cycle(import_graph()) is None, f"import cycle in core/: {' -> '.join(find_cycle(import_graph()))}"


def test_core_modules_import_only_their_layer_and_the_ones_below():
    graph = import_graph()
    assert set().union(*LAYERS) == set(graph), "place each new core module in LAYERS"
    layer_of = {module: index for index, layer in enumerate(LAYERS) for module in layer}
    upward = [f"{m} -> {t}" for m, targets in graph.items() for t in targets if layer_of[t] > layer_of[m]]
    assert not upward, f"imports from a lower layer to a higher one: {upward}"


def test_no_core_module_imports_the_app_or_streamlit():
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in ("app", "streamlit")], f"{path.name} imports {names}"


def test_no_function_in_core_is_longer_than_80_lines():
    assert not long_functions(), f"functions over {MAX_FUNCTION_LINES} lines: {long_functions()}"


@pytest.mark.parametrize("module, must_not_load", [("core.train", "core.cli"), ("core.monitor", "core.launch"),
                                                   ("core.model", "core.train")])
def test_importing_a_module_does_not_load_the_layer_above(module, must_not_load):
    code = f"import sys, {module}; print({must_not_load!r} in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=CORE.parent).stdout.strip()
    assert loaded == "False", f"importing {module} loaded {must_not_load}"
