"""The verdict words of a paired comparison (``mlc.report.verdicts``) against SciPy and statsmodels:
the interval, the p-value, equivalence as TOST, the minimum detectable effect and the seeds needed as
t-test power, Holm's correction; and, by simulation, that "better"/"worse" is said about as rarely as
promised when there is no difference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import DescrStatsW, ttost_paired

from mlc.report import verdicts
from mlc.report.stats import DifferenceRow, holm_over, paired_difference
from mlc.report.verdicts import BETTER, EQUIVALENT, INCONCLUSIVE, WORSE

RNG = np.random.default_rng(20261203)
SAMPLES = [RNG.normal(RNG.uniform(-0.03, 0.03), RNG.uniform(0.002, 0.03), size=n) for n in (2, 3, 5, 8, 20) * 8]


@pytest.mark.parametrize("d", SAMPLES[:10])
def test_interval_and_p_value_are_scipys_and_statsmodels(d):
    assert verdicts.interval(d) == pytest.approx(DescrStatsW(d).tconfint_mean(alpha=0.05), abs=1e-12)
    assert verdicts.p_value(d) == pytest.approx(sps.ttest_1samp(d, 0).pvalue, rel=1e-9, abs=1e-15)


def test_equivalent_is_tost_at_two_and_a_half_percent_per_side():
    decided = 0
    for d in SAMPLES:
        base = RNG.uniform(0.5, 0.7, size=len(d))
        for margin in (0.005, 0.01, 0.02, 0.05):
            low, high = verdicts.interval(d)
            ours = verdicts.verdict(low, high, float(d.mean()), margin) == EQUIVALENT  # (also when 0 is outside)
            p_tost = ttost_paired(base + d, base, -margin, margin)[0]
            assert ours == (p_tost < 0.025), (d, margin, p_tost)
            decided += ours
    assert decided > 5  # (the samples hold equivalent cases, not only the other kind)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 13, 30])
def test_minimum_detectable_effect_is_t_test_power(n):
    ours = verdicts.detectable_effect(n)
    assert TTestPower().power(ours, n, 0.05) == pytest.approx(0.8, abs=1e-9)
    assert ours == pytest.approx(TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8), rel=1e-4)


@pytest.mark.parametrize("effect", [0.1, 0.33, 0.5, 1.0, 2.0, 3.5])
def test_seeds_needed_is_the_smallest_n_with_eighty_percent_power(effect):
    expected = TTestPower().solve_power(effect_size=effect, nobs=None, alpha=0.05, power=0.8)
    assert verdicts.seeds_needed(effect) == max(2, math.ceil(expected))
    assert verdicts.seeds_needed(0.01) is None  # more than 1000 pairs


def test_holm_is_statsmodels_holm():
    for _ in range(50):
        p = list(RNG.uniform(0, 0.08, size=int(RNG.integers(1, 15))))
        assert verdicts.holm(p) == list(multipletests(p, alpha=0.05, method="holm")[0])


def test_a_comparison_reports_what_its_seeds_could_detect():
    base = {"0": 0.60, "1": 0.62, "2": 0.58}
    noisy = {"0": 0.63, "1": 0.60, "2": 0.60}
    got = paired_difference(noisy, base, margin=0.01)
    d = np.array([0.03, -0.02, 0.02])
    assert got.verdict == INCONCLUSIVE  # not "no difference": three seeds of this spread cannot tell
    assert got.mde == pytest.approx(TTestPower().solve_power(None, nobs=3, alpha=0.05, power=0.8) * d.std(ddof=1))
    assert got.seeds_needed == math.ceil(TTestPower().solve_power(0.01 / d.std(ddof=1), nobs=None, alpha=0.05,
                                                                  power=0.8))
    tight = paired_difference({s: v + 0.001 * (-1) ** int(s) for s, v in base.items()}, base, margin=0.01)
    assert tight.verdict == EQUIVALENT
    assert paired_difference({s: v + 0.05 for s, v in base.items()}, base).verdict in (BETTER,)


def test_holm_over_a_table_demotes_the_verdicts_it_does_not_keep():
    base = {str(s): 0.6 for s in range(3)}
    weak = {"0": 0.63, "1": 0.635, "2": 0.64}  # p ≈ 0.007: better on its own, not among 12 (Holm: 0.05 / 12)
    rows = [DifferenceRow((f"loss{i}",), ("base",), 3, {m: paired_difference(weak, base) for m in "abc"})
            for i in range(4)]
    assert {d.verdict for r in rows for d in r.diffs.values()} == {BETTER}
    kept = holm_over(rows)
    assert {(d.verdict, d.label) for r in kept for d in r.diffs.values()} == {
        (INCONCLUSIVE, "inconclusive (better before Holm)")}
    strong = {"0": 0.70, "1": 0.701, "2": 0.702}
    alone = holm_over([DifferenceRow(("x",), ("base",), 3, {"a": paired_difference(strong, base)})])
    assert alone[0].diffs["a"].verdict == BETTER


def test_under_no_difference_better_or_worse_is_rare():
    """5,000 comparisons of 5 seeds with no true difference: better/worse at most about 5% of the time."""
    wrong = 0
    for _ in range(5000):
        d = RNG.normal(0, 0.02, size=5)
        low, high = verdicts.interval(d)
        wrong += verdicts.verdict(low, high, float(d.mean()), 0.01) in (BETTER, WORSE)
    assert wrong / 5000 < 0.05 + 3 * math.sqrt(0.05 * 0.95 / 5000)


def test_margin_option_one_number_or_per_metric():
    from mlc.report.cli import parse_margins
    from mlc.report.runs import ReportError

    metrics = ["test/f1_macro", "test/map"]
    assert parse_margins(None, metrics) == {}
    assert parse_margins("0.02", metrics) == {"test/f1_macro": 0.02, "test/map": 0.02}
    assert parse_margins("test/map=0.005", metrics) == {"test/map": 0.005}
    for bad, says in [("0", "'0' is not a positive number"), ("nan", "'nan' is not a positive number"),
                      ("test/f1=0.01", "'test/f1=0.01' is not 'metric=δ' for one of --metrics"),
                      ("test/map=x", "'x' is not a positive number")]:
        with pytest.raises(ReportError, match=f"^--margin={bad!r}: {says}"):
            parse_margins(bad, metrics)
