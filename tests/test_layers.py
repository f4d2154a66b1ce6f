"""Imports point down and never in a circle (DESIGN.md, Layout).

Every module of tenancy/, stacks/, components/ and policy/ sits in one layer of LAYERS, lowest first; a module may
import its own layer and the layers below, never one above, and no chain of imports may lead back to where it
started. Imports are read from the source (ast, nothing is imported), inside functions too: an import moved into a
function to dodge a circle still ties the lower module to the higher one, so the code moves instead. A module also
never imports another module's private (`_name`) names: what is shared gets a public name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tenancy", "stacks", "components", "policy")

# Lowest first. An entry names a module, or with `.*` a package and every module under it; the most specific
# entry wins (`tenancy.fleet.capacity` is core even though `tenancy.fleet.*` is higher up).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Pure: errors, names, the catalogue models, progress, the database driver's thin wrapper, the recording
    # runtime. Nothing here knows an environment.
    ("core", ("tenancy", "tenancy.errors", "tenancy.naming", "tenancy.progress", "tenancy.catalog.*", "tenancy.db",
              "tenancy.recorder")),
    # An environment as its files declare it, parsed once: its config, capacity, each tenant's placement, its
    # stacks and what each reads, the deployed record's format, the operator's settings and deploying identities,
    # a rollout's catalogue overlay. Still no Pulumi resource, engine or store.
    ("environment", ("tenancy.envconfig", "tenancy.fleet", "tenancy.fleet.capacity", "tenancy.fleet.placement",
                     "tenancy.fleet.report", "tenancy.fleet.sample", "tenancy.topology", "tenancy.record_format",
                     "tenancy.operator", "tenancy.operator.settings", "tenancy.operator.deployers",
                     "tenancy.operator.overlay")),
    # The CrossGuard pack: plain functions over resources.
    ("policy", ("policy.*",)),
    # ComponentResources: typed arguments in, resources out.
    ("components", ("components.*",)),
    # One interface per store kind (PostgreSQL, replication, Firestore, objects, graph) and a tenant's stores.
    ("stores", ("tenancy.stores.*",)),
    # The registry of record, and what resolves a tenant's stores through it: the applications' client library.
    ("registry", ("tenancy.operations.registry", "tenancy.operations.stores", "tenancy.client")),
    # The stack programs.
    ("stacks", ("stacks.*",)),
    # Running stacks: offline (one program under the recorder), the plan and its policy check, what a change
    # touches, the engines (Automation API, offline).
    ("plan and engines", ("tenancy.offline", "tenancy.plan", "tenancy.planwrite", "tenancy.policycheck",
                          "tenancy.tfplan", "tenancy.changes", "tenancy.ci", "tenancy.prcomment", "tenancy.engine",
                          "tenancy.plancache")),
    # The Pulumi Kubernetes Operator as an engine: Stack objects, their schema, rollouts on it.
    ("operator", ("tenancy.operator.stacks", "tenancy.operator.schema", "tenancy.operator.engine")),
    # Deploys (in waves) and the deployed record, destroys, and a tenant's data paired across stores.
    ("lifecycle", ("tenancy.lifecycle.*",)),
    # Operations on tenant data under the protocol (lease, journal, freeze), and the fleet's own moves.
    ("operations", ("tenancy.operations.*", "tenancy.registration")),
    # What a person or a pipeline runs.
    ("commands", ("tenancy.cli.*", "tenancy.__main__", "tenancy.delivery", "tenancy.localservers")),
)


@dataclass(frozen=True)
class Import:
    source: str          # the importing module
    target: str          # the imported module of this project
    file: str            # the importing file, relative to the root
    line: int
    text: str            # the import statement as written
    private: tuple[str, ...] = ()    # private names it takes from `target`


def module_name(root: Path, path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if package else parts), package


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, tuple[Path, bool]]:
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name, is_package = module_name(root, path)
            found[name] = (path, is_package)
    return found


def _resolve(name: str, known: dict) -> str | None:
    """The longest prefix of `name` that is a module of this project (None: a third-party or standard module)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return None


def imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    """Every import of a project module, at module level or inside a function, as written in the source."""
    known = modules(root, packages)
    out = []
    for source, (path, is_package) in known.items():
        tree = ast.parse(path.read_text(), str(path))
        here = source if is_package else source.rpartition(".")[0]
        rel = str(path.relative_to(root))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _resolve(alias.name, known)
                    if target and target != source:
                        out.append(Import(source, target, rel, node.lineno, ast.unparse(node)))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - (node.level - 1)]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                for alias in node.names:
                    # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                    target = _resolve(f"{base_name}.{alias.name}", known)
                    sub = target == f"{base_name}.{alias.name}"
                    if not sub:
                        target = _resolve(base_name, known)
                    if target and target != source:
                        private = (alias.name,) if alias.name.startswith("_") and not sub else ()
                        out.append(Import(source, target, rel, node.lineno, ast.unparse(node), private))
    return out


