"""Upstream conformance: Crucible VCR (volume construction request) replacement, fact by fact.

Source: oxidecomputer/crucible at 6d037cb6 (2026-08-04; ``upstairs/src/volume.rs`` last
changed in 3c1708d8, 2026-04-27): ``Volume::target_replace`` ->
``compare_vcr_for_target_replacement`` / ``compare_vcr_for_migration`` ->
``compare_vcr_for_update`` -> ``compare_vcr_for_replacement`` /
``compare_vcr_region_for_replacement`` and their ``#[cfg(test)]`` tests;
``Downstairs::replace`` in ``upstairs/src/downstairs.rs`` (the result once the VCRs
agree) and the target-replacement tests of ``integration_tests/src/lib.rs``.

Each upstream test has a test of the same name here. The pure comparison facts are asserted
against :func:`check_replacement` / :func:`check_migration` (upstream ``Valid{old, new}`` is
our ``(old, new)`` pair, ``ReplacementMatchesOriginal`` is ``None``, any ``Err`` is
``ReplaceRequestInvalid``; we also check that the message names what is wrong). Facts about
the upstairs (results, clients restarted) are asserted against the ``CrucibleBackend``
actor. Facts read from the source with no upstream test of their own are named
``test_source_*``.

Our VCR is upstream's with ``CrucibleOpts`` flattened into ``Region`` (``id`` is
``opts.id``, ``targets`` is ``opts.target``); targets are strings, not socket addresses.
Where we deliberately differ, the test says "Ours:" (see docs/upstream/crucible.md).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

import msgspec
import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from trioxide.actors.propolis.crucible import (
    Activate,
    CrucibleBackend,
    Region,
    Replace,
    ReplaceDownstairs,
    ReplaceRequestInvalid,
    ReplaceResult,
    Status,
    Volume,
    check_migration,
    check_replacement,
)
from trioxide.actors.sim.network import DownstairsNetwork
from trioxide.runtime import ActorRef, Runtime

R = ReplaceResult
BS, BPE, EC = 512, 10, 9  # the block size / blocks per extent / extent count upstream uses
NEW = "127.0.0.1:8888"  # the replacement target upstream uses


# -- building VCRs like the upstream tests do ----------------------------------------------


def addrs(n: int) -> tuple[str, str, str]:
    """Three downstairs of one region set (upstream: one random IP, three ports)."""
    return (f"10.0.{n}.1:1111", f"10.0.{n}.1:2222", f"10.0.{n}.1:3333")


def region(
    rid: str = "opts-1",
    generation: int = 2,
    targets: tuple[str, str, str] | None = None,
    **kw: object,
) -> Region:
    r = Region(rid, generation, targets or addrs(0), BS, BPE, EC, key="a2V5")
    return msgspec.structs.replace(r, **kw) if kw else r


def sub_volumes(count: int, generation: int = 2) -> tuple[Region, ...]:
    """*count* regions sharing their options, each with its own three targets."""
    return tuple(region(generation=generation, targets=addrs(i)) for i in range(count))


def with_target(
    regions: tuple[Region, ...], index: int, cid: int, new: str, bump: bool = False
) -> tuple[Region, ...]:
    """A copy with target *cid* of region *index* set to *new*; every generation +1 if
    *bump* (upstream ``build_replacement_subvol``)."""
    out = []
    for i, r in enumerate(regions):
        targets = list(r.targets)
        if i == index:
            targets[cid] = new
        out.append(
            msgspec.structs.replace(
                r,
                targets=(targets[0], targets[1], targets[2]),
                generation=r.generation + 1 if bump else r.generation,
            )
        )
    return tuple(out)


def bump(regions: tuple[Region, ...]) -> tuple[Region, ...]:
    return tuple(msgspec.structs.replace(r, generation=r.generation + 1) for r in regions)


class RopMode(enum.Enum):
    """Which of the two VCRs has a read-only parent (upstream ``ReadOnlyParentMode``)."""

    BOTH = "both"
    ONLY_ORIGINAL = "only-original"
    ONLY_REPLACEMENT = "only-replacement"
    NEITHER = "neither"

    def parents(self, rop: Region) -> tuple[Region | None, Region | None]:
        return (
            rop if self in (RopMode.BOTH, RopMode.ONLY_ORIGINAL) else None,
            rop if self in (RopMode.BOTH, RopMode.ONLY_REPLACEMENT) else None,
        )


def invalid(old: Volume, new: Volume) -> str:
    """The message of the ``ReplaceRequestInvalid`` that *new* must raise."""
    with pytest.raises(ReplaceRequestInvalid) as info:
        check_replacement(old, new)
    assert info.value.status == 400
    return info.value.message


def layouts(min_count: int = 1) -> Iterator[tuple[int, int]]:
    """(sub-volume count, changed index) for 1..3 sub-volumes, as upstream loops."""
    for count in range(min_count, 4):
        for changed in range(count):
            yield count, changed


# -- volume.rs: the comparison ---------------------------------------------------------


# upstream: crucible upstairs/src/volume.rs test volume_replace_basic (6d037cb6, 2026-08-04)
def test_volume_replace_basic() -> None:
    # One target changed, in any of 1-3 sub-volumes, any client, with or without a
    # generation bump (an equal generation is valid), for every read-only parent mix: valid,
    # except a parent only in the replacement.
    rop = region("rop-opts", generation=3)
    for count, changed in layouts():
        for cid in range(3):
            for gen_bump in (True, False):
                for mode in RopMode:
                    subs = sub_volumes(count)
                    o_rop, n_rop = mode.parents(rop)
                    old = Volume("vol-1", BS, subs, o_rop)
                    new = Volume("vol-1", BS, with_target(subs, changed, cid, NEW, gen_bump), n_rop)
                    if mode is RopMode.ONLY_REPLACEMENT:
                        assert "adds a read_only_parent" in invalid(old, new)
                    else:
                        assert check_replacement(old, new) == (subs[changed].targets[cid], NEW)


# upstream: crucible upstairs/src/volume.rs test test_volume_replace_low_gen (6d037cb6, 2026-08-04)
def test_volume_replace_low_gen() -> None:
    # Every sub-volume at generation 1 < 2, one of them with a new target: refused, whatever
    # the read-only parents (the sub-volumes are compared before the parent).
    rop = region("rop-opts", generation=3)
    for count, changed in layouts(min_count=2):
        for mode in RopMode:
            subs = sub_volumes(count)
            lowered = tuple(msgspec.structs.replace(r, generation=1) for r in subs)
            o_rop, n_rop = mode.parents(rop)
            old = Volume("vol-1", BS, subs, o_rop)
            new = Volume("vol-1", BS, with_target(lowered, changed, 1, NEW), n_rop)
            assert "generation too low: 1 < 2" in invalid(old, new)


# upstream: crucible upstairs/src/volume.rs test volume_replace_drop_rop (6d037cb6, 2026-08-04)
def test_volume_replace_drop_rop() -> None:
    # The replacement drops the read-only parent (it goes away after a scrub): valid.
    rop = region("opts-1", generation=3)
    old = Volume("vol-1", BS, (region(generation=2),), rop)
    new_sub = region(generation=3, targets=(addrs(0)[0], NEW, addrs(0)[2]))
    assert check_replacement(old, Volume("vol-1", BS, (new_sub,))) == (addrs(0)[1], NEW)


# upstream: crucible upstairs/src/volume.rs test volume_replace_self (6d037cb6, 2026-08-04)
def test_volume_replace_self() -> None:
    # The same VCR as original and replacement: an error, with or without a parent.
    for count in range(1, 4):
        for rop in (region("opts-1", generation=3), None):
            vcr = Volume("vol-1", BS, sub_volumes(count), rop)
            assert invalid(vcr, vcr) == "The VCRs have no difference"


# upstream: crucible upstairs/src/volume.rs test volume_vcr_no_targets (6d037cb6, 2026-08-04)
def test_volume_vcr_no_targets() -> None:
    # Every sub-volume generation +1, no target changed: "matches original" for a target
    # replacement (our None, VcrMatches) and valid for a migration, unless the replacement
    # adds a read-only parent.
    rop = region("opts-1", generation=3)
    for count in (1, 2):
        for mode in RopMode:
            subs = sub_volumes(count)
            o_rop, n_rop = mode.parents(rop)
            old, new = Volume("vol-1", BS, subs, o_rop), Volume("vol-1", BS, bump(subs), n_rop)
            if mode is RopMode.ONLY_REPLACEMENT:
                assert "adds a read_only_parent" in invalid(old, new)
                with pytest.raises(ReplaceRequestInvalid):
                    check_migration(old, new)
            else:
                assert check_replacement(old, new) is None
                check_migration(old, new)


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_vblock
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_vblock() -> None:
    for count, changed in layouts():
        subs = sub_volumes(count)
        old = Volume("vol-1", BS, subs)
        new = Volume("vol-1", 4096, with_target(subs, changed, 1, NEW))
        assert "block_size mismatch: 512 vs. 4096" in invalid(old, new)


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_vid (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_vid() -> None:
    for count, changed in layouts():
        subs = sub_volumes(count)
        old = Volume("vol-1", BS, subs)
        new = Volume("vol-2", BS, with_target(subs, changed, 1, NEW))
        assert invalid(old, new) == "VCR id mismatch: 'vol-1' vs. 'vol-2'"


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_vrop (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_vrop() -> None:
    # The original has no read-only parent, the replacement has one: never valid.
    for count, changed in layouts():
        subs = sub_volumes(count)
        old = Volume("vol-1", BS, subs)
        new = Volume("vol-1", BS, with_target(subs, changed, 1, NEW), region("rop-opts", 3))
        assert "adds a read_only_parent ('rop-opts')" in invalid(old, new)


# upstream: crucible upstairs/src/volume.rs test volume_replace_read_only_parent_ok
# (6d037cb6, 2026-08-04)
def test_volume_replace_read_only_parent_ok() -> None:
    # The one changed target is in the read-only parent (its generation unchanged), with
    # or without a generation bump of the sub-volumes: valid.
    rop = region("rop-opts", generation=4, targets=addrs(7))
    new_rop = region("rop-opts", generation=4, targets=(addrs(7)[0], NEW, addrs(7)[2]))
    for count in range(1, 4):
        for gen_bump in (True, False):
            subs = sub_volumes(count)
            old = Volume("vol-1", BS, subs, rop)
            new = Volume("vol-1", BS, bump(subs) if gen_bump else subs, new_rop)
            assert check_replacement(old, new) == (addrs(7)[1], NEW)


# upstream: crucible upstairs/src/volume.rs test volume_replace_with_both_subvol_and_rop_diff
# (6d037cb6, 2026-08-04)
def test_volume_replace_with_both_subvol_and_rop_diff() -> None:
    # One target changed in a sub-volume and one in the parent: at most one change across
    # sub-volumes and parent together.
    rop = region("rop-opts", generation=4, targets=addrs(7))
    new_rop = region("rop-opts", generation=4, targets=(addrs(7)[0], NEW, addrs(7)[2]))
    for count, changed in layouts():
        subs = sub_volumes(count)
        old = Volume("vol-1", BS, subs, rop)
        new = Volume("vol-1", BS, with_target(subs, changed, 1, NEW), new_rop)
        assert "multiple different targets across the VCR" in invalid(old, new)


def _param_mismatch(name: str, value: int) -> None:
    """Sub-volume *changed* gets a new target and a different *name*: refused."""
    for count, changed in layouts():
        subs = sub_volumes(count)
        moved = with_target(subs, changed, 1, NEW, bump=True)
        new_subs = tuple(
            msgspec.structs.replace(r, **{name: value}) if i == changed else r
            for i, r in enumerate(moved)
        )
        message = invalid(Volume("vol-1", BS, subs), Volume("vol-1", BS, new_subs))
        assert f"{name} mismatch: {getattr(subs[changed], name)} vs. {value}" in message


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_sv_bs
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_sv_bs() -> None:
    # Ours: upstream's replacement sub-volumes other than sv 0 also get sv 0's targets, so
    # for 2-3 sub-volumes its VCRs differ in more than the block size; ours differ only there.
    _param_mismatch("block_size", 4096)


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_sv_bpe
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_sv_bpe() -> None:
    _param_mismatch("blocks_per_extent", BPE + 2)


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_sv_ec
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_sv_ec() -> None:
    _param_mismatch("extent_count", EC + 2)


def _opts_mismatch(name: str, value: object) -> None:
    """Upstream ``test_volume_replace_opts``: sub-volume *changed* gets a new target (same
    generation) and a different option *name*: refused, naming the option."""
    for count, changed in layouts():
        subs = sub_volumes(count)
        moved = with_target(subs, changed, 1, NEW)
        new_subs = tuple(
            msgspec.structs.replace(r, **{name: value}) if i == changed else r
            for i, r in enumerate(moved)
        )
        message = invalid(Volume("vol-1", BS, subs), Volume("vol-1", BS, new_subs))
        label = "opts id" if name == "id" else f"opts {name}"
        assert f"{label} mismatch" in message and repr(value) in message


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_opts_id
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_opts_id() -> None:
    _opts_mismatch("id", "opts-other")


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_opts_lossy
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_opts_lossy() -> None:
    _opts_mismatch("lossy", True)


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_opts_flush_timeout
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_opts_flush_timeout() -> None:
    _opts_mismatch("flush_timeout", 1.23459)


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_opts_key
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_opts_key() -> None:
    _opts_mismatch("key", "b3RoZXIta2V5")


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_opts_cert_pem
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_opts_cert_pem() -> None:
    _opts_mismatch("cert_pem", "cert_pem")


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_opts_key_pem
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_opts_key_pem() -> None:
    _opts_mismatch("key_pem", "key_pem")


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_opts_root_cert
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_opts_root_cert() -> None:
    _opts_mismatch("root_cert_pem", "root_pem")


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_opts_control
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_opts_control() -> None:
    _opts_mismatch("control", NEW)


# upstream: crucible upstairs/src/volume.rs test volume_replace_mismatch_opts_read_only
# (6d037cb6, 2026-08-04)
def test_volume_replace_mismatch_opts_read_only() -> None:
    _opts_mismatch("read_only", True)


# The read-only-parent tests below share one original: a sub-volume at generation 3 and a
# read-only parent that is a volume of one region at generation 2 (in the "second" test,
# that parent has a parent of its own, a region at generation 1).
SV_TARGETS = (
    "[fd00:1122:3344:102::8]:19004",
    "[fd00:1122:3344:101::7]:19003",
    "[fd00:1122:3344:104::8]:19000",
)
ROP_TARGETS = (
    "[fd00:1122:3344:103::7]:19002",
    "[fd00:1122:3344:101::7]:19002",
    "[fd00:1122:3344:102::8]:19002",
)
ROP2_TARGETS = (
    "[fd00:1122:3344:203::7]:19002",
    "[fd00:1122:3344:201::7]:19002",
    "[fd00:1122:3344:202::8]:19002",
)
ROP_NEW = "[fd00:1122:3344:111::a]:20000"


def rop_original(second: bool = False) -> Volume:
    sub = Region("vol-1", 3, SV_TARGETS, 512, 131072, 128)
    grandparent = Volume("rop2", 512, (Region("rop2-r", 1, ROP2_TARGETS, 512, 131072, 32),))
    parent = Volume(
        "rop",
        512,
        (Region("rop-r", 2, ROP_TARGETS, 512, 131072, 32),),
        grandparent if second else None,
    )
    return Volume("vol-1", 512, (sub,), parent)


def replace_in_parent(vcr: Volume, *, sub_gen: int = 0, rop_gen: int = 0) -> Volume:
    """Target 1 of the parent's region -> ROP_NEW; generations moved by the deltas."""
    parent = vcr.read_only_parent
    assert isinstance(parent, Volume)
    (r,) = parent.sub_volumes
    moved = msgspec.structs.replace(
        r, targets=(r.targets[0], ROP_NEW, r.targets[2]), generation=r.generation + rop_gen
    )
    (sub,) = vcr.sub_volumes
    return msgspec.structs.replace(
        vcr,
        sub_volumes=(msgspec.structs.replace(sub, generation=sub.generation + sub_gen),),
        read_only_parent=msgspec.structs.replace(parent, sub_volumes=(moved,)),
    )


