"""#3325 under the explorer (spec/sled-agent.md §7 scenario 14): four concurrent start
sagas with retries plus a terminator. The start-token design never violates an invariant
over 1,000 seeds; the legacy ticket design lets two runners live for one VMM id."""

from __future__ import annotations

from pathlib import Path

from trioxide.actors.sagas import AT_END, INVARIANT_CHECKS, legacy_scenario, token_scenario
from trioxide.runtime.testing import explore, replay

ONLY_ONE_ALIVE = [inv for inv in INVARIANT_CHECKS if inv.__name__ == "only_one_alive"]


def test_start_tokens_never_violate_an_invariant_over_1000_seeds() -> None:
    result = explore(
        token_scenario,
        seeds=range(1000),
        invariants=INVARIANT_CHECKS,
        at_end=AT_END,
        progress=False,
    )
    assert result.ok, result.summary()
    assert result.seeds_run == 1000
    assert result.checks > 100_000  # after every handled message, 5 invariants


def test_legacy_tickets_violate_only_one_alive_and_replay_it(tmp_path: Path) -> None:
    found = explore(
        legacy_scenario,
        seeds=range(300),
        invariants=ONLY_ONE_ALIVE,
        trace_dir=tmp_path,
        progress=False,
    )
    assert found.violation is not None, found.summary()
    v = found.violation
    assert v.invariant == "only_one_alive" and "more than one live runner" in v.message
    assert v.trace_path is not None and v.trace_path.exists()
    for _ in range(3):
        again = replay(legacy_scenario, v.seed, invariants=ONLY_ONE_ALIVE)
        assert again.violation is not None and again.violation.key() == v.key()


def test_legacy_tickets_also_break_the_table_invariants() -> None:
    found = explore(legacy_scenario, seeds=range(50), invariants=INVARIANT_CHECKS, progress=False)
    assert found.violation is not None
    assert found.violation.invariant in {"strong_ref_implies_table", "only_one_alive"}
