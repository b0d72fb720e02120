"""The layering rule of ``src/advpure``, stated once (``LAYERS``) and checked on every import.

Every module of the package belongs to one *unit* (a subpackage or a top-level module; the
longest unit that names it wins, so ``advpure.config.enums`` sits at the bottom while the rest of
``advpure.config`` sits near the top). Units are ordered in ``LAYERS``, lowest first. The rule:

- a module imports only from its own unit or from units in lower layers: never upward, and never
  sideways into another unit of its own layer (the units of one layer are independent);
- no two modules import each other, directly or through others (no cycles);
- the pairs in ``FORBIDDEN`` never import each other whatever their layers (DESIGN.md's "an
  attack knows nothing of diffusion").

Which imports count: every ``import`` / ``from ... import`` in a module, parsed with ``ast``:
module-level ones, those inside functions or methods (they run later, but they are still
dependencies), and those under ``if TYPE_CHECKING:`` (a type named in a signature is a dependency
too; none is exempt). Importing ``advpure.a.b.c`` also runs ``advpure/a/__init__.py`` and
``advpure/a/b/__init__.py``: what those run at import time counts as imported by the importer
(the rule "``config.enums`` is at the bottom" is then true at run time, not only on paper).

docs/ARCHITECTURE.md shows the same table between its ``layers`` markers; a test below keeps it
equal to ``LAYERS``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src"
PACKAGE = "advpure"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("advpure", "advpure.errors"),
    ("advpure.io", "advpure.config.enums", "advpure.config.checks"),
    ("advpure.weights_files", "advpure.checkpoints", "advpure.instantiate", "advpure.fingerprints"),
    ("advpure.data", "advpure.models", "advpure.diffusion"),
    ("advpure.purifiers",),
    ("advpure.attacks", "advpure.profiling"),
    ("advpure.evaluation", "advpure.training"),
    ("advpure.certify",),
    ("advpure.audit",),
    ("advpure.sweeps",),
    ("advpure.config",),
    ("advpure.tasks",),
    ("advpure.cli",),
    ("advpure.api",),
    ("advpure.purify", "advpure.report"),
)
"""Units, lowest layer first. ``advpure`` (the root package's ``__init__``) names only itself."""

WHAT_EACH_LAYER_HOLDS = (
    "errors every layer raises (the root package holds only the version)",
    "file reading and writing; the config vocabulary (enums) and range checks the schemas and modules share",
    "weights files, advpure checkpoints, building objects from `_target_`, the fingerprint of a run's work",
    "datasets, classifiers, diffusion math and backbones: independent of each other",
    "purifiers: (B, C, H, W) in [0, 1] -> the same, through a backbone",
    "attacks (they differentiate whatever model they get); measurements for benchmarks",
    "the evaluation loop and the training modules",
    "certification by randomized smoothing",
    "audits of a defense's evaluation",
    "sweep reports",
    "the typed schema of every config group, start-up validation, conf/'s catalog and resolvers",
    "the tasks run.py runs",
    "the command line",
    "the Python API",
    "the entry points of python -m advpure.purify and python -m advpure.report",
)

FORBIDDEN: dict[tuple[str, str], str] = {
    ("advpure.attacks", "advpure.diffusion"): "an attack knows nothing of diffusion (DESIGN.md, Code shape)",
}
"""(importer unit, imported unit): why that import is never allowed."""


@dataclass(frozen=True)
class Import:
    """One import of one advpure module by another. ``where`` is ``module level``, ``in a function``
    or ``under TYPE_CHECKING``; ``via`` names the package ``__init__`` that an implicit import runs."""

    importer: str
    target: str
    path: Path
    line: int
    where: str
    via: str = ""

    def describe(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        through = f" (run by {self.via}/__init__.py on importing {self.via}.*)" if self.via else ""
        return f"{path}:{self.line} ({self.where}) imports {self.target}{through}"


def module_files(source: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of ``package`` under ``source``."""
    modules = {}
    for path in sorted((source / package).rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                nodes.update(id(n) for n in ast.walk(child))
    return nodes


def _function_nodes(tree: ast.AST) -> set[int]:
    nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            nodes.update(id(n) for n in ast.walk(node) if n is not node)
    return nodes


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The modules an import statement loads (``from a import b`` loads ``a.b`` when it is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    return [source, *(f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules)]


def collect_imports(source: Path, package: str) -> tuple[dict[str, Path], list[Import]]:
    """Every module of ``package`` and every import (of the package's own modules) they make."""
    modules = module_files(source, package)
    imports = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        guarded, nested = _type_checking_nodes(tree), _function_nodes(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            where = (
                "under TYPE_CHECKING"
                if id(node) in guarded
                else "in a function"
                if id(node) in nested
                else "module level"
            )
            for target in _targets(node, module, path.name == "__init__.py", modules):
                if target in modules and target != module:
                    imports.append(Import(module, target, path, node.lineno, where))
    return modules, imports


def implicit_imports(imports: Iterable[Import]) -> list[Import]:
    """What the package ``__init__`` files run when an importer outside the package imports one of
    its submodules: each module-level import of that ``__init__``, charged to the importer."""
    imports = list(imports)
    at_import_time: dict[str, list[Import]] = {}
    for item in imports:
        if item.where == "module level" and item.path.name == "__init__.py":
            at_import_time.setdefault(item.importer, []).append(item)
    implied = []
    for item in imports:
        parts = item.target.split(".")
        for depth in range(2, len(parts)):
            package = ".".join(parts[:depth])
            if item.importer == package or item.importer.startswith(package + "."):
                continue
            for inner in at_import_time.get(package, []):
                implied.append(Import(item.importer, inner.target, item.path, item.line, item.where, via=package))
    return implied


def unit_of(module: str, layers: tuple[tuple[str, ...], ...]) -> tuple[int, str] | None:
    """(layer index, unit) of ``module``: the longest unit naming it (the root names only itself)."""
    best: tuple[int, str] | None = None
    for index, units in enumerate(layers):
        for unit in units:
            names = module == unit or (unit != PACKAGE and module.startswith(unit + "."))
            if names and (best is None or len(unit) > len(best[1])):
                best = (index, unit)
    return best


def layer_violations(
    imports: Iterable[Import], layers: tuple[tuple[str, ...], ...], forbidden: dict[tuple[str, str], str]
) -> list[str]:
    """One line per import that runs upward, sideways within a layer, or across a forbidden pair."""
    problems = []
    for item in imports:
        low, high = unit_of(item.importer, layers), unit_of(item.target, layers)
        if low is None or high is None or low[1] == high[1]:
            continue
        if high[0] > low[0]:
            problems.append(f"upward: {item.describe()}: {low[1]} (layer {low[0]}) < {high[1]} (layer {high[0]})")
        elif high[0] == low[0]:
            problems.append(f"sideways: {item.describe()}: {low[1]} and {high[1]} share layer {low[0]}")
        reason = forbidden.get((low[1], high[1]))
        if reason:
            problems.append(f"forbidden: {item.describe()}: {reason}")
    return sorted(set(problems))


def import_cycles(imports: Iterable[Import]) -> list[list[Import]]:
    """Each strongly connected set of modules (Tarjan), as one cycle of imports through it."""
    graph: dict[str, dict[str, Import]] = {}
    for item in imports:
        graph.setdefault(item.importer, {}).setdefault(item.target, item)
        graph.setdefault(item.target, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_one_cycle(component, graph) for component in components]


def _one_cycle(component: list[str], graph: dict[str, dict[str, Import]]) -> list[Import]:
    """A shortest cycle through the component's first module (breadth-first inside the component)."""
    start, members = component[0], set(component)
    parents: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt, item in sorted(graph[node].items()):
                if nxt == start:
                    path = [item]
                    while path[0].importer != start:
                        path.insert(0, parents[path[0].importer])
                    return path
                if nxt in members and nxt not in parents:
                    parents[nxt] = item
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {component}")


def describe_cycle(cycle: list[Import]) -> str:
    chain = " -> ".join([cycle[0].importer, *(item.target for item in cycle)])
    return chain + "\n    " + "\n    ".join(item.describe() for item in cycle)


def layers_table(layers: tuple[tuple[str, ...], ...] = LAYERS) -> str:
    """The Markdown table docs/ARCHITECTURE.md shows (highest layer first)."""
    rows = ["| layer | units (independent of each other) | what they hold |", "|---|---|---|"]
    for number in reversed(range(len(layers))):
        units = ", ".join(f"`{unit}`" for unit in layers[number])
        rows.append(f"| {number} | {units} | {WHAT_EACH_LAYER_HOLDS[number]} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- the real package


@pytest.fixture(scope="module")
def advpure_imports() -> tuple[dict[str, Path], list[Import]]:
    return collect_imports(SOURCE, PACKAGE)


def test_every_module_has_a_layer(advpure_imports):
    modules, _ = advpure_imports
    unplaced = [module for module in modules if unit_of(module, LAYERS) is None]
    assert not unplaced, f"modules in no unit of LAYERS (add their unit to a layer in {__file__}): {unplaced}"
    assert len(WHAT_EACH_LAYER_HOLDS) == len(LAYERS)


def test_no_import_cycles(advpure_imports):
    _, imports = advpure_imports
    cycles = import_cycles(imports)
    assert not cycles, "import cycles (move the shared code down a layer):\n" + "\n".join(map(describe_cycle, cycles))


def test_imports_run_down_the_layers(advpure_imports):
    _, imports = advpure_imports
    problems = layer_violations([*imports, *implicit_imports(imports)], LAYERS, FORBIDDEN)
    assert not problems, "imports against the layering (see the module docstring):\n" + "\n".join(problems)


def test_architecture_doc_shows_these_layers():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = text.split("<!-- layers:start -->\n", 1)[1].split("<!-- layers:end -->", 1)[0]
    assert block.strip() == layers_table(), (
        "docs/ARCHITECTURE.md's layer table differs from LAYERS: copy layers_table()"
    )


# ----------------------------------------------------------------------------- the checker itself


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_checker_finds_cycles_and_upward_imports(tmp_path):
    """A synthetic package with each kind of fault: the checker names every offending import."""
    source = _write(
        tmp_path,
        {
            "toy/__init__.py": "",
            "toy/low/__init__.py": "",
            "toy/low/a.py": "def f():\n    from toy.high import b\n    return b\n",
            "toy/low/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy.low.d import D\n",
            "toy/low/d.py": "from toy.low import c\n",
            "toy/high/__init__.py": "",
            "toy/high/b.py": "from toy.low import a\n",
            "toy/side.py": "import toy.low.a\n",
        },
    )
    layers = (("toy.low",), ("toy.high", "toy.side"))
    modules, imports = collect_imports(source, "toy")
    assert set(modules) == {
        "toy",
        "toy.low",
        "toy.low.a",
        "toy.low.c",
        "toy.low.d",
        "toy.high",
        "toy.high.b",
        "toy.side",
    }
    cycles = sorted(describe_cycle(cycle) for cycle in import_cycles(imports))
    assert len(cycles) == 2
    assert cycles[0].startswith("toy.high.b -> toy.low.a -> toy.high.b")
    assert "toy/low/a.py:2 (in a function) imports toy.high.b" in cycles[0]
    assert cycles[1].startswith("toy.low.c -> toy.low.d -> toy.low.c")
    assert "toy/low/c.py:3 (under TYPE_CHECKING) imports toy.low.d" in cycles[1]
    problems = layer_violations(imports, layers, {("toy.side", "toy.low"): "the side stays apart"})
    assert any(p.startswith("upward:") and "toy/low/a.py:2" in p and "toy.high.b" in p for p in problems), problems
    assert any(p.startswith("forbidden:") and "toy/side.py:1" in p for p in problems), problems
    assert not any("toy/high/b.py" in p for p in problems)  # downward is fine


def test_checker_finds_sideways_and_package_init_imports(tmp_path):
    """Units of one layer are independent; a package ``__init__`` that imports a higher layer
    makes every importer of its submodules import it."""
    source = _write(
        tmp_path,
        {
            "toy/__init__.py": "",
            "toy/vocab/__init__.py": "from toy.app import run\n",
            "toy/vocab/words.py": "WORDS = ()\n",
            "toy/left.py": "from toy.vocab.words import WORDS\n",
            "toy/right.py": "from toy import left\n",
            "toy/app.py": "def run():\n    return None\n",
        },
    )
    layers = (("toy.vocab.words",), ("toy.left", "toy.right"), ("toy.app", "toy.vocab"))
    _, imports = collect_imports(source, "toy")
    problems = layer_violations([*imports, *implicit_imports(imports)], layers, {})
    assert any(p.startswith("sideways:") and "toy/right.py:1" in p for p in problems), problems
    assert any(
        p.startswith("upward:") and "toy/left.py:1" in p and "run by toy.vocab/__init__.py" in p for p in problems
    ), problems
    assert unit_of("toy.vocab.words", layers) == (0, "toy.vocab.words")
    assert unit_of("toy.vocab", layers) == (2, "toy.vocab")