# upstream: crucible upstairs/src/volume.rs test volume_replace_rop_changes (6d037cb6, 2026-08-04)
def test_volume_replace_rop_changes() -> None:
    # A target of the parent's region changes and the sub-volume's generation is bumped.
    old = rop_original()
    assert check_replacement(old, replace_in_parent(old, sub_gen=1)) == (ROP_TARGETS[1], ROP_NEW)


# upstream: crucible upstairs/src/volume.rs test volume_replace_second_rop_changes
# (6d037cb6, 2026-08-04)
def test_volume_replace_second_rop_changes() -> None:
    # A target of the parent's parent changes, no generation bump anywhere: valid.
    old = rop_original(second=True)
    parent = old.read_only_parent
    assert isinstance(parent, Volume) and isinstance(parent.read_only_parent, Volume)
    grandparent = parent.read_only_parent
    (r,) = grandparent.sub_volumes
    moved = msgspec.structs.replace(r, targets=(r.targets[0], r.targets[1], ROP_NEW))
    new = msgspec.structs.replace(
        old,
        read_only_parent=msgspec.structs.replace(
            parent,
            read_only_parent=msgspec.structs.replace(grandparent, sub_volumes=(moved,)),
        ),
    )
    assert check_replacement(old, new) == (ROP2_TARGETS[2], ROP_NEW)


