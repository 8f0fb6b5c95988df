"""The adaptive-seeds stopping rule (``mlc.report.sequential``): planned looks, and α kept over all of them.

The simulations run the report's own code path (``stats.paired_difference`` per comparison, Holm over the table
with ``stats.holm_over``, decisions with ``sequential.record``) on seeds drawn from known distributions, so the
error rates they measure are those of ``mlc reproduce --until-decided``.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlc.report import sequential, stats
from mlc.report.verdicts import BETTER, EQUIVALENT, WORSE

ALPHA = 0.05
LOOKS = sequential.plan_looks([0, 1, 2], max_seeds=10, per_round=3)  # 3, 6, 9, 10 seeds
METRICS = ("test/f1_macro", "test/map")


def test_looks_are_planned_from_the_presets_seeds_in_rounds():
    assert LOOKS == [(0, 1, 2), (0, 1, 2, 3, 4, 5), (0, 1, 2, 3, 4, 5, 6, 7, 8), tuple(range(10))]
    assert sequential.plan_looks([0, 2], 5, 2) == [(0, 2), (0, 2, 1, 3), (0, 2, 1, 3, 4)]  # the tiny form's seeds
    assert sequential.plan_looks([0, 1, 2], 3, 3) == [(0, 1, 2)]
    assert sequential.look_alpha(0.05, 4) == pytest.approx(0.0125)


@pytest.mark.parametrize(("first", "max_seeds", "per_round", "says"), [
    ([0], 5, 1, "at least 2"), ([0, 1, 2], 2, 1, "--max-seeds=2 is below"), ([0, 1], 4, 0, "--seeds-per-round=0")])
def test_a_design_that_cannot_run_is_refused(first, max_seeds, per_round, says):
    with pytest.raises(sequential.DesignError, match=says):
        sequential.plan_looks(first, max_seeds, per_round)


def simulate(effects: dict[str, float], sims: int, alpha: float, looks=LOOKS, seed: int = 0) -> dict[str, int]:
    """Run the sequential design ``sims`` times on two comparisons × ``METRICS`` whose true paired differences are
    ``effects[metric]`` (per-seed noise sd 1 on each arm; the metrics of one run correlated 0.5); count the
    experiments in which some comparison was decided better/worse, and equivalent, at any look."""
    rng = np.random.default_rng(seed)
    per_look = sequential.look_alpha(alpha, len(looks))
    n_max, counts = len(looks[-1]), {"better_or_worse": 0, "equivalent": 0, "stopped_early": 0}
    cov = [[1.0, 0.5], [0.5, 1.0]]
    for _ in range(sims):
        # per comparison: the two arms' values of both metrics at every seed (the same seeds at every look)
        arms = [(rng.multivariate_normal([0, 0], cov, n_max), rng.multivariate_normal([0, 0], cov, n_max))
                for _ in range(2)]
        decisions: dict = {}
        for number, seeds in enumerate(looks, start=1):
            rows = []
            for c, (mine, base) in enumerate(arms):
                diffs = {m: stats.paired_difference({str(s): mine[s, j] + effects[m] for s in seeds},
                                                    {str(s): base[s, j] for s in seeds}, margin=0.5, alpha=per_look)
                         for j, m in enumerate(METRICS)}
                rows.append(stats.DifferenceRow((f"loss{c}",), ("base",), len(seeds), diffs))
            if not sequential.record(decisions, stats.holm_over(rows, per_look), number, len(seeds)):
                counts["stopped_early"] += number < len(looks)
                break
        verdicts = {d.verdict for d in decisions.values()}
        counts["better_or_worse"] += bool(verdicts & {BETTER, WORSE})
        counts["equivalent"] += EQUIVALENT in verdicts
    return counts


def test_under_no_difference_the_false_better_or_worse_rate_over_all_looks_stays_within_alpha():
    sims = 1500
    counts = simulate({m: 0.0 for m in METRICS}, sims, ALPHA)
    rate = counts["better_or_worse"] / sims
    # the union bound promises ≤ α; a binomial 3-sigma margin on top of the measured rate keeps the test honest
    assert rate + 3 * np.sqrt(ALPHA * (1 - ALPHA) / sims) <= ALPHA + 0.017, rate
    assert rate <= ALPHA, rate


def test_looking_at_alpha_every_time_does_find_false_differences_more_often_than_alpha():
    """The control: the same looks without the split (α at each) exceed α, so the test above could fail."""
    sims = 1500
    naive = simulate({m: 0.0 for m in METRICS}, sims, ALPHA * len(LOOKS))  # α/L · L = α per look
    assert naive["better_or_worse"] / sims > 1.4 * ALPHA, naive


def test_under_a_difference_at_the_margin_a_false_equivalent_stays_within_alpha():
    """Equivalence is an error when the true difference is δ itself: it too stays ≤ α over the looks."""
    sims = 1000
    counts = simulate({m: 0.5 for m in METRICS}, sims, ALPHA, seed=1)
    assert counts["equivalent"] / sims <= ALPHA, counts


def test_a_real_difference_is_decided_and_the_design_stops_early():
    counts = simulate({m: 3.0 for m in METRICS}, 200, ALPHA, seed=2)  # 3 sd of one arm: about 2.1 sd of a pair
    assert counts["better_or_worse"] == 200
    assert counts["stopped_early"] >= 150, counts


def test_a_decision_stands_and_is_shown_with_its_look():
    def row(values, mean):
        d = stats.paired_difference({str(s): mean + 0.01 * s for s in range(3)}, {str(s): 0.0 for s in range(3)},
                                    alpha=0.025)
        return stats.DifferenceRow(values, ("cb_bce",), 3, {"test/map": d})

    decisions: dict = {}
    undecided = sequential.record(decisions, [row(("any_bce",), 0.2), row(("any_focal",), 0.0)], 1, 3)
    assert [k for k in decisions] == [(("any_bce",), "test/map")] and undecided == [(("any_focal",), "test/map")]
    assert decisions[(("any_bce",), "test/map")].verdict == BETTER
    # a later look that would say otherwise does not undo it
    sequential.record(decisions, [row(("any_bce",), 0.0), row(("any_focal",), 0.0)], 2, 6)
    assert decisions[(("any_bce",), "test/map")].look == 1
    looks = [sequential.Look(1, (0, 1, 2), 12, 1, 2), sequential.Look(2, tuple(range(6)), 24, 1, 2)]
    text = sequential.markdown(looks, [(0, 1, 2), tuple(range(6))], decisions,
                               [row(("any_bce",), 0.0), row(("any_focal",), 0.0)], fixed_runs=24)
    assert "each at α/2 = 0.025 (97.5% intervals" in text
    assert "| any_bce vs cb_bce | test/map | **better** | look 1 (3 seeds) |" in text
    assert "| any_focal vs cb_bce | test/map | inconclusive | not decided (3 seeds) |" in text
    assert "Runs used: 24; the fixed design of 6 seeds runs 24." in text
