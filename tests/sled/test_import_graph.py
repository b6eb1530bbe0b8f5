"""The import structure of ``trioxide.actors``, checked statically with ``ast``.

* No import cycle among ``actors`` modules, counting every import: module level,
  function level and ``TYPE_CHECKING`` blocks, relative and absolute. Messages belong to
  their receiver and a protocol flows one way (the manager imports the runner's messages;
  the runner knows only the ``ManagerPort`` interface defined in its own module).
* ``actors`` uses the runtime and the traces only through their public surface: no
  ``trioxide.runtime._x`` / ``trioxide.traces._x`` module, no underscore name imported from
  them, no ``runtime._x`` attribute through a module alias, and never the bare top-level
  ``runtime``/``traces``/``actors`` packages (importable only as ``trioxide.*``).
* No ``x._name`` attribute that no ``actors`` module defines: that is someone else's
  private state (the runtime's ``ref._cell``, ``self._actor_cell``, ...).
"""

from __future__ import annotations

import ast
import graphlib
from dataclasses import dataclass
from pathlib import Path

import pytest

import trioxide.actors

PACKAGE = "trioxide.actors"
ACTORS_DIR = Path(trioxide.actors.__file__).resolve().parent
GUARDED = ("trioxide.runtime", "trioxide.traces")  # imported only through public names
BARE_NAMES = ("runtime", "traces", "actors")  # the folders, importable only as trioxide.*


@dataclass(frozen=True)
class Import:
    """One imported module (``name``) or one name from a module (``module``, ``name``)."""

    line: int
    module: str  # absolute module the statement imports from (or imports)
    name: str | None = None  # for ``from module import name``


