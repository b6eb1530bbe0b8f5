"""The ``Actor`` base class: its helpers cannot be shadowed; spawn options are one spec."""

from __future__ import annotations

import re
import typing

import msgspec
import pytest

import trioxide
from trioxide import Actor, ChildSpec, InvalidActor, Runtime, SpawnOptions


class Ping(msgspec.Struct, frozen=True):
    pass


def test_helpers_are_the_public_methods_and_properties_of_actor() -> None:
    assert {"ref", "queued", "spawn", "start_soon", "start", "send_after", "send_every",
            "monitor", "receive", "serve_until", "reply", "stop"} == trioxide.HELPERS  # fmt: skip
    assert not trioxide.HELPERS & {"handle", "on_start", "on_stop", "admit", "priority", "drain"}


@pytest.mark.parametrize("name", sorted(trioxide.HELPERS))
def test_a_class_attribute_named_like_a_helper_is_refused_at_class_creation(name: str) -> None:
    with pytest.raises(InvalidActor, match=rf"Bad\.{name} would hide the runtime helper"):
        type("Bad", (Actor,), {name: None})


class Shadowing(Actor):
    def __init__(self, what: str) -> None:
        setattr(self, what, "mine")  # e.g. self.monitor = StateMonitor(...)

    async def handle(self, msg: Ping) -> None:
        pass


@pytest.mark.parametrize("name", sorted(trioxide.HELPERS))
async def test_assigning_a_helper_name_fails_the_spawn_with_a_clear_error(
    actor_runtime: Runtime, name: str
) -> None:
    with pytest.raises(InvalidActor, match=rf"Shadowing\.{name} would hide"):
        await actor_runtime.spawn(Shadowing, name)
    assert actor_runtime.actors() == []  # nothing left behind


def test_spawn_options_are_declared_once() -> None:
    """``SpawnOptions`` (the keywords) and ``ChildSpec`` (defaults, validation) agree."""
    assert list(typing.get_type_hints(SpawnOptions)) == list(ChildSpec.__dataclass_fields__)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("mailbox_size", 0),
        ("mailbox_size", True),
        ("restart", "sometimes"),
        ("max_restarts", -1),
        ("within", 0),
        ("within", float("nan")),
        ("backoff", "soon"),
        ("backoff", -1.0),
    ],
)
async def test_bad_spawn_options_are_refused_naming_the_value(
    actor_runtime: Runtime, option: str, value: object
) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        await actor_runtime.spawn(Shadowing, "x", **{option: value})  # type: ignore[misc]
    assert actor_runtime.actors() == []


async def test_an_unknown_spawn_option_is_refused(actor_runtime: Runtime) -> None:
    with pytest.raises(TypeError, match=r"unknown option.*mailbox"):
        await actor_runtime.spawn(Shadowing, "x", mailbox=3)  # type: ignore[call-arg]


def test_the_top_level_package_is_the_runtime_api() -> None:
    import trioxide.runtime

    assert trioxide.__all__ == trioxide.runtime.__all__
    assert all(getattr(trioxide, n) is getattr(trioxide.runtime, n) for n in trioxide.__all__)


def test_the_top_level_package_loads_its_names_and_subpackages_on_first_use() -> None:
    """``trioxide`` is lazy (so the command can start quickly): every public name and
    subpackage is there on first use, ``dir`` lists them, and a wrong name is an
    ``AttributeError`` that names it."""
    assert trioxide.traces.Tracer is not None
    assert trioxide.testing.explore is not None
    assert {"Actor", "open_runtime", "traces", "runtime", "actors"} <= set(dir(trioxide))
    with pytest.raises(AttributeError, match="'trioxide' has no attribute 'Actr'"):
        trioxide.Actr  # noqa: B018