# upstream: crucible upstairs/src/volume.rs test volume_replace_rop_changes_increase_gen
# (6d037cb6, 2026-08-04)
def test_volume_replace_rop_changes_increase_gen() -> None:
    old = rop_original()
    new = replace_in_parent(old, sub_gen=1, rop_gen=1)
    assert check_replacement(old, new) == (ROP_TARGETS[1], ROP_NEW)


# upstream: crucible upstairs/src/volume.rs test volume_replace_rop_changes_decrease_gen
# (6d037cb6, 2026-08-04)
def test_volume_replace_rop_changes_decrease_gen() -> None:
    # The parent's region generation goes down: refused like a sub-volume's.
    old = rop_original()
    message = invalid(old, replace_in_parent(old, sub_gen=1, rop_gen=-1))
    assert "'rop-r' generation too low: 1 < 2" in message


# upstream: crucible upstairs/src/volume.rs test volume_replace_rop_changes_same_gen
# (6d037cb6, 2026-08-04)
def test_volume_replace_rop_changes_same_gen() -> None:
    old = rop_original()
    assert check_replacement(old, replace_in_parent(old)) == (ROP_TARGETS[1], ROP_NEW)


# -- volume.rs: facts of the source without a test of their own ------------------------


# upstream: crucible upstairs/src/volume.rs compare_vcr_for_update, "ROP has generation bump!"
# (6d037cb6, 2026-08-04)
def test_source_rop_generation_bump_alone_is_invalid() -> None:
    # No target changed and only the parent's generation went up: refused. With the
    # sub-volume bumped too, it is a plain generation update (the parent's bump ignored).
    old = rop_original()
    parent = old.read_only_parent
    assert isinstance(parent, Volume)
    (r,) = parent.sub_volumes
    bumped_parent = msgspec.structs.replace(
        parent, sub_volumes=(msgspec.structs.replace(r, generation=3),)
    )
    alone = msgspec.structs.replace(old, read_only_parent=bumped_parent)
    assert "read_only_parent generation bump alone is not valid" in invalid(old, alone)
    both = msgspec.structs.replace(alone, sub_volumes=bump(old.sub_volumes))
    assert check_replacement(old, both) is None