def module_name(path: Path, root: Path = ACTORS_DIR, package: str = PACKAGE) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def actor_modules(root: Path = ACTORS_DIR, package: str = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` inside *module*."""
    if level == 0:
        assert target is not None
        return target
    base = module.split(".")
    if not is_package:
        base.pop()  # a plain module's package
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target]) if target else ".".join(base)


def imports_in(module: str, is_package: bool, source: str) -> list[Import]:
    """Every import in *source*, wherever it is (``ast.walk`` visits function bodies)."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(Import(node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            found.extend(Import(node.lineno, base, alias.name) for alias in node.names)
    return found


def import_graph(sources: dict[str, tuple[bool, str]]) -> dict[str, set[str]]:
    """module -> the modules of *sources* it imports (``from pkg import submodule`` counts
    as importing the submodule)."""
    graph: dict[str, set[str]] = {m: set() for m in sources}
    for module, (is_package, source) in sources.items():
        for imp in imports_in(module, is_package, source):
            full = f"{imp.module}.{imp.name}" if imp.name is not None else None
            if full is not None and full in sources:
                graph[module].add(full)
            elif imp.module in sources:
                graph[module].add(imp.module)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        return cycle
    return None


def _guarded(module: str) -> bool:
    return any(module == g or module.startswith(g + ".") for g in GUARDED)


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of names, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def private_uses(module: str, is_package: bool, source: str) -> list[str]:
    """Reaches into the runtime's or the traces' private surface (``line: what``)."""
    bad: list[str] = []
    for imp in imports_in(module, is_package, source):
        if imp.module.split(".")[0] in BARE_NAMES:
            bad.append(f"{imp.line}: bare import of {imp.module!r} (use trioxide.*)")
            continue
        names = [imp.module] if imp.name is None else [imp.module, f"{imp.module}.{imp.name}"]
        for name in names:
            if _guarded(name) and any(part.startswith("_") for part in name.split(".")[1:]):
                bad.append(f"{imp.line}: imports private {name!r}")
                break
    # Attributes through a module binding: ``from trioxide import runtime`` then
    # ``runtime._x``; ``import trioxide.traces`` then ``trioxide.traces._x``.
    tree = ast.parse(source)
    bound: set[str] = set()  # dotted names that denote a guarded module here
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _guarded(alias.name):
                    bound.add(alias.asname or alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                if _guarded(f"{node.module}.{alias.name}"):
                    bound.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        dotted = _dotted(node)
        if dotted is not None and any(dotted.startswith(b + ".") for b in bound):
            bad.append(f"{node.lineno}: private attribute {dotted!r}")
    return bad


def _sources() -> dict[str, tuple[bool, str]]:
    return {
        name: (path.name == "__init__.py", path.read_text(encoding="utf-8"))
        for name, path in actor_modules().items()
    }


# -- the checks --------------------------------------------------------------------------


def test_actors_modules_import_no_cycle() -> None:
    sources = _sources()
    assert len(sources) > 20, f"found only {sorted(sources)} under {ACTORS_DIR}"
    graph = import_graph(sources)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle among actors modules: " + " -> ".join(cycle or [])


def test_the_runner_protocol_flows_one_way() -> None:
    graph = import_graph(_sources())
    manager, runner = f"{PACKAGE}.instance_manager", f"{PACKAGE}.instance_runner"
    assert runner in graph[manager]  # the manager knows the runner's messages
    assert manager not in graph[runner]  # the runner never imports the manager's module


def test_actors_use_only_public_runtime_and_traces() -> None:
    problems = [
        f"{path.relative_to(ACTORS_DIR.parent)}:{problem}"
        for name, path in actor_modules().items()
        for problem in private_uses(name, path.name == "__init__.py", path.read_text("utf-8"))
    ]
    assert not problems, "actors reach into private runtime/traces surface:\n" + "\n".join(problems)


def defined_names(trees: list[ast.Module]) -> set[str]:
    """Every name the given modules define or bind (functions, classes, attributes
    assigned, variables, imports)."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[-1])
    return names


def foreign_private_attributes(trees: dict[str, ast.Module]) -> list[str]:
    """``x._name`` where no module in *trees* defines ``_name``: someone else's private
    state (``ref._cell``, ``self._actor_cell``, ``handle._scope``, ...)."""
    ours = defined_names(list(trees.values()))
    return [
        f"{module}:{node.lineno}: {ast.unparse(node)}"
        for module, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and node.attr not in ours
    ]


def test_actors_touch_no_foreign_private_attributes() -> None:
    trees = {name: ast.parse(src) for name, (_pkg, src) in _sources().items()}
    problems = foreign_private_attributes(trees)
    assert not problems, "actors use private attributes they do not define:\n" + "\n".join(problems)


# -- the checker itself (so the checks above cannot pass vacuously) -----------------------

_PKG = "pkg"
_FIXTURE = {
    "pkg": (True, ""),
    "pkg.manager": (False, "from .runner import Run\n"),
    "pkg.runner": (False, "def later() -> None:\n    from .manager import Done\n"),
    "pkg.sub": (True, "from . import leaf\n"),
    "pkg.sub.leaf": (False, "from ..runner import Run\nimport pkg.manager as m\n"),
}


def test_checker_sees_function_level_relative_and_submodule_imports() -> None:
    graph = import_graph(_FIXTURE)
    assert graph == {
        "pkg": set(),
        "pkg.manager": {"pkg.runner"},
        "pkg.runner": {"pkg.manager"},
        "pkg.sub": {"pkg.sub.leaf"},
        "pkg.sub.leaf": {"pkg.runner", "pkg.manager"},
    }
    cycle = find_cycle(graph)
    assert cycle is not None and set(cycle) == {"pkg.manager", "pkg.runner"}
    del graph["pkg.runner"]
    assert find_cycle(graph) is None


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ("from trioxide.runtime import Actor, Watch", True),
        ("from trioxide.runtime.testing import run_seeded", True),
        ("from trioxide import runtime, traces\nruntime.Actor\ntraces.Tracer", True),
        ("def f() -> None:\n    from trioxide.traces.server import TraceServer", True),
        ("from trioxide.runtime._actor import ActorCell", False),
        ("from trioxide.runtime import _actor", False),
        ("import trioxide.runtime._ref", False),
        ("from trioxide.runtime.testing._explore import SeededRun", False),
        ("def f() -> None:\n    from trioxide.traces._event import TraceEvent", False),
        ("from trioxide import runtime\nruntime._actor.ActorCell", False),
        ("import trioxide.traces as tr\ntr._sinks", False),
        ("import trioxide.runtime\ntrioxide.runtime._mailbox", False),
        ("import trioxide.runtime\ntrioxide.actors._runtime_demo", True),
        ("from trioxide.runtime import Watch\nWatch(0)._value", True),  # not a module
        ("import runtime", False),
        ("from traces import Tracer", False),
    ],
)
def test_checker_flags_private_runtime_and_traces(source: str, ok: bool) -> None:
    assert (private_uses("trioxide.actors.mod", False, source) == []) is ok


def test_checker_flags_foreign_private_attributes() -> None:
    ours = ast.parse(
        "class A:\n"
        "    def __init__(self) -> None:\n"
        "        self._mine = 1\n"
        "    def _helper(self) -> int:\n"
        "        return self._mine\n"
    )
    theirs = ast.parse(
        "def f(a: A, ref: object) -> None:\n"
        "    a._helper()\n"
        "    ref._cell.add_watcher(a)\n"
        "    a._actor_cell\n"
    )
    found = foreign_private_attributes({"ours": ours, "theirs": theirs})
    assert sorted(found) == ["theirs:3: ref._cell", "theirs:4: a._actor_cell"]
