"""``mlc.report.lambda_study``: the near-best span of λ, the relation rules, and the search summary it reads."""

from __future__ import annotations

import json

import pytest

from mlc.report import figures
from mlc.report.lambda_study import (
    Row,
    Search,
    build_rows,
    main,
    markdown,
    near_best,
    read_search,
    relations,
    to_csv,
)
from mlc.report.runs import ReportError
from mlc.report.stats import Cell, GroupSummary

RATIOS = (0.2, 0.4, 0.6, 0.8, 0.95)


def search(ratio, trials, series=()):
    best = max(trials, key=lambda t: t[1])
    return Search(series, ratio, tuple(trials), *best)


def row(ratio, best_lam, near, series=()):
    s = Search(series, ratio, tuple((lam, 0.5) for lam in near), best_lam, 0.5)
    return Row(s, Cell(0.5, 0.01, 3), {"test/f1_macro": Cell(0.6, 0.02, 3)}, tuple(sorted(near)))


def test_near_best_is_every_searched_lambda_within_one_seed_std_of_the_best():
    trials = [(0.001, 0.70), (0.01, 0.78), (0.02, 0.80), (0.1, 0.75), (0.3, 0.7799)]
    assert near_best(trials, 0.80, 0.02, lower_better=False) == (0.01, 0.02)  # 0.7799 is just outside
    assert near_best(trials, 0.80, 0.0201, lower_better=False) == (0.01, 0.02, 0.3)
    losses = [(0.001, 1.0), (0.01, 1.05), (0.1, 1.2)]
    assert near_best(losses, 1.0, 0.05, lower_better=True) == (0.001, 0.01)


def test_a_lambda_near_best_at_every_ratio_is_inconclusive_not_no_relation():
    rows = [row(r, 0.01 * (i + 1), [0.005, 0.01 * (i + 1), 0.06]) for i, r in enumerate(RATIOS)]
    (rel,) = relations(rows)
    assert rel.rho == pytest.approx(1.0) and rel.common == (0.005, 0.06)  # a trend in λ*, but inside the noise
    assert rel.verdict.startswith("inconclusive: λ from 0.005 to 0.06 is within the seed spread of the best "
                                  "at every ratio, so these seeds cannot tell the ratios' best λ apart "
                                  "(Spearman ρ = +1.00")


def test_disjoint_spans_with_a_monotone_best_lambda_are_a_trend():
    rows = [row(r, lam, [lam * 0.9, lam * 1.1]) for r, lam in zip(RATIOS, (0.001, 0.004, 0.02, 0.08, 0.3),
                                                                   strict=True)]
    (rel,) = relations(rows)
    assert rel.common is None and rel.p < 0.05
    assert rel.verdict.startswith("the best λ rises with the negative ratio (Spearman ρ = +1.00")
    falling = relations([row(r, lam, [lam]) for r, lam in zip(RATIOS, (0.3, 0.08, 0.02, 0.004, 0.001),
                                                              strict=True)])[0]
    assert "falls with the negative ratio" in falling.verdict


def test_the_rank_correlation_is_spearmans_rho_worked_out_by_hand():
    lams = (0.01, 0.03, 0.02, 0.05, 0.04)  # ranks 1 3 2 5 4: sum d^2 = 4, rho = 1 - 6*4/(5*24) = 0.8
    (rel,) = relations([row(r, lam, [lam]) for r, lam in zip(RATIOS, lams, strict=True)])
    assert rel.rho == pytest.approx(0.8)
    assert rel.p == pytest.approx(0.104, abs=0.001)  # t = 0.8*sqrt(3/0.36) = 2.309 with 3 degrees of freedom
    assert rel.verdict.startswith("inconclusive: the best λ moves between ratios without a monotone trend at 5%")
    # its 95% interval: Fisher's z with Bonett-Wright's standard error, worked out here in float64
    import math

    z, se = math.atanh(0.8), math.sqrt((1 + 0.8 ** 2 / 2) / (5 - 3))
    assert rel.rho_interval == pytest.approx((math.tanh(z - 1.959963984540054 * se),
                                              math.tanh(z + 1.959963984540054 * se)))
    assert rel.rho_interval == pytest.approx((-0.4571, 0.9908), abs=1e-4)  # z = 1.0986, se = 0.8124
    assert f"ρ = +0.80 [{rel.rho_interval[0]:+.2f}, +0.99], p = 0.1" in rel.verdict


