"""The structure the GUIDE promises, checked from the source.

* No stage module (``alod/stages/*``) imports another stage module; stages reach each other's files
  only through :mod:`alod.layout` (and share :mod:`alod.stages.setup`).
* Shared layers never import stages or orchestrators (the arrows only point down).
* Only :mod:`alod.layout` joins run-file names onto paths.
* :mod:`alod.config` is a leaf: it imports nothing from alod but :mod:`alod.utils` (the error type).
* No import cycle among alod modules at module level (``if TYPE_CHECKING:`` blocks do not run).
* At most 12 modules at the top of ``alod/`` (packages, ``__init__`` and ``__main__`` not counted).
* No function over 80 lines (``end_lineno - lineno + 1``, decorators and docstring included).
* Every registry is an :class:`alod.utils.Registry`, and no module fills a dict registry by hand.
* Every function-level import says why it is there (``# why`` on its line): they exist only to
  keep torch (or another slow import) out of light commands and config checks.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ALOD = Path(__file__).resolve().parent.parent / "alod"
#: The stages; stages/setup.py is their shared set-up, not a stage.
STAGES = sorted(p.stem for p in (ALOD / "stages").glob("*.py") if p.stem not in ("__init__", "setup"))
ORCHESTRATORS = ("alod.compare", "alod.serve", "alod.cli", "alod.commands")
MAX_TOP_LEVEL_MODULES = 12
MAX_FUNCTION_LINES = 80
#: module -> registry name: every name a YAML or the command line chooses from.
REGISTRIES = {
    "alod.strategies": "STRATEGIES",
    "alod.cycle.selection": "SELECTORS",
    "alod.cycle.oracles": "ORACLES",
    "alod.data.readers": "LABEL_FORMATS",
    "alod.data.sources": "DATA_KINDS",
    "alod.models": "MODEL_PRESETS",
    "alod.annotate.formats": "ANNOTATION_FORMATS",
    "alod.data.transforms": "TRANSFORM_PRESETS",
    "alod.commands.common": "COMMANDS",
    "alod.cycle.batch_rules": "BATCH_RULES",
}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ALOD.parent).with_suffix("").parts)


def test_the_stages_exist():
    assert STAGES == ["annotation", "cycles", "pretrain", "scoring"]


def test_no_stage_imports_another_stage():
    for name in STAGES:
        path = ALOD / "stages" / f"{name}.py"
        others = {f"alod.stages.{o}" for o in STAGES if o != name}
        bad = {m for m in _imports(path) if any(m == o or m.startswith(o + ".") for o in others)}
        assert not bad, f"{_module(path)} imports the stage(s) {sorted(bad)}; share through alod.layout or alod.stages.setup"


def test_shared_layers_import_no_stage_and_no_orchestrator():
    for path in ALOD.rglob("*.py"):
        mod = _module(path)
        if mod.startswith(("alod.stages",) + ORCHESTRATORS) or mod == "alod.__main__":
            continue
        bad = {m for m in _imports(path) if m.startswith(("alod.stages",) + ORCHESTRATORS)}
        assert not bad, f"{mod} is a shared layer but imports {sorted(bad)}"


def test_only_the_layout_joins_run_file_names():
    names = {"schedule.json", "state.json", "partition.json", "metrics.json", "metrics.jsonl", "config.yaml",
             "checkpoint_last.pt", "pretrain", "cycles", "scores"}
    for path in ALOD.rglob("*.py"):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                    and node.right.value in names):
                raise AssertionError(f"{_module(path)}:{node.lineno} joins {node.right.value!r} onto a path; "
                                     "take it from alod.layout.RunLayout")


def test_the_checker_would_see_a_stage_import(tmp_path):
    # The test above must be able to fail: a function-level import is found too.
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from alod.stages.scoring import run_scoring\n")
    assert "alod.stages.scoring" in _imports(f)


# ------------------------------------------------------------------------------ module graph
def _sources() -> dict[str, Path]:
    """Every alod module name (a package by its ``__init__``) -> its file."""
    out = {}
    for path in ALOD.rglob("*.py"):
        parts = path.relative_to(ALOD.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _module_level_imports(tree: ast.Module):
    """Import nodes that run when the module is imported: the body and its if/try/with blocks,
    not function or class bodies, not ``if TYPE_CHECKING:``."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try, ast.With)) and not _is_type_checking(node):
            for field in ("body", "orelse", "finalbody", "handlers"):
                stack.extend(getattr(node, field, []) or [])
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)