# upstream: crucible upstairs/src/volume.rs compare_vcr_for_update, sub_compares[0]
# (6d037cb6, 2026-08-04)
def test_source_generation_update_is_judged_by_the_first_sub_volume() -> None:
    # A generation-only update is valid when sub-volume 0 moved; one whose bump is only in
    # a later sub-volume is refused like a parent-only bump (upstream looks at
    # sub_compares[0] alone). Ours: the same, with a message that says so.
    subs = sub_volumes(2)
    old = Volume("vol-1", BS, subs)
    first_only = Volume("vol-1", BS, (bump(subs)[0], subs[1]))
    assert check_replacement(old, first_only) is None
    second_only = Volume("vol-1", BS, (subs[0], bump(subs)[1]))
    assert "sub_volume 0 ('opts-1' stays at generation 2)" in invalid(old, second_only)


# upstream: crucible upstairs/src/volume.rs compare_vcr_for_update, NewMissing is a no-op
# (6d037cb6, 2026-08-04)
def test_source_dropping_the_parent_alone_is_no_difference() -> None:
    # Dropping the parent is allowed but is not a difference by itself.
    subs = sub_volumes(1)
    old = Volume("vol-1", BS, subs, region("rop-opts", 3))
    assert invalid(old, Volume("vol-1", BS, subs)) == "The VCRs have no difference"
    assert check_replacement(old, Volume("vol-1", BS, bump(subs))) is None