def test_without_a_seed_spread_the_relation_is_not_decided_and_two_ratios_give_no_correlation():
    rows = [Row(search(0.2, [(0.01, 0.8), (0.1, 0.7)])), Row(search(0.9, [(0.01, 0.2), (0.1, 0.3)]))]
    (rel,) = relations(rows)
    assert rel.rho is None and not rel.spans_known
    assert rel.verdict == ("not decided: no seed spread to judge the best λ by (re-run it over seeds); "
                           "2 ratio(s): too few for a rank correlation")
    rising = [Row(search(r, [(lam, 0.5)])) for r, lam in zip(RATIOS, (0.001, 0.004, 0.02, 0.08, 0.3), strict=True)]
    (rel,) = relations(rising)  # a perfect trend in one seed's winners, but no seed spread to judge it by
    assert rel.p < 0.05 and rel.verdict.startswith("not decided")


def summary(values, objective, f1, seeds=3):
    cells = {"best/val/f1_macro": Cell(objective[0], objective[1], seeds), "test/f1_macro": Cell(f1, 0.01, seeds)}
    return GroupSummary(tuple(values), [], [str(s) for s in range(1, seeds + 1)], cells)


def test_rows_take_the_reruns_of_the_best_lambda_as_mlflow_rounded_it():
    searches = [search(0.2, [(0.0123456789, 0.80), (0.3, 0.79), (0.001, 0.70)]),
                search(0.9, [(0.05, 0.30), (0.002, 0.10)])]
    summaries = [summary(["0.2", "0.0123457"], (0.78, 0.015), 0.81),  # MLflow's 6 significant digits
                 summary(["0.2", "0.3"], (0.7, 0.01), 0.7),  # not the best λ: left out, with a note
                 summary(["0.9", "0.05"], (0.25, None), 0.3, seeds=1)]
    notes = []
    rows = build_rows(searches, summaries, [], "best/val/f1_macro", ["test/f1_macro"], False, notes)
    assert rows[0].objective.mean == 0.78 and rows[0].near == (0.0123456789, 0.3)
    assert rows[0].span == (0.0123456789, 0.3)
    assert rows[1].near is None  # one seed: no spread
    assert notes == ["negative ratio 0.9: fewer than two seeds re-ran its best λ 0.05: no near-best span",
                     "seed runs at 0.2, 0.3 are not a study's best λ: left out"]
    text = markdown(rows, relations(rows), [], "val/f1_macro", ["test/f1_macro"], notes)
    assert "| 0.2 | 3 | 0.0123 | 0.8000 | 0.0123 – 0.3 (2/3) | 0.7800 ± 0.0150 | 3 | 0.8100 ± 0.0100 |" in text
    assert "| 0.9 | 2 | 0.05 | 0.3000 | — | 0.2500 | 1 | 0.3000 ± 0.0100 |" in text
    lines = to_csv(rows, [], "val/f1_macro", ["test/f1_macro"]).splitlines()
    assert lines[1].startswith("0.2,3,0.0123456789,0.8,0.0123456789,0.3,2,0.78,0.015,3,0.81,0.01")


def test_the_figure_draws_several_series(tmp_path):
    rows = [row(r, 0.01, [0.005, 0.01], series=(loss,)) for loss in ("any_bce", "any_focal") for r in RATIOS[:3]]
    path = figures.best_lambda_study(rows, ["loss"], "val/f1_macro", "test/f1_macro", tmp_path / "f.png")
    assert path.stat().st_size > 10_000
    assert len(relations(rows)) == 2  # one relation per series


def write_summary(folder, studies, searched=("loss.lam",)):
    (folder / "sweep_summary.json").write_text(json.dumps({
        "monitor": "val/f1_macro", "direction": "maximize", "searched": list(searched), "studies": studies}))


def study(ratio, trials, status="ok", **fixed):
    return {"name": f"s[{ratio}]", "fixed": {"dataset.negative_ratio": ratio, **fixed}, "status": status,
            "trials": [{"params": {"loss.lam": lam}, "value": v} for lam, v in trials]}


def test_the_search_is_read_from_its_sweep_summary(tmp_path):
    write_summary(tmp_path, [study(0.9, [(0.01, 0.2), (0.1, 0.3)], loss="any_bce"),
                             study(0.2, [(0.01, 0.8)], status="incomplete", loss="any_bce"),
                             study(0.5, [], status="failed", loss="any_bce")])
    monitor, lower, searches, keys, notes = read_search(tmp_path)
    assert (monitor, lower, keys) == ("val/f1_macro", False, ["loss"])
    assert [(s.series, s.ratio, s.best_lam) for s in searches] == [(("any_bce",), 0.2, 0.01), (("any_bce",), 0.9, 0.1)]
    assert notes == ["study 's[0.2]' is incomplete: its best λ is from 1 finished trial(s)",
                     "study 's[0.5]': no finished trial (failed); left out"]