def _targets(node, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The alod modules an import node loads (``from pkg import mod`` names the submodule)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    out = {base} if base in known else set()
    out |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
    return out


def module_graph() -> dict[str, set[str]]:
    """alod module -> the alod modules it imports at module level."""
    sources = _sources()
    known = set(sources)
    graph = {}
    for mod, path in sources.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges = set()
        for node in _module_level_imports(tree):
            edges |= _targets(node, mod, path.name == "__init__.py", known)
        graph[mod] = edges - {mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_config_imports_only_the_error_type():
    path = ALOD / "config.py"
    alod_imports = {m for m in _imports(path) if m == "alod" or m.startswith("alod.")}
    assert alod_imports <= {"alod.utils", "alod.utils.AlodError"}, (
        f"alod.config imports {sorted(alod_imports)}; it is a leaf: each registry checks its own section "
        "(alod.stages.setup.check_config calls them)")


def test_no_module_level_import_cycle():
    cycle = find_cycle(module_graph())
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    graph = module_graph()
    assert "alod.cycle.pool" in graph["alod.cycle.selection"]  # the graph sees real edges


def test_at_most_twelve_top_level_modules():
    modules = sorted(p.stem for p in ALOD.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, f"{len(modules)} modules at alod/ top level: {modules}"


def test_no_function_over_eighty_lines():
    long = []
    for path in sorted(ALOD.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{_module(path)}.{node.name} ({n} lines, line {node.lineno})")
    assert not long, "functions over 80 lines (split them into named steps): " + "; ".join(long)


@pytest.mark.parametrize("module, name", sorted(REGISTRIES.items()))
def test_every_registry_is_a_registry(module, name):
    from alod.utils import Registry

    registry = getattr(importlib.import_module(module), name)
    assert isinstance(registry, Registry) and len(registry) > 0, f"{module}.{name} is not a filled Registry"


def test_no_registry_is_filled_by_hand():
    # The pattern Registry replaced: a module-level dict written into by a decorator, NAME[key] = value.
    bad = []
    for path in sorted(ALOD.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(fn):
                for target in getattr(node, "targets", []):
                    if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                            and target.value.id.isupper()):
                        bad.append(f"{_module(path)}:{node.lineno} writes into {target.value.id}")
    assert not bad, "; ".join(bad) + ": register through alod.utils.Registry"


def test_function_level_imports_say_why():
    missing = []
    for path in sorted(ALOD.rglob("*.py")):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines), filename=str(path))
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and "# why" not in lines[node.lineno - 1]:
                    missing.append(f"{_module(path)}:{node.lineno}")
    assert not missing, ("function-level imports without a '# why' comment (import at module level unless "
                         "it keeps torch or a slow import out of a light command): " + ", ".join(missing))


def test_the_checkers_would_see_a_cycle_and_a_silent_import(tmp_path):
    # find_cycle on the real graph plus one back edge must fail; an uncommented function import is seen.
    graph = {k: set(v) for k, v in module_graph().items()}
    graph["alod.utils"].add("alod.config")
    assert find_cycle(graph) is not None
    f = tmp_path / "x.py"
    f.write_text("def f():\n    import json\n")
    node = next(n for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Import))
    assert "# why" not in f.read_text().splitlines()[node.lineno - 1]
