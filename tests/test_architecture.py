"""The package's floors hold: imports run one way, no circles, no private names across files.

The floors, bottom to top (``docs/architecture.md``, "The map"):

1. ``params/``  parameters and the numeric specification (NumPy only)
2. ``rtl/``   Amaranth components             ``host/``  PyTorch, export, compiler, runtime
3. ``gen/``   Verilog, manifests, synthesis, board platforms
4. ``sim/``   testbenches, simulators, the simulated and emulated boards
   ``verify/`` formal proofs (yowasp-sby) and mutation testing of ``rtl/``
5. ``flows/`` the ``mulfree`` command, one module per flow

A module may import its own folder and any folder on a lower floor; two folders on one floor
do not import each other. Every ``import`` statement counts, also one inside a function.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {"params": 1, "rtl": 2, "host": 2, "gen": 3, "sim": 4, "verify": 4, "flows": 5}
MAX_LINES = 600


def _modules():
    """``{dotted name below mulfree: (path, ast)}`` for every module of the package."""
    mods = {}
    for folder in FLOORS:
        for path in sorted((ROOT / folder).glob("*.py")):
            name = folder if path.stem == "__init__" else f"{folder}.{path.stem}"
            mods[name] = (path, ast.parse(path.read_text(), str(path)))
    return mods


MODULES = _modules()


def _package_of(name):
    path = MODULES[name][0]
    return name if path.stem == "__init__" else name.rpartition(".")[0]


def _imports(name):
    """``[(imported module, [names], line)]`` of module ``name`` within the package."""
    path, tree = MODULES[name]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name).split(".") if _package_of(name) else []
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "mulfree":
                target = node.module.partition(".")[2]
            else:
                continue
            names = [a.name for a in node.names]
            # ``from . import x``: x may be a module of the package.
            for n in names:
                if f"{target}.{n}".strip(".") in MODULES:
                    found.append((f"{target}.{n}".strip("."), [], node.lineno))
            found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "mulfree":
                    found.append((a.name.partition(".")[2], [], node.lineno))
    return found


def _folder(target):
    return target.split(".")[0] if target else ""


def test_every_folder_has_a_floor():
    folders = {p.name for p in ROOT.iterdir()
               if p.is_dir() and (p / "__init__.py").exists() and p.name != "tests"}
    assert folders == set(FLOORS)


def test_imports_run_down_the_floors():
    wrong = []
    for name in MODULES:
        mine = _folder(name)
        for target, _, line in _imports(name):
            theirs = _folder(target)
            if theirs == "":
                # The package's face (mulfree/__init__.py) names everything: nothing below
                # imports it.
                wrong.append(f"{name}:{line} imports the package face, mulfree")
                continue
            if theirs == mine:
                continue
            if theirs not in FLOORS or FLOORS[theirs] >= FLOORS[mine]:
                wrong.append(f"{name}:{line} ({mine}/, floor {FLOORS[mine]}) imports "
                             f"mulfree.{target} (floor {FLOORS.get(theirs, '?')})")
    assert not wrong, "imports that do not run down the floors:\n" + "\n".join(wrong)


def _graph():
    graph = {name: set() for name in MODULES}
    for name in MODULES:
        for target, _, _ in _imports(name):
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_the_circle_check_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_crosses_a_file():
    wrong = []
    for name in MODULES:
        for target, names, line in _imports(name):
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    wrong.append(f"{name}:{line} imports {n} from mulfree.{target}")
        # module._name on a module imported from the package
        path, tree = MODULES[name]
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    aliases[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                target_mod = None
                for target, _, _ in _imports(name):
                    if target.rpartition(".")[2] == aliases.get(node.value.id, None) \
                            and target in MODULES:
                        target_mod = target
                if target_mod:
                    wrong.append(f"{name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not wrong, "private names used across files:\n" + "\n".join(sorted(set(wrong)))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_file_past_what_one_person_holds(name):
    path = MODULES[name][0]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (most {MAX_LINES})"
