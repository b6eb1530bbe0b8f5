"""No actor class in ``trioxide.actors`` shadows a name of the runtime's ``Actor`` base.

The helpers (``ref``, ``spawn``, ``monitor``, ``stop``, ... and the reserved
``_actor_cell``) must never be assigned or redefined by a subclass - ``self.monitor = x``
silently replaces ``Actor.monitor(ref)`` - and the hooks (``on_start``, ``handle``, ...) may
only be overridden as methods, never assigned on an instance. The names come from
``trioxide.runtime.Actor`` itself, so a new helper is covered at once.
"""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

from trioxide.runtime import Actor

from .test_import_graph import actor_modules

HOOKS = frozenset({"on_start", "handle", "on_stop", "admit", "priority", "drain"})
BASE_NAMES = frozenset(
    {n for n in dir(Actor) if not (n.startswith("__") and n.endswith("__"))}
    | set(inspect.get_annotations(Actor))
)
HELPERS = BASE_NAMES - HOOKS


def _actor_classes() -> list[type[Actor]]:
    found: list[type[Actor]] = []
    for name in actor_modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Actor)
                and obj is not Actor
                and obj.__module__ == name
            ):
                found.append(obj)
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


ACTOR_CLASSES = _actor_classes()


def _self_assignments(cls: type) -> list[tuple[int, str]]:
    """``(line, name)`` of every ``self.name = ...`` (and ``setattr(self, "name", ...)``)
    in the class's own source."""
    tree = ast.parse(inspect.getsource(cls))
    _, first = inspect.getsourcelines(cls)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store | ast.Del)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            found.append((first + node.lineno - 1, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("setattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == "self"
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            found.append((first + node.lineno - 1, node.args[1].value))
    return found


def shadowing_problems(cls: type) -> list[str]:
    """Why *cls* shadows a name of ``Actor`` (empty if it does not)."""
    where = inspect.getsourcefile(cls)
    problems = [
        f"{where}:{line}: self.{name} shadows Actor.{name}"
        for line, name in _self_assignments(cls)
        if name in BASE_NAMES
    ]
    for name, value in vars(cls).items():
        if name in HELPERS:
            problems.append(f"{cls.__qualname__}.{name} redefines the Actor helper {name!r}")
        elif name in HOOKS and not inspect.isfunction(value):
            problems.append(f"{cls.__qualname__}.{name} must be a method (a hook), not {value!r}")
    return problems


def test_the_base_names_are_known() -> None:
    assert {"ref", "spawn", "monitor", "stop", "reply", "_actor_cell"} <= HELPERS
    assert len(ACTOR_CLASSES) >= 10, ACTOR_CLASSES


@pytest.mark.parametrize("cls", ACTOR_CLASSES, ids=lambda c: c.__qualname__)
def test_actor_class_shadows_no_base_name(cls: type[Actor]) -> None:
    problems = shadowing_problems(cls)
    assert not problems, "\n".join(problems)


class _Shadowing:
    """What the check must catch (deliberately not an ``Actor``: never spawned)."""

    stop = None  # a class attribute over a helper
    drain = 0  # a hook that is not a method

    def __init__(self) -> None:
        self.monitor = None
        setattr(self, "ref", None)  # noqa: B010

    async def handle(self, msg: object) -> None:
        self.queued = 0


def test_the_checker_sees_shadowing() -> None:
    problems = shadowing_problems(_Shadowing)
    assert len(problems) == 5, problems
    for name in ("self.monitor", "self.ref", "self.queued", "helper 'stop'", "drain must be"):
        assert any(name in p for p in problems), (name, problems)