def layer_of(module: str, layers=LAYERS) -> tuple[int, str] | None:
    best = None
    for rank, (name, entries) in enumerate(layers):
        for entry in entries:
            if entry.endswith(".*"):
                package = entry[:-2]
                hit = module == package or module.startswith(package + ".")
                weight = len(package.split("."))
            else:
                hit = module == entry
                weight = len(entry.split(".")) + 0.5       # a module named outright beats its package's pattern
            if hit and (best is None or weight > best[0]):
                best = (weight, rank, name)
    return None if best is None else (best[1], best[2])


def undeclared(found: list[str], layers=LAYERS) -> list[str]:
    return [f"{m}: no layer declared; add it to LAYERS in tests/test_layers.py"
            for m in found if layer_of(m, layers) is None]


def upward(edges: list[Import], layers=LAYERS) -> list[str]:
    """Imports of a module in a higher layer than the importer's."""
    problems: list[str] = []
    for e in edges:
        src, dst = layer_of(e.source, layers), layer_of(e.target, layers)
        if src is not None and dst is not None and dst[0] > src[0]:
            problems.append(f"{e.file}:{e.line}: `{e.text}` points up: {e.source} is in layer '{src[1]}', "
                            f"{e.target} in layer '{dst[1]}' above it")
    return list(dict.fromkeys(problems))       # `from m import a, b` is one import


