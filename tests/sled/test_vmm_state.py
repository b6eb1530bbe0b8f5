"""VMM state domain types (spec/sled-agent.md §5, scenario 13)."""

from __future__ import annotations

import pytest

from trioxide.actors.propolis.state_driver import VmState as P
from trioxide.actors.vmm_state import (
    InstanceState,
    SledVmmState,
    VmmFailureReason,
    VmmKind,
    VmmRuntimeState,
    VmmState,
    from_propolis,
    to_external,
    to_nexus,
    to_sled,
)

ALL_NEXUS = [VmmState(k) for k in VmmKind if k is not VmmKind.FAILED] + [
    VmmState.failed(r) for r in VmmFailureReason
]


@pytest.mark.parametrize("state", ALL_NEXUS, ids=str)
def test_predicates_over_all_states(state: VmmState) -> None:
    k = state.kind
    assert state.is_terminal() == (k in (VmmKind.DESTROYED, VmmKind.FAILED))
    assert state.is_failed() == (k is VmmKind.FAILED)
    assert state.is_destroyable() == (
        k in (VmmKind.DESTROYED, VmmKind.FAILED, VmmKind.SAGA_UNWOUND)
    )
    assert state.exists_on_sled() == (
        k not in (VmmKind.CREATING, VmmKind.SAGA_UNWOUND, VmmKind.DESTROYED)
    )


def test_reason_goes_with_failed_only() -> None:
    with pytest.raises(ValueError, match="reason"):
        VmmState(VmmKind.FAILED)
    with pytest.raises(ValueError, match="reason"):
        VmmState(VmmKind.RUNNING, VmmFailureReason.SLED_OFF)
    for reason in VmmFailureReason:
        assert reason.description and reason.description[0].islower()
    assert str(VmmState.failed(VmmFailureReason.NO_SUCH_INSTANCE)) == "failed(no_such_instance)"


@pytest.mark.parametrize("state", list(SledVmmState), ids=str)
def test_sled_to_nexus_and_back(state: SledVmmState) -> None:
    nexus = to_nexus(state)
    if state is SledVmmState.FAILED:
        assert nexus == VmmState.failed(VmmFailureReason.FROM_SLED_AGENT)
    else:
        assert nexus.kind.value == state.value
    assert to_sled(nexus) is state


def test_nexus_to_sled_and_external() -> None:
    assert to_sled(VmmState(VmmKind.CREATING)) is SledVmmState.STARTING
    assert to_sled(VmmState(VmmKind.SAGA_UNWOUND)) is SledVmmState.DESTROYED
    assert to_sled(VmmState.failed(VmmFailureReason.SLED_OFF)) is SledVmmState.FAILED
    expected = {
        VmmKind.CREATING: InstanceState.STARTING,
        VmmKind.STARTING: InstanceState.STARTING,
        VmmKind.RUNNING: InstanceState.RUNNING,
        VmmKind.STOPPING: InstanceState.STOPPING,
        VmmKind.STOPPED: InstanceState.STOPPED,
        VmmKind.REBOOTING: InstanceState.REBOOTING,
        VmmKind.MIGRATING: InstanceState.MIGRATING,
        VmmKind.FAILED: InstanceState.FAILED,
        VmmKind.DESTROYED: InstanceState.DESTROYED,
        VmmKind.SAGA_UNWOUND: InstanceState.STOPPED,
    }
    for state in ALL_NEXUS:
        assert to_external(state) is expected[state.kind], state


def test_runtime_transition_bumps_gen_only_on_change() -> None:
    r = VmmRuntimeState(SledVmmState.STARTING, 1, 0.0)
    same = r.transition(SledVmmState.STARTING, 5.0)
    assert same == r and same is not r
    run = r.transition(SledVmmState.RUNNING, 7.5)
    assert (run.state, run.gen, run.time_updated) == (SledVmmState.RUNNING, 2, 7.5)
    assert run.bump(9.0).gen == 3


def test_propolis_map() -> None:
    assert [from_propolis(p) for p in P] == [
        SledVmmState.STARTING,  # Creating
        SledVmmState.STARTING,  # Starting
        SledVmmState.RUNNING,
        SledVmmState.STOPPING,  # Stopping
        SledVmmState.STOPPING,  # Stopped: logically stopped only at Destroyed
        SledVmmState.REBOOTING,
        SledVmmState.MIGRATING,
        SledVmmState.FAILED,
        SledVmmState.DESTROYED,
    ]
