"""The package's layers point one way: corpus readers, then tokenization, then data, then the model and
its engine, then the trainer, then the commands. No module imports one of a higher layer (lazy imports
inside functions included) and no two modules import each other, directly or in a ring."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "pretrain"
LAYERS = [  # lowest first; a module belongs to the first entry that names it or a package above it
    ("foundations", ["pretrain.atomic", "pretrain.progress", "pretrain.presets", "pretrain.ds_json", "pretrain.config",
                     "pretrain.jit_ops", "pretrain.distributed", "pretrain.host_sync"]),
    ("corpus", ["pretrain.corpus"]),
    ("tokenization", ["pretrain.tokenization"]),
    ("data", ["pretrain.data"]),
    ("model and engine", ["pretrain.model", "pretrain.planner", "pretrain.parallel", "pretrain.engine", "pretrain.optim",
                          "pretrain.metrics"]),
    ("trainer", ["pretrain.trainer", "pretrain.step_tracking", "pretrain.checkpoint", "pretrain.manifest",
                 "pretrain.run_lock", "pretrain.run_summary", "pretrain.run_tokenizer", "pretrain.plots", "pretrain.export",
                 "pretrain.evaluation"]),
    ("commands", ["pretrain.cli", "pretrain.demo", "pretrain.pipeline"]),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to tests/test_layers.py's LAYERS")


def imports(path: Path, modules: set[str], name: str) -> set[str]:
    """The package's modules that ``path`` (module ``name``) imports, at any depth (lazy imports in
    functions too)."""
    found = set()
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for imported in names:
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported:
                found.add(imported)
    return found - {name}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): {m for m in imports(p, modules, module_name(p)) if m != "pretrain"} for p in paths}


def test_every_import_points_down_the_layers():
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            if layer_of(target) > layer_of(module):
                wrong.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    assert wrong == []


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if target.startswith(module + "."):  # a package importing its own submodules (re-exports)
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The rules above would be empty words if lazy imports went unseen."""
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from pretrain.trainer import Trainer\n    import pretrain.corpus.sources\n")
    found = imports(source, {"pretrain.trainer", "pretrain.corpus.sources", "pretrain.corpus"}, "pretrain.x")
    assert found == {"pretrain.trainer", "pretrain.corpus.sources"}


def family_branches(path: Path) -> list[str]:
    """``family == "gpt2"``-like comparisons (``!=``, ``in`` too) of a name or attribute called ``family`` or
    ``model_type`` with a model family's name, in ``path``."""
    from pretrain.presets import FAMILIES

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        named = any(isinstance(o, ast.Name) and o.id in ("family", "model_type") or
                    isinstance(o, ast.Attribute) and o.attr in ("family", "model_type", "name") for o in operands)
        literals = {o.value for o in operands if isinstance(o, ast.Constant)}
        literals |= {e.value for o in operands if isinstance(o, (ast.Tuple, ast.List, ast.Set)) for e in o.elts
                     if isinstance(e, ast.Constant)}
        if named and literals & set(FAMILIES):
            found.append(f"{path}:{node.lineno}")
    return found


def test_no_model_family_branch_outside_the_family_modules():
    """Callers ask the family (pretrain/model/families/), never test its name: a new family is one module.
    The package, its tools and its benchmarks alike."""
    families = PACKAGE / "model" / "families"
    paths = [path for folder in (PACKAGE, ROOT / "tools", ROOT / "benchmarks") for path in sorted(folder.rglob("*.py"))]
    found = [hit for path in paths if families not in path.parents for hit in family_branches(path)]
    assert found == []


def test_the_family_branch_check_sees_a_branch(tmp_path):
    source = tmp_path / "x.py"
    source.write_text('def f(preset, hf):\n    if preset.family == "gpt2":\n        pass\n'
                      '    return hf.config.model_type in ("llama", "x")\n')
    assert len(family_branches(source)) == 2
