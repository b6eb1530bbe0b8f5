"""The sled agent's API boundary: bad input gets a clear, typed error and loses nothing;
every call ends with its result or a typed sled-agent error carrying its HTTP status.

* A table of bad values for every parameter of every ``SledAgentClient`` method: each
  gets ``InvalidRequest`` (400) naming the field and the value, nothing is sent to any
  actor (the trace does not grow), and the sled keeps working.
* The HTTP mapping of every sled-agent error (upstream: omicron
  ``sled-agent/src/sled_agent.rs``, ``impl From<Error> for HttpError``).
* Runtime and simulation errors are mapped: a VCR replacement during every stage of a
  teardown, a missing backend, an invalid replacement.
* Hypothesis: arbitrary values in every parameter; every call ends with a result or a
  ``SledAgentError`` other than ``InternalError`` (no unmapped failure), and the sled
  still registers a new VMM afterwards.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from trioxide import traces
from trioxide.actors.errors import (
    U64_MAX,
    InstanceChannelFull,
    InstanceGone,
    InternalError,
    InvalidRequest,
    NoSuchBackend,
    NoSuchVmm,
    PropolisAlreadyRegistered,
    PropolisRefused,
    ReservoirBusyError,
    ReservoirConfigInvalid,
    ServiceUnavailable,
    SledAgentError,
    Terminating,
    VcrReplacementInvalid,
    VmmTearingDown,
    VmNotRunning,
    describe_value,
)
from trioxide.actors.instance_manager import StartToken
from trioxide.actors.instance_runner import Target, VmmSpec
from trioxide.actors.propolis.crucible import Region, ReplaceResult, Volume
from trioxide.actors.reservoir import (
    Percentage,
    ReservoirBusy,
    ReservoirConfigError,
    ReservoirMode,
    SizeMiB,
)
from trioxide.actors.sim.hypervisor import GiB, SimHypervisor
from trioxide.actors.sim.vm import SimulatedVm
from trioxide.actors.sled_agent import (
    PROPOLIS_ID_MAX,
    SledAgentClient,
)
from trioxide.actors.vmm_state import SledVmmState
from trioxide.runtime import Runtime, open_runtime
from trioxide.runtime.testing import run_seeded

from ._sled import Sled
from ._sled import make_sled as _make_sled

S = SledVmmState

# -- helpers -----------------------------------------------------------------------------


def region(gen: object = 1, middle: str = "ds-b") -> Region:
    return Region(id="reg-1", generation=gen, targets=("ds-a", middle, "ds-c"))  # type: ignore[arg-type]


def volume(gen: object = 1, middle: str = "ds-b") -> Volume:
    return Volume(id="vol-1", block_size=512, sub_volumes=(region(gen, middle),))


def with_parent_gen(gen: object) -> Volume:
    """A valid sub-volume, and a read-only parent region whose generation is *gen*."""
    parent = Region(id="reg-p", generation=gen, targets=("pa", "pb", "pc"))  # type: ignore[arg-type]
    return Volume(id="vol-1", block_size=512, sub_volumes=(region(),), read_only_parent=parent)


async def make_sled(
    rt: Runtime, *, vm: SimulatedVm | None = None, reservoir: ReservoirMode | None = None
) -> Sled:
    """A sled with 40 GiB of memory, 8 GiB of it for the control plane."""
    hypervisor = SimHypervisor(physical_bytes=40 * GiB, control_plane_reserve_bytes=8 * GiB)
    return await _make_sled(rt, vm=vm, reservoir=reservoir, hypervisor=hypervisor)


async def run_vmm(sled: Sled, pid: str, spec: VmmSpec | None = None) -> None:
    await sled.api.register(pid, f"inst-{pid}", spec)
    assert await sled.api.ensure_state(pid, Target.RUNNING) is None
    while (await sled.api.get_state(pid)).state is not S.RUNNING:  # noqa: ASYNC110
        await trio.sleep(0.5)


# -- the table of bad inputs -------------------------------------------------------------

BAD_IDS: list[object] = ["", "a/b", " x", "x\n", "x\t", 5, None, b"x", "x" * 200, "-x", "é"]
BAD_GENERATIONS: list[object] = [-1, 2**64, 2**70, 1.5, "3", True]

Call = Callable[[SledAgentClient, Any], Awaitable[object]]
"""A call of one API method with the value under test in one of its parameters."""
Case = tuple[str, str, object, Call]  # method, field, value, call


def token(saga: object = "saga-1", pid: object = "p1", gen: object = 1) -> StartToken:
    return StartToken(saga, pid, gen)  # type: ignore[arg-type]


def spec_with(**fields: object) -> VmmSpec:
    return VmmSpec(**fields)  # type: ignore[arg-type]


ID_PARAMS: list[tuple[str, str, Call]] = [
    ("register", "propolis_id", lambda a, v: a.register(v, "i1")),
    ("register", "instance_id", lambda a, v: a.register("p2", v)),
    ("register", "migration_id", lambda a, v: a.register("p2", "i2", None, v)),
    (
        "register",
        "spec.disks key",
        lambda a, v: a.register("p2", "i2", spec_with(disks={v: volume()})),
    ),
    ("unregister", "propolis_id", lambda a, v: a.unregister(v)),
    ("get_state", "propolis_id", lambda a, v: a.get_state(v)),
    ("ensure_state", "propolis_id", lambda a, v: a.ensure_state(v, Target.STOPPED)),
    ("replace_vcr", "propolis_id", lambda a, v: a.replace_vcr(v, "disk0", volume(2))),
    ("replace_vcr", "backend_id", lambda a, v: a.replace_vcr("p1", v, volume(2))),
    ("saga_register", "saga_id", lambda a, v: a.saga_register(v, "p2", "i2")),
    ("saga_register", "propolis_id", lambda a, v: a.saga_register("s", v, "i2")),
    ("saga_register", "instance_id", lambda a, v: a.saga_register("s", "p2", v)),
    ("saga_start", "token.saga_id", lambda a, v: a.saga_start(token(saga=v))),
    ("saga_start", "token.propolis_id", lambda a, v: a.saga_start(token(pid=v))),
    ("saga_release", "token.saga_id", lambda a, v: a.saga_release(token(saga=v))),
    ("saga_release", "token.propolis_id", lambda a, v: a.saga_release(token(pid=v))),
]

GENERATION_PARAMS: list[tuple[str, str, Call]] = [
    (
        "replace_vcr",
        "vcr.sub_volumes[0].generation",
        lambda a, g: a.replace_vcr("p1", "disk0", volume(g)),
    ),
    (
        "replace_vcr",
        "vcr.read_only_parent.generation",
        lambda a, g: a.replace_vcr("p1", "disk0", with_parent_gen(g)),
    ),
    (
        "register",
        "spec.disks['disk0'].sub_volumes[0].generation",
        lambda a, g: a.register("p2", "i2", VmmSpec(disks={"disk0": volume(g)})),
    ),
    ("saga_start", "token.gen", lambda a, g: a.saga_start(token(gen=g))),
    ("saga_release", "token.gen", lambda a, g: a.saga_release(token(gen=g))),
]

# Wrongly typed targets, structs and spec fields: (method, field, bad values, call).
BAD_VCR_TARGETS = Volume("vol-1", 512, (Region("reg-1", 1, ("ds-a", 5, "ds-c")),))  # type: ignore[arg-type]
OTHER_PARAMS: list[tuple[str, str, list[object], Call]] = [
    (
        "ensure_state",
        "target",
        ["running", 1, None, S.RUNNING],
        lambda a, t: a.ensure_state("p1", t),
    ),
    (
        "replace_vcr",
        "vcr",
        [None, "vcr", {"id": "vol-1"}, region(), BAD_VCR_TARGETS],
        lambda a, c: a.replace_vcr("p1", "d", c),
    ),
    # Falsy ones too: a bad spec never means "use the default".
    ("register", "spec", ["spec", 0, b"", {"ncpus": 2}], lambda a, s: a.register("p2", "i2", s)),
    (
        "register",
        "spec.ncpus",
        [0, 256, -1, 2.0, "2", True],
        lambda a, n: a.register("p2", "i2", spec_with(ncpus=n)),
    ),
    (
        "register",
        "spec.memory_bytes",
        [0, -1, 2**64, 1.5, None],
        lambda a, m: a.register("p2", "i2", spec_with(memory_bytes=m)),
    ),
    ("saga_start", "token", [None, "saga-1", ("saga-1", "p1", 1)], lambda a, t: a.saga_start(t)),
    (
        "saga_release",
        "token",
        [None, "saga-1", ("saga-1", "p1", 1)],
        lambda a, t: a.saga_release(t),
    ),
    ("set_reservoir_size", "mode", [5, None, "10", 1.5], lambda a, m: a.set_reservoir_size(m)),
]


def cases() -> list[Case]:
    out: list[Case] = []
    for value in BAD_IDS:
        for method, fld, call in ID_PARAMS:
            if fld == "migration_id" and value is None:
                continue  # None means "no migration"
            if fld == "spec.disks key" and not isinstance(value, str):
                continue  # (a non-string key fails as the spec's type instead)
            out.append((method, fld, value, call))
    # 44 characters: a fine instance id, but the zone name of a propolis id that long
    # would exceed illumos' 63 characters.
    long_pid = "p" * (PROPOLIS_ID_MAX + 1)
    out.append(("register", "propolis_id", long_pid, lambda a, v: a.register(v, "i1")))
    for gen in BAD_GENERATIONS:
        out.extend((method, fld, gen, call) for method, fld, call in GENERATION_PARAMS)
    for method, fld, values, call in OTHER_PARAMS:
        out.extend((method, fld, value, call) for value in values)
    return out


CASES = cases()


def case_id(case: Case) -> str:
    method, fld, value, _ = case
    return f"{method}-{fld}-{describe_value(value, 12)}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
async def test_bad_input_is_a_typed_400_naming_the_value_and_loses_nothing(
    actor_runtime: Runtime, trace_sink: traces.MemorySink, case: Case
) -> None:
    _method, fld, value, call = case
    sled = await make_sled(actor_runtime)
    await sled.api.register("p1", "i1")
    table, state = sled.table(), await sled.api.get_state("p1")
    events = len(trace_sink.events)
    with pytest.raises(InvalidRequest) as info:
        await call(sled.api, value)
    assert len(trace_sink.events) == events  # nothing was sent to any actor
    err = info.value
    assert (err.status, err.code) == (400, "INVALID_REQUEST")
    assert err.body() == {"error_code": "INVALID_REQUEST", "message": str(err)}
    # Names the field and the value (a long value by its beginning and length).
    assert err.field.startswith(fld) and fld in str(err)
    assert describe_value(value) in str(err), str(err)
    assert repr(value)[:40] in str(err)
    # The table and the VMM are untouched.
    assert (sled.table(), await sled.api.get_state("p1")) == (table, state)
    # The sled keeps working.
    assert (await sled.api.register("p3", "i3")).state is S.STARTING
    assert await sled.api.ensure_state("p1", Target.RUNNING) is None


def test_the_table_covers_every_method_and_every_id_value() -> None:
    methods = {m for m, *_ in CASES}
    api = {
        name
        for name in vars(SledAgentClient)
        if not name.startswith("_") and callable(getattr(SledAgentClient, name))
    }
    assert api - {"reservoir_status", "sled_info"} <= methods  # those two take no input
    for value in BAD_IDS:
        assert any(v is value for _m, f, v, _c in CASES if f == "propolis_id")


async def test_a_bad_reservoir_size_is_a_400_that_is_also_a_reservoir_config_error(
    actor_runtime: Runtime,
) -> None:
    sled = await make_sled(actor_runtime)
    for mode in (Percentage(150.0), Percentage(float("nan")), SizeMiB(-1), SizeMiB(2**70)):
        with pytest.raises(ReservoirConfigInvalid) as info:
            await sled.api.set_reservoir_size(mode)
        err = info.value
        assert isinstance(err, InvalidRequest) and isinstance(err, ReservoirConfigError)
        assert (err.status, err.code, err.field) == (400, "RESERVOIR_CONFIG_INVALID", "mode")
    assert (await sled.api.reservoir_status()).desired_bytes == 0  # nothing changed


async def test_a_busy_reservoir_is_a_503_that_is_also_reservoir_busy(
    actor_runtime: Runtime,
) -> None:
    sled = await make_sled(actor_runtime, reservoir=ReservoirMode.size_mib(8 * 1024))
    with pytest.raises(ReservoirBusyError) as info:  # the boot allocation is running
        await sled.api.set_reservoir_size(SizeMiB(1024))
    err = info.value
    assert isinstance(err, ReservoirBusy) and err.target_bytes == 8 * GiB
    assert (err.status, err.code) == (503, "RESERVOIR_BUSY")


# -- the HTTP mapping --------------------------------------------------------------------

# upstream: omicron sled-agent/src/sled_agent.rs `impl From<Error> for HttpError`
# (b848b6df): channel full 503 INSTANCE_CHANNEL_FULL, Terminating 410 NO_SUCH_INSTANCE,
# NoSuchVmm 404 NO_SUCH_INSTANCE, a Propolis 4xx passed through, anything else 500.
HTTP: list[tuple[type[SledAgentError], int, str]] = [
    (InstanceChannelFull, 503, "INSTANCE_CHANNEL_FULL"),
    (Terminating, 410, "NO_SUCH_INSTANCE"),
    (InstanceGone, 410, "NO_SUCH_INSTANCE"),
    (NoSuchVmm, 404, "NO_SUCH_INSTANCE"),
    (PropolisRefused, 403, "PROPOLIS_REQUEST_REFUSED"),
    (VmNotRunning, 500, "INTERNAL_ERROR"),
    (InternalError, 500, "INTERNAL_ERROR"),
    (InvalidRequest, 400, "INVALID_REQUEST"),
    (VcrReplacementInvalid, 400, "VCR_REPLACEMENT_INVALID"),
    (ReservoirConfigInvalid, 400, "RESERVOIR_CONFIG_INVALID"),
    (NoSuchBackend, 404, "NO_SUCH_BACKEND"),
    (PropolisAlreadyRegistered, 409, "PROPOLIS_ALREADY_REGISTERED"),
    (VmmTearingDown, 503, "VMM_TEARING_DOWN"),
    (ReservoirBusyError, 503, "RESERVOIR_BUSY"),
    (ServiceUnavailable, 503, "SERVICE_UNAVAILABLE"),
]


@pytest.mark.parametrize(("cls", "status", "code"), HTTP, ids=[c.__name__ for c, *_ in HTTP])
def test_every_error_has_its_http_status_and_code(
    cls: type[SledAgentError], status: int, code: str
) -> None:
    assert (cls.status, cls.code) == (status, code)
    # Nexus reads only 404 + NO_SUCH_INSTANCE as "the VMM is gone" (and fails it):
    # upstream nexus/src/app/instance.rs `vmm_gone` (b848b6df).
    assert (status == 404 and code == "NO_SUCH_INSTANCE") == (cls is NoSuchVmm)


# -- runtime errors on the request path: a VCR replacement through a teardown -------------


async def test_replace_vcr_answers_every_stage_with_a_typed_error(actor_runtime: Runtime) -> None:
    sled = await make_sled(actor_runtime, vm=SimulatedVm(halt_time=100.0))
    spec = VmmSpec(disks={"disk0": volume(1)})
    # Registered, no Propolis yet: upstream's VmNotRunning (500).
    await sled.api.register("p1", "i1", spec)
    with pytest.raises(VmNotRunning) as not_running:
        await sled.api.replace_vcr("p1", "disk0", volume(2, "ds-new"))
    assert not_running.value.status == 500
    await sled.api.ensure_state("p1", Target.RUNNING)
    while (await sled.api.get_state("p1")).state is not S.RUNNING:  # noqa: ASYNC110
        await trio.sleep(0.5)
    # Running: a missing backend is a 404 that does not say NO_SUCH_INSTANCE.
    with pytest.raises(NoSuchBackend) as missing:
        await sled.api.replace_vcr("p1", "disk9", volume(2, "ds-new"))
    assert (missing.value.status, missing.value.code) == (404, "NO_SUCH_BACKEND")
    # Crucible refuses an identical VCR: 400.
    with pytest.raises(VcrReplacementInvalid) as same:
        await sled.api.replace_vcr("p1", "disk0", volume(1))
    assert same.value.status == 400 and same.value.field == "vcr"
    assert await sled.api.replace_vcr("p1", "disk0", volume(2, "ds-new")) is ReplaceResult.STARTED
    # Stopping (Propolis halts for 100 s): a replacement queued behind the stop is
    # answered when the Propolis goes away - 410, not the runtime's ActorGone or Gone.
    await sled.api.ensure_state("p1", Target.STOPPED)
    with pytest.raises(InstanceGone) as gone:
        await sled.api.replace_vcr("p1", "disk0", volume(3, "ds-new2"))
    assert (gone.value.status, gone.value.code) == (410, "NO_SUCH_INSTANCE")
    assert gone.value.propolis_id == "p1"
    # Deregistered: 404 NO_SUCH_INSTANCE.
    while sled.manager.find("p1") is not None:  # noqa: ASYNC110
        await trio.sleep(1)
    with pytest.raises(NoSuchVmm):
        await sled.api.replace_vcr("p1", "disk0", volume(3, "ds-new2"))


async def test_replace_vcr_while_the_runner_tears_down_is_a_410(actor_runtime: Runtime) -> None:
    from trioxide.actors.propolis.state_driver import GuestHalted

    sled = await make_sled(actor_runtime)
    sled.world.nexus.latency = 5.0  # the runner waits for Nexus in its exit sequence
    await run_vmm(sled, "p1", VmmSpec(disks={"disk0": volume(1)}))
    propolis = sled.runner("p1").propolis
    assert propolis is not None
    await propolis.driver.tell(GuestHalted())
    while not sled.runner("p1").terminating:  # noqa: ASYNC110
        await trio.sleep(0.01)
    with pytest.raises(Terminating) as info:
        await sled.api.replace_vcr("p1", "disk0", volume(2, "ds-new"))
    assert (info.value.status, info.value.code) == (410, "NO_SUCH_INSTANCE")


async def test_replace_vcr_after_a_propolis_crash_is_a_410(actor_runtime: Runtime) -> None:
    from trioxide.actors.sim.propolis_host import Crash

    sled = await make_sled(actor_runtime)
    await run_vmm(sled, "p1", VmmSpec(disks={"disk0": volume(1)}))
    # Stop the monitor so the runner does not notice the crash: only the request path
    # sees that the Propolis is gone.
    monitor = sled.runner("p1").monitor_ref
    assert monitor is not None
    await monitor.stop()
    await sled.api.agent.refs["propolis-host"].ask(Crash("p1"))
    with pytest.raises(InstanceGone) as info:
        await sled.api.replace_vcr("p1", "disk0", volume(2, "ds-new"))
    assert info.value.status == 410


# -- Hypothesis: arbitrary values everywhere ---------------------------------------------

anything = st.one_of(
    st.text(max_size=70),
    st.integers(),
    st.none(),
    st.binary(max_size=12),
    st.floats(),
    st.sampled_from(["x" * 50, "a/b", ""]),
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """*good* three times in four (a flat ``one_of`` would weigh every branch of *bad*
    like *good*), so that calls also get past the boundary and meet the actors."""
    return st.integers(0, 3).flatmap(lambda i: bad if i == 0 else good)


# p1 is a running VMM (instance inst-p1) with the disk disk0.
ids = mostly(st.sampled_from(["p1", "p2", "i1", "inst-p1", "disk0", "saga-1"]), anything)
gens = mostly(st.integers(min_value=-1, max_value=3), st.one_of(st.integers(), anything))
vcrs = mostly(
    st.one_of(
        st.builds(volume, gens, st.sampled_from(["ds-b", "ds-new"])),
        st.builds(with_parent_gen, gens),
    ),
    anything,
)
specs = mostly(
    st.one_of(
        st.none(),
        st.builds(
            VmmSpec,
            mostly(st.integers(1, 4), st.one_of(st.integers(), anything)),
            mostly(st.integers(1, 2**31), st.one_of(st.integers(), anything)),
            st.dictionaries(ids, vcrs, max_size=2),
        ),
    ),
    anything,
)
targets = mostly(st.sampled_from(list(Target)), anything)
tokens = mostly(st.builds(StartToken, ids, ids, gens), anything)
modes = mostly(
    st.one_of(
        st.builds(SizeMiB, mostly(st.integers(0, 2**40), anything)),
        st.builds(Percentage, mostly(st.floats(0, 120), anything)),
    ),
    anything,
)
calls = st.one_of(
    st.tuples(st.just("register"), st.tuples(ids, ids, specs, mostly(st.none(), ids))),
    st.tuples(st.just("unregister"), st.tuples(ids)),
    st.tuples(st.just("ensure_state"), st.tuples(ids, targets)),
    st.tuples(st.just("get_state"), st.tuples(ids)),
    st.tuples(st.just("replace_vcr"), st.tuples(ids, ids, vcrs)),
    st.tuples(st.just("set_reservoir_size"), st.tuples(modes)),
    st.tuples(st.just("reservoir_status"), st.just(())),
    st.tuples(st.just("sled_info"), st.just(())),
    st.tuples(st.just("saga_register"), st.tuples(ids, ids, ids, specs)),
    st.tuples(st.just("saga_start"), st.tuples(tokens)),
    st.tuples(st.just("saga_release"), st.tuples(tokens)),
)


def outcome_of(method: str, args: tuple[Any, ...]) -> object:
    """Run one call against a fresh sled (with VMM p1 running, a disk attached) in
    virtual time; its result or the exception it ended with."""

    async def main() -> object:
        async with open_runtime(seed=0) as rt:
            sled = await make_sled(rt)
            await run_vmm(sled, "p1", VmmSpec(disks={"disk0": volume(1)}))
            result: object
            try:
                with trio.fail_after(3600):  # every call ends
                    result = await getattr(sled.api, method)(*args)
            except Exception as exc:  # classified by the test
                result = exc
            # The sled still works.
            assert (await sled.api.register("p9", "i9")).state is S.STARTING
            assert (await sled.api.get_state("p9")).state is S.STARTING
            return result

    return run_seeded(main, seed=0)


@example(("replace_vcr", ("p1", "disk0", volume(2, "ds-new"))))
@example(("replace_vcr", ("p1", "disk0", volume(1))))
@example(("replace_vcr", ("p1", "disk9", volume(2, "ds-new"))))
@example(("ensure_state", ("p1", Target.REBOOT)))
@example(("ensure_state", ("p1", Target.STOPPED)))
@example(("ensure_state", ("p1", Target.MIGRATION_TARGET)))
@example(("saga_register", ("saga-1", "p2", "i2", VmmSpec(disks={"disk0": volume(U64_MAX)}))))
@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(calls)
def test_every_call_ends_with_a_result_or_a_typed_sled_agent_error(
    call: tuple[str, tuple[Any, ...]],
) -> None:
    method, args = call
    outcome = outcome_of(method, args)
    event(f"{method}: {type(outcome).__name__}")
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, SledAgentError), repr(outcome)
        assert not isinstance(outcome, InternalError), repr(outcome.__cause__)
        assert 400 <= outcome.status <= 599 and outcome.code
        assert str(outcome)


def test_a_generation_of_u64_max_is_accepted_and_one_more_is_not() -> None:
    from trioxide.actors.sled_agent import check_generation

    assert check_generation("g", 0) == 0
    assert check_generation("g", U64_MAX) == U64_MAX
    with pytest.raises(InvalidRequest, match="18446744073709551616"):
        check_generation("g", U64_MAX + 1)
    with pytest.raises(InvalidRequest, match="an int of 16610 bits"):  # too long to print
        check_generation("g", 10**5000)