# upstream: crucible upstairs/src/volume.rs compare_vcr_region_for_replacement and
# compare_vcr_for_replacement (6d037cb6, 2026-08-04)
def test_source_region_rules() -> None:
    subs = sub_volumes(1)
    old = Volume("vol-1", BS, subs)
    a, b, c = addrs(0)
    # Two targets of one region changed.
    two = Volume("vol-1", BS, (region(targets=(NEW, "127.0.0.1:9999", c)),))
    assert "'opts-1' has multiple different targets" in invalid(old, two)
    # Sub-volume count changed.
    more = Volume("vol-1", BS, sub_volumes(2))
    assert "sub_volume count mismatch: 1 vs. 2" in invalid(old, more)
    # The parent changes kind (a region where a volume was): "Cannot replace VCR".
    with_vol_parent = rop_original()
    region_parent = msgspec.structs.replace(with_vol_parent, read_only_parent=region("rop-r", 2))
    assert "read_only_parent kind changed" in invalid(with_vol_parent, region_parent)
    # Generations are u64: equal is fine with a target change, 2**64 never deserializes.
    assert check_replacement(old, Volume("vol-1", BS, with_target(subs, 0, 0, NEW))) == (a, NEW)
    top = Volume("vol-1", BS, (region(generation=2**64 - 1, targets=(a, NEW, c)),))
    assert check_replacement(old, top) == (b, NEW)
    over = Volume("vol-1", BS, (region(generation=2**64, targets=(a, NEW, c)),))
    assert "generation 18446744073709551616 is out of range" in invalid(old, over)


