"""Every sled invariant can fail: each test breaks the implementation on purpose (a small
mutation, switched on only in that test) and shows the #3325 explorer catching it within
200 seeds - the invariant checked on its own, so it is that one that sees the bug.

The token design itself holds them all (tests/sled/test_sled_explorer.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from trioxide.actors import instance_manager, instance_runner, invariants, sagas
from trioxide.actors.instance_manager import InstanceManager, ReleaseToken
from trioxide.actors.instance_runner import InstanceRunner
from trioxide.runtime.testing import explore

SEEDS = range(200)


def caught(check: invariants.SledInvariant, *, at_end: bool = False) -> str:
    """Explore the token design checking only *check*; the violation's message."""
    inv = sagas._sled_invariant(check)
    result = explore(
        sagas.token_scenario,
        seeds=SEEDS,
        invariants=() if at_end else [inv],
        at_end=[inv] if at_end else (),
        progress=False,
    )
    assert result.error is None, f"the scenario raised: {result.error}"
    assert result.violation is not None, f"{check.__name__} missed the mutation in 200 seeds"
    assert result.violation.invariant == check.__name__
    return result.violation.message


def patch(monkeypatch: pytest.MonkeyPatch, cls: type, name: str, fn: Callable[..., Any]) -> None:
    monkeypatch.setattr(cls, name, fn)


def test_gen_in_table_catches_a_generation_that_is_not_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = InstanceManager._create

    async def create(self: InstanceManager, *args: Any) -> Any:
        entry = await original(self, *args)
        self.last_gen[entry.propolis_id] -= 1  # forgets the generation it handed out
        return entry

    patch(monkeypatch, InstanceManager, "_create", create)
    assert "above last_gen" in caught(invariants.gen_in_table)


def test_only_one_alive_catches_a_second_runner_while_the_first_tears_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = InstanceManager.find

    def find(self: InstanceManager, propolis_id: str) -> Any:
        entry = original(self, propolis_id)
        return None if entry is not None and entry.terminating else entry  # forgets it

    patch(monkeypatch, InstanceManager, "find", find)
    assert "more than one live runner" in caught(invariants.only_one_alive)


def test_strong_ref_implies_table_catches_an_entry_removed_too_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = InstanceManager.handle

    async def handle(self: InstanceManager, msg: Any) -> Any:
        result = await original(self, msg)
        if isinstance(msg, instance_manager.EnsureUnregistered):
            self.table.pop(msg.propolis_id, None)  # drops the entry before its runner exits
        return result

    patch(monkeypatch, InstanceManager, "handle", handle)
    assert "not in the table" in caught(invariants.strong_ref_implies_table)


def test_tokens_belong_to_running_sagas_catches_a_release_that_is_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = InstanceManager.handle

    async def handle(self: InstanceManager, msg: Any) -> Any:
        if isinstance(msg, ReleaseToken):
            return None  # the release is lost
        return await original(self, msg)

    patch(monkeypatch, InstanceManager, "handle", handle)
    assert "tokens of finished sagas" in caught(invariants.tokens_belong_to_running_sagas)


def test_zone_ops_never_collide_catches_a_runner_that_does_not_wait_for_cleanup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trioxide.actors.zone_cleanup import WaitCleaned

    original = instance_runner.ActorRef.ask

    async def ask(self: Any, msg: Any, **kw: Any) -> Any:
        if isinstance(msg, WaitCleaned):
            return None  # the new runner creates its zone without waiting for the old one
        return await original(self, msg, **kw)

    patch(monkeypatch, instance_runner.ActorRef, "ask", ask)
    assert "create:ZoneAlreadyExists" in caught(invariants.zone_ops_never_collide)


def test_zones_have_one_owner_catches_the_cancelled_create_of_3325(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def create_zone(self: InstanceRunner) -> None:
        # The bug of issue 11: the zone is recorded only after create returned, so a
        # Terminate cancelling create leaves a claimed zone nobody owns.
        await self.svc.zones.create(self.zone_name)
        self.zone = self.zone_name

    patch(monkeypatch, InstanceRunner, "_create_zone", create_zone)
    assert "owned by nobody" in caught(invariants.zones_have_one_owner)


def test_failed_only_when_injected_catches_a_refusal_that_fails_the_vmm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def tell_propolis(self: InstanceRunner, msg: Any) -> bool:
        assert self.propolis is not None
        try:
            await self.propolis.driver.tell(msg)
        except Exception:  # the bug of issue 11: any refusal fails the VMM
            await self._exit(instance_runner.SledVmmState.FAILED, publish=True, reason="refused")
            return False
        return True

    patch(monkeypatch, InstanceRunner, "_tell_propolis", tell_propolis)
    assert "Failed with no failure injected" in caught(invariants.failed_only_when_injected)


def test_no_leaked_table_entries_catches_a_manager_that_forgets_dead_runners(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = InstanceManager.handle

    async def handle(self: InstanceManager, msg: Any) -> Any:
        if isinstance(msg, instance_manager.Deregister | instance_manager.Terminated):
            return None  # the entry of an exited runner is never removed
        return await original(self, msg)

    patch(monkeypatch, InstanceManager, "handle", handle)
    assert "runner exited" in caught(invariants.no_leaked_table_entries, at_end=True)


def test_every_invariant_has_its_mutation_test() -> None:
    tested = {
        name.removeprefix("test_").split("_catches_")[0]
        for name in globals()
        if name.startswith("test_") and "_catches_" in name
    }
    names = {inv.__name__ for inv in (*invariants.INVARIANTS, *invariants.AT_END)}
    assert names <= tested, names - tested