@pytest.mark.parametrize("content, message", [
    (None, "no sweep_summary.json (is it the folder of a finished λ search?)"),
    ("{not json", "is not a sweep summary (JSONDecodeError"),
    ({"monitor": "m", "direction": "maximize", "searched": ["optim.lr"], "studies": []},
     "searched optim.lr, not loss.lam"),
    ({"monitor": "m", "direction": "maximize", "searched": ["loss.lam"], "studies": [{"name": "s", "fixed": {}}]},
     "study 's' does not hold dataset.negative_ratio fixed"),
    ({"monitor": "m", "direction": "maximize", "searched": ["loss.lam"], "studies": []}, "no study in"),
])
def test_a_bad_search_folder_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    if content is not None:
        (tmp_path / "sweep_summary.json").write_text(content if isinstance(content, str) else json.dumps(content))
    assert main(["--search", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    with pytest.raises(ReportError):
        read_search(tmp_path)


def test_without_seed_reruns_the_study_is_still_written(tmp_path):
    write_summary(tmp_path, [study(0.2, [(0.01, 0.8), (0.1, 0.7)]), study(0.9, [(0.01, 0.2), (0.1, 0.3)])])
    assert main(["--search", str(tmp_path), "--output", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "lambda_study.md").read_text()
    assert "| 0.2 | 2 | 0.01 | 0.8000 | — | — | 0 |" in text and "not decided" in text
    assert (tmp_path / "out" / "best_lambda_vs_ratio.png").is_file()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["--search", str(tmp_path), "--output", str(tmp_path / "other")]) == 2  # never overwrites a stranger


def test_a_search_over_k_seeds_per_trial_gives_the_set_of_lambda_not_worse_than_the_best(tmp_path):
    """seeds_per_trial K > 1: the summary keeps each trial's per-seed values; λ* is uncertain by the λ whose seeds
    do not show them worse (one-sided paired t-test against λ*'s seeds, Holm over the trials), as SciPy says."""
    from scipy import stats

    from mlc.report.lambda_study import not_worse
    from mlc.report.verdicts import holm

    per_seed = {0.03: [0.80, 0.82, 0.79, 0.81],   # λ*: the best mean
                0.01: [0.60, 0.63, 0.59, 0.61],   # clearly worse on every seed
                0.05: [0.81, 0.80, 0.76, 0.80],   # a little worse on average, not significantly
                0.3: [0.78, 0.80, 0.77, 0.79]}    # worse by 0.02 on every seed: significant although small
    trials = [{"params": {"loss.lam": lam}, "value": sum(v) / 4, "seeds": {str(s): x for s, x in enumerate(v)}}
              for lam, v in per_seed.items()]
    write_summary(tmp_path, [{"name": "s[0.8]", "fixed": {"dataset.negative_ratio": 0.8}, "status": "ok",
                              "trials": trials}])
    _, lower, (s,), _, _ = read_search(tmp_path)
    assert s.best_lam == 0.03 and s.seeds[0] == {"0": 0.80, "1": 0.82, "2": 0.79, "3": 0.81}
    p = [stats.ttest_rel(per_seed[0.03], per_seed[lam], alternative="greater").pvalue for lam in (0.01, 0.05, 0.3)]
    expected = [0.03] + [lam for lam, worse in zip((0.01, 0.05, 0.3), holm(p), strict=True) if not worse]
    assert not_worse(s, lower) == tuple(sorted(expected)) == (0.03, 0.05)
    # without re-runs, the study's near-best span is that set, so the relation can be judged
    (out,) = build_rows([s], None, [], "best/val/f1_macro", [], lower, [])
    assert out.span == (0.03, 0.05)
    # with re-runs too, the paired test over the search's seeds decides, not the re-runs' spread (0.5 here would
    # call every searched λ near-best)
    rerun = GroupSummary(("0.8", "0.03"), [], ["2", "3"], {"best/val/f1_macro": Cell(0.8, 0.5, 2)})
    (out,) = build_rows([s], [rerun], [], "best/val/f1_macro", [], lower, [])
    assert out.span == (0.03, 0.05) and out.objective.std == 0.5
    assert not_worse(search(0.8, [(0.03, 0.8), (0.05, 0.7)]), False) is None  # one seed per trial: no set