# -- the backend actor (upstairs behaviour) --------------------------------------------


def single(generation: int = 1) -> Volume:
    return Volume("vol-1", BS, (region("vol-1", generation, ("ds-1", "ds-2", "ds-3")),))


async def backend(
    rt: Runtime, vcr: Volume, net: DownstairsNetwork, name: str = "disk0"
) -> ActorRef[CrucibleBackend]:
    return await rt.spawn(CrucibleBackend, name, vcr, net, name=f"crucible-{name}")


async def active_backend(
    rt: Runtime, vcr: Volume, net: DownstairsNetwork
) -> ActorRef[CrucibleBackend]:
    ref = await backend(rt, vcr, net)
    assert await ref.ask(Activate()) == "active"
    return ref


# upstream: crucible integration_tests/src/lib.rs test_volume_replace_vcr (6d037cb6, 2026-08-04)
async def test_volume_replace_vcr(actor_runtime: Runtime) -> None:
    # An active volume; a VCR with target 0 replaced and the generation +1: accepted, the
    # client reconnects to the new downstairs, the stored VCR is the new one.
    net = DownstairsNetwork()
    ref = await active_backend(actor_runtime, single(2), net)
    new = Volume("vol-1", BS, (region("vol-1", 3, ("ds-new", "ds-2", "ds-3")),))
    assert await ref.ask(Replace(new)) is R.STARTED
    await trio.sleep(1)
    status = await ref.ask(Status())
    assert status.targets == ("ds-new", "ds-2", "ds-3") and all(status.connected)
    assert ref.instance.vcr == new


# upstream: crucible integration_tests/src/lib.rs test_volume_replace_rop_in_vcr
# (6d037cb6, 2026-08-04)
async def test_volume_replace_rop_in_vcr(actor_runtime: Runtime) -> None:
    # The parent (a region) gets a new target *and* a generation bump while the sub-volume
    # stays the same: accepted; the parent's client is the one restarted.
    net = DownstairsNetwork()
    sub = region("sv", 1, ("ds-1", "ds-2", "ds-3"))
    old = Volume("vol-2", BS, (sub,), region("rop", 2, ("ds-p", "ds-q", "ds-r")))
    ref = await active_backend(actor_runtime, old, net)
    new = msgspec.structs.replace(old, read_only_parent=region("rop", 3, ("ds-n", "ds-q", "ds-r")))
    assert await ref.ask(Replace(new)) is R.STARTED
    await trio.sleep(1)
    status = await ref.ask(Status())
    assert status.targets == ("ds-1", "ds-2", "ds-3", "ds-n", "ds-q", "ds-r")
    assert all(status.connected)