def circles(edges: list[Import]) -> list[str]:
    """One line per import circle (a strongly connected set of modules): the modules in order, each step with the
    file, line and statement that makes it."""
    graph: dict[str, dict[str, Import]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
        graph.setdefault(e.target, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:       # Tarjan's algorithm; the graph is a few hundred modules deep at most
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    problems = []
    for component in components:
        members = set(component)
        # the shortest way back to the first module, through modules of the circle only
        start = component[0]
        paths = {start: [start]}
        queue = [start]
        found = None
        while queue and found is None:
            v = queue.pop(0)
            for w in sorted(graph[v]):
                if w == start:
                    found = paths[v] + [start]
                    break
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
        steps = [f"{a} -> {b} ({graph[a][b].file}:{graph[a][b].line} `{graph[a][b].text}`)"
                 for a, b in zip(found, found[1:])]
        problems.append(f"import circle through {len(component)} modules ({', '.join(component)}): " + "; ".join(steps))
    return problems


def private_imports(edges: list[Import]) -> list[str]:
    return [f"{e.file}:{e.line}: `{e.text}` takes private {', '.join(e.private)} from {e.target}; give it a public name"
            for e in edges if e.private]


def private_uses(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """`module._name` where `module` is another module of this project bound by an import: the same private name
    taken, only through the module."""
    known = modules(root, packages)
    out = []
    for source, (path, is_package) in known.items():
        tree = ast.parse(path.read_text(), str(path))
        here = source if is_package else source.rpartition(".")[0]
        bound: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in known:
                        bound[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                base = (".".join(here.split(".")[:len(here.split(".")) - (node.level - 1)] + ([node.module] if node.module else []))
                        if node.level else node.module or "")
                for alias in node.names:
                    if f"{base}.{alias.name}" in known:
                        bound[alias.asname or alias.name] = f"{base}.{alias.name}"
        rel = str(path.relative_to(root))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and node.attr.startswith("_") and not node.attr.startswith("__") and bound[node.value.id] != source):
                out.append(f"{rel}:{node.lineno}: `{ast.unparse(node)}` takes private {node.attr} from "
                           f"{bound[node.value.id]}; give it a public name")
    return sorted(set(out))


# ------------------------------------------------------------------------------------------------ the tree

@pytest.fixture(scope="module")
def tree() -> list[Import]:
    return imports(ROOT)


def test_every_module_has_a_layer():
    found = sorted(modules(ROOT))
    assert len(found) > 80 and "tenancy.cli" in found and "components.cluster" in found   # the walk sees the tree
    assert undeclared(found) == []


def test_no_import_points_up_a_layer(tree):
    assert any(e.source == "stacks.platform" and e.target == "components.cluster" for e in tree)   # it sees imports
    assert any(e.source == "tenancy.engine" and e.target == "tenancy.offline" for e in tree)        # in functions too
    assert upward(tree) == []


def test_no_import_circle(tree):
    assert circles(tree) == []


def test_no_module_takes_another_modules_private_names(tree):
    assert private_imports(tree) == []


def test_no_module_reaches_into_another_through_its_name():
    assert private_uses(ROOT) == []


def test_every_declared_module_exists():
    """A renamed or deleted module leaves no stale entry behind."""
    found = set(modules(ROOT))
    stale = [entry for _, entries in LAYERS for entry in entries
             if not any(layer_of(m, ((None, (entry,)),)) for m in found)]
    assert stale == []


# ------------------------------------------------------------------------------ the checks themselves can fail

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_circle_is_reported_with_each_step(tmp_path):
    root = _tree(tmp_path, {
        "tenancy/__init__.py": "",
        "tenancy/low.py": "def f():\n    from tenancy.high import g   # hidden in a function\n    return g\n",
        "tenancy/mid.py": "from tenancy import low\n",
        "tenancy/high.py": "import tenancy.mid\n\ndef g():\n    pass\n",
    })
    edges = imports(root, ("tenancy",))
    assert circles(edges) == [
        "import circle through 3 modules (tenancy.high, tenancy.low, tenancy.mid): "
        "tenancy.high -> tenancy.mid (tenancy/high.py:1 `import tenancy.mid`); "
        "tenancy.mid -> tenancy.low (tenancy/mid.py:1 `from tenancy import low`); "
        "tenancy.low -> tenancy.high (tenancy/low.py:2 `from tenancy.high import g`)"]


def test_an_import_up_a_layer_names_the_file_the_import_and_both_layers(tmp_path):
    root = _tree(tmp_path, {
        "stacks/__init__.py": "",
        "stacks/platform.py": "def build():\n    from tenancy.lifecycle.record import record_json\n",
        "tenancy/__init__.py": "",
        "tenancy/lifecycle/__init__.py": "",
        "tenancy/lifecycle/record.py": "from ..catalog import Catalog\nimport stacks.platform\n",
        "tenancy/catalog.py": "class Catalog:\n    pass\n",
    })
    layers = (("core", ("tenancy", "tenancy.catalog")), ("stacks", ("stacks.*",)),
              ("lifecycle", ("tenancy.lifecycle.*",)))
    edges = imports(root, ("tenancy", "stacks"))
    assert {(e.source, e.target) for e in edges} == {
        ("stacks.platform", "tenancy.lifecycle.record"), ("tenancy.lifecycle.record", "tenancy.catalog"),
        ("tenancy.lifecycle.record", "stacks.platform")}
    assert upward(edges, layers) == [
        "stacks/platform.py:2: `from tenancy.lifecycle.record import record_json` points up: stacks.platform is in "
        "layer 'stacks', tenancy.lifecycle.record in layer 'lifecycle' above it"]
    assert circles(edges) == [
        "import circle through 2 modules (stacks.platform, tenancy.lifecycle.record): "
        "stacks.platform -> tenancy.lifecycle.record (stacks/platform.py:2 `from tenancy.lifecycle.record import "
        "record_json`); tenancy.lifecycle.record -> stacks.platform (tenancy/lifecycle/record.py:2 "
        "`import stacks.platform`)"]
    assert undeclared(["tenancy.lifecycle.record", "tenancy.fresh"], layers) == [
        "tenancy.fresh: no layer declared; add it to LAYERS in tests/test_layers.py"]


def test_the_most_specific_entry_decides_a_modules_layer():
    layers = (("low", ("tenancy.fleet.capacity",)), ("high", ("tenancy.fleet.*",)))
    assert layer_of("tenancy.fleet.capacity", layers) == (0, "low")
    assert layer_of("tenancy.fleet.migrate", layers) == (1, "high")
    assert layer_of("tenancy.fleet", layers) == (1, "high")
    assert layer_of("tenancy.fleetwide", layers) is None


def test_a_private_name_taken_from_another_module_is_reported(tmp_path):
    root = _tree(tmp_path, {
        "stacks/__init__.py": "",
        "stacks/platform.py": "def _operator():\n    pass\n",
        "stacks/cells.py": "from stacks.platform import SHARED, _operator\nfrom stacks import platform\n",
    })
    assert private_imports(imports(root, ("stacks",))) == [
        "stacks/cells.py:1: `from stacks.platform import SHARED, _operator` takes private _operator from "
        "stacks.platform; give it a public name"]


def test_a_private_name_reached_through_a_module_is_reported(tmp_path):
    root = _tree(tmp_path, {
        "tenancy/__init__.py": "",
        "tenancy/stores/__init__.py": "",
        "tenancy/stores/postgres.py": "def _as_tenant():\n    pass\n",
        "tenancy/verify.py": "from tenancy.stores import postgres as pg\n\ndef f(c):\n    pg._as_tenant(c)\n    pg.__name__\n",
    })
    assert private_uses(root, ("tenancy",)) == [
        "tenancy/verify.py:4: `pg._as_tenant` takes private _as_tenant from tenancy.stores.postgres; give it a "
        "public name"]
