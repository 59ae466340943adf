"""The structure the GUIDE promises, checked from the source.

* No stage module (``alod/stages/*``) imports another stage module; stages reach each other's files
  only through :mod:`alod.layout`.
* Shared layers never import stages or orchestrators (the arrows only point down).
* Only :mod:`alod.layout` joins run-file names onto paths.
"""
from __future__ import annotations

import ast
from pathlib import Path

ALOD = Path(__file__).resolve().parent.parent / "alod"
STAGES = sorted(p.stem for p in (ALOD / "stages").glob("*.py") if p.stem != "__init__")
ORCHESTRATORS = ("alod.demo", "alod.compare", "alod.serve", "alod.cli", "alod.commands")


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