# upstream: crucible integration_tests/src/lib.rs test integration_test_volume_replace_downstairs
# (6d037cb6, 2026-08-04)
async def test_integration_test_volume_replace_downstairs(actor_runtime: Runtime) -> None:
    # Started; asking again reports StartedAlready while the new downstairs is not back,
    # then CompletedAlready (downstairs.rs: the old target is gone, the new one is present).
    net = DownstairsNetwork()
    ref = await active_backend(actor_runtime, single(), net)
    net.blackhole("ds-new")  # the new downstairs takes a while
    assert await ref.ask(ReplaceDownstairs("ds-2", "ds-new")) is R.STARTED
    for _ in range(3):
        await trio.sleep(2)
        assert await ref.ask(ReplaceDownstairs("ds-2", "ds-new")) is R.STARTED_ALREADY
    net.heal("ds-new")
    await trio.sleep(2)
    assert await ref.ask(ReplaceDownstairs("ds-2", "ds-new")) is R.COMPLETED_ALREADY
    assert ref.instance.vcr == single()  # a direct replacement does not touch the VCR


# upstream: crucible integration_tests/src/lib.rs test
# integration_test_volume_replace_bad_downstairs (6d037cb6, 2026-08-04)
async def test_integration_test_volume_replace_bad_downstairs(actor_runtime: Runtime) -> None:
    # Neither target is ours: Missing. Through a VCR that is an error ("can't locate").
    net = DownstairsNetwork()
    ref = await active_backend(actor_runtime, single(), net)
    assert await ref.ask(ReplaceDownstairs("ds-other", "ds-new")) is R.MISSING


# upstream: crucible integration_tests/src/lib.rs test
# integration_test_volume_inactive_replace_downstairs (6d037cb6, 2026-08-04)
async def test_integration_test_volume_inactive_replace_downstairs(
    actor_runtime: Runtime,
) -> None:
    # Before activation: Started, nothing connects yet.
    net = DownstairsNetwork()
    ref = await backend(actor_runtime, single(), net)
    assert await ref.ask(ReplaceDownstairs("ds-2", "ds-new")) is R.STARTED
    status = await ref.ask(Status())
    assert status.state == "inactive" and status.targets == ("ds-1", "ds-new", "ds-3")
    assert net.connects == 0


# upstream: crucible integration_tests/src/lib.rs test
# integration_test_guest_replace_ds_before_active (6d037cb6, 2026-08-04)
async def test_integration_test_guest_replace_ds_before_active(actor_runtime: Runtime) -> None:
    # Replaced before activation, then activation succeeds with the new downstairs (the
    # old one is black-holed and never needed).
    net = DownstairsNetwork()
    net.blackhole("ds-2")
    ref = await backend(actor_runtime, single(), net)
    assert await ref.ask(ReplaceDownstairs("ds-2", "ds-new")) is R.STARTED
    with trio.fail_after(1):
        assert await ref.ask(Activate()) == "active"
    assert (await ref.ask(Status())).targets == ("ds-1", "ds-new", "ds-3")


# upstream: crucible integration_tests/src/lib.rs test
# integration_test_volume_twice_replace_downstairs (6d037cb6, 2026-08-04)
async def test_integration_test_volume_twice_replace_downstairs(actor_runtime: Runtime) -> None:
    net = DownstairsNetwork()
    ref = await active_backend(actor_runtime, single(), net)
    net.blackhole("ds-new")
    assert await ref.ask(ReplaceDownstairs("ds-2", "ds-new")) is R.STARTED
    assert await ref.ask(ReplaceDownstairs("ds-2", "ds-new")) is R.STARTED_ALREADY


# upstream: crucible integration_tests/src/lib.rs test integration_test_volume_replace_active
# (6d037cb6, 2026-08-04)
async def test_integration_test_volume_replace_active(actor_runtime: Runtime) -> None:
    # Replacing a downstairs by another of our active ones, either way round: an error
    # ("both in use"), not CompletedAlready. Same through a VCR.
    net = DownstairsNetwork()
    ref = await active_backend(actor_runtime, single(), net)
    for old, new in (("ds-2", "ds-3"), ("ds-3", "ds-2")):
        with pytest.raises(ReplaceRequestInvalid) as info:
            await ref.ask(ReplaceDownstairs(old, new))
        assert info.value.message == f"Both old {old} and new {new} targets are in use"
    vcr = Volume("vol-1", BS, (region("vol-1", 2, ("ds-1", "ds-3", "ds-3")),))
    with pytest.raises(ReplaceRequestInvalid) as info:
        await ref.ask(Replace(vcr))
    assert "Both old ds-2 and new ds-3 targets are in use" in info.value.message
    assert ref.instance.vcr == single()


# upstream: crucible integration_tests/src/lib.rs test
# integration_test_guest_replace_many_downstairs (6d037cb6, 2026-08-04)
async def test_integration_test_guest_replace_many_downstairs(actor_runtime: Runtime) -> None:
    # A second downstairs of the region cannot be replaced while the first replacement is
    # still in progress (one downstairs offline at a time); once it is done, it can.
    net = DownstairsNetwork()
    ref = await active_backend(actor_runtime, single(), net)
    net.blackhole("ds-new")
    assert await ref.ask(ReplaceDownstairs("ds-1", "ds-new")) is R.STARTED
    with pytest.raises(ReplaceRequestInvalid) as info:
        await ref.ask(ReplaceDownstairs("ds-2", "ds-other"))
    assert "downstairs 0 (ds-new) is still being replaced" in info.value.message
    net.heal("ds-new")
    await trio.sleep(1)
    assert await ref.ask(ReplaceDownstairs("ds-2", "ds-other")) is R.STARTED


# upstream: propolis phd-tests/tests/src/crucible/smoke.rs vcr_replace_during_start_test
# (372a5744, 2026-07-22) and crucible upstairs/src/client.rs: a client replaced before the
# upstairs is active reconnects as a new connection (ConnectionMode::New) (6d037cb6)
async def test_source_replacement_during_activation(actor_runtime: Runtime) -> None:
    # Activation blocked on a black-holed downstairs; a VCR replacing it (equal generation)
    # restarts that client and activation completes. Asked again while the new client
    # connects, the answer is CompletedAlready (mode New is not "a replacement in
    # progress"), and a second replacement in the region is not blocked.
    net = DownstairsNetwork()
    net.blackhole("ds-2")
    net.blackhole("ds-new")
    ref = await backend(actor_runtime, single(), net)
    done: list[str] = []

    async def activate() -> None:
        done.append(await ref.ask(Activate()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(activate)
        await trio.sleep(5)
        assert done == [] and (await ref.ask(Status())).state == "activating"
        fixed = Volume("vol-1", BS, (region("vol-1", 1, ("ds-1", "ds-new", "ds-3")),))
        assert await ref.ask(Replace(fixed)) is R.STARTED
        assert await ref.ask(ReplaceDownstairs("ds-2", "ds-new")) is R.COMPLETED_ALREADY
        assert await ref.ask(ReplaceDownstairs("ds-3", "ds-4")) is R.STARTED
        await wait_all_tasks_blocked()
        assert done == []
        net.heal("ds-new")
    assert done == ["active"]
    status = await ref.ask(Status())
    assert status.targets == ("ds-1", "ds-new", "ds-4") and all(status.connected)
    assert ref.instance.vcr == fixed


# upstream: crucible upstairs/src/volume.rs Volume::replace_downstairs (sub-volumes in order,
# then the read-only parent) and downstairs.rs Downstairs::replace (6d037cb6, 2026-08-04)
async def test_source_results_come_from_the_first_region_holding_either_target(
    actor_runtime: Runtime,
) -> None:
    # "Both in use" is per region: a VCR moving a target of region 2 to a downstairs that
    # region 1 uses finds the new target in region 1 first, without the old one there, and
    # answers CompletedAlready (nothing restarted; the stored VCR is still replaced, as
    # propolis stores it on any success). Moving a target of region 1 to one of region 2
    # finds the old one first: Started.
    net = DownstairsNetwork()
    r1 = region("r1", 1, ("ds-1", "ds-2", "ds-3"))
    r2 = region("r2", 1, ("ds-4", "ds-5", "ds-6"))
    old = Volume("vol-1", BS, (r1, r2))
    ref = await active_backend(actor_runtime, old, net)
    into_first = Volume("vol-1", BS, (r1, region("r2", 1, ("ds-1", "ds-5", "ds-6"))))
    assert await ref.ask(Replace(into_first)) is R.COMPLETED_ALREADY
    assert (await ref.ask(Status())).targets == ("ds-1", "ds-2", "ds-3", "ds-4", "ds-5", "ds-6")
    assert ref.instance.vcr == into_first
    ref2 = await backend(actor_runtime, old, DownstairsNetwork(), name="disk1")
    into_second = Volume("vol-1", BS, (region("r1", 1, ("ds-5", "ds-2", "ds-3")), r2))
    assert await ref2.ask(Replace(into_second)) is R.STARTED
