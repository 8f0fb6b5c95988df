"""`python -m mlc.cli.plot likelihood`: the two-class any-class likelihood simulation (math and PNG files)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from mlc import likelihood as lk
from mlc.cli.plot import main
from tests.conftest import run_module

POINTS = [(0.3, 0.8), (0.9, 0.05), (0.5, 0.5), (1e-6, 1 - 1e-6), (0.999, 0.002)]


def geometric_mean(p1: float, p2: float, w1: float, w2: float) -> float:
    """Π p^w / (Π p^w + Π (1−p)^w) for two classes, weights normalised here."""
    w1, w2 = w1 / (w1 + w2), w2 / (w1 + w2)
    up = p1 ** w1 * p2 ** w2
    return up / (up + (1 - p1) ** w1 * (1 - p2) ** w2)


def at(p1: float, p2: float) -> np.ndarray:
    return np.array([p1, p2], dtype=np.float64)


@pytest.mark.parametrize(("p1", "p2"), POINTS)
def test_aggregations_match_closed_forms(p1, p2):
    p = at(p1, p2)
    # λ = 0, y = (1, 0): the absent class has no weight, so p_a is p1 itself.
    assert lk.weighted_geometric_mean(p, (1, 0), 0.0) == pytest.approx(p1, rel=1e-12)
    assert lk.weighted_geometric_mean(p, (0, 1), 0.0) == pytest.approx(p2, rel=1e-12)
    # A negative instance, or λ = 1, or both present: equal weights, whatever λ.
    equal = math.sqrt(p1 * p2) / (math.sqrt(p1 * p2) + math.sqrt((1 - p1) * (1 - p2)))
    for labels, lam in [((0, 0), 0.02), ((0, 0), 0.0), ((1, 1), 0.02), ((1, 0), 1.0)]:
        assert lk.weighted_geometric_mean(p, labels, lam) == pytest.approx(equal, rel=1e-12)
    # y = (1, 0), λ = 0.02: weights 1 and λ, normalised.
    assert lk.weighted_geometric_mean(p, (1, 0), 0.02) == pytest.approx(geometric_mean(p1, p2, 1, 0.02), rel=1e-12)
    assert lk.weighted_geometric_mean(p, (0, 1), 0.3) == pytest.approx(geometric_mean(p1, p2, 0.3, 1), rel=1e-12)
    assert lk.product(p) == pytest.approx(p1 * p2, rel=1e-15)


@pytest.mark.parametrize(("p1", "p2"), POINTS)
def test_likelihoods_and_losses_match_closed_forms(p1, p2):
    p, lam = at(p1, p2), 0.02
    z1, z2 = math.log(p1 / (1 - p1)), math.log(p2 / (1 - p2))
    pa = geometric_mean(p1, p2, 1, lam)
    assert lk.bce_likelihood(p, (1, 0)) == pytest.approx(p1 * (1 - p2), rel=1e-12)
    assert lk.bce_likelihood(p, (0, 0)) == pytest.approx((1 - p1) * (1 - p2), rel=1e-12)
    assert lk.any_likelihood(p, (1, 0), lam) == pytest.approx(pa, rel=1e-12)
    neg = geometric_mean(p1, p2, 1, 1)
    assert lk.any_likelihood(p, (0, 0), lam) == pytest.approx(1 - neg, rel=1e-9)
    assert lk.combined_likelihood(p, (1, 0), lam, alpha=2.0) == pytest.approx(p1 * (1 - p2) * pa ** 2, rel=1e-12)
    # Losses: −log of the same closed forms, from the logits.
    z = np.array([z1, z2])
    assert lk.any_class_logit(z, (1, 0), lam) == pytest.approx((z1 + lam * z2) / (1 + lam), rel=1e-12, abs=1e-12)
    assert lk.bce_loss(z, (1, 0)) == pytest.approx(-math.log(p1) - math.log(1 - p2), rel=1e-9)
    assert lk.any_loss(z, (1, 0), lam) == pytest.approx(-math.log(pa), rel=1e-9, abs=1e-12)
    assert lk.combined_loss(z, (1, 0), lam, alpha=0.5) == pytest.approx(
        -math.log(p1) - math.log(1 - p2) - 0.5 * math.log(pa), rel=1e-9)


@pytest.mark.parametrize("labels", lk.LABEL_PAIRS)
@pytest.mark.parametrize("lam", [0.0, 0.02, 0.5, 1.0])
def test_logit_form_equals_probability_form_on_the_whole_grid(labels, lam):
    p = lk.grid(101, eps=1e-6)
    surf = lk.surfaces(p, p, labels, lam, alpha=1.5)
    assert all(np.isfinite(v).all() and v.dtype == np.float64 and v.shape == (101, 101) for v in surf.values())
    # σ(z_a) is the normalised weighted geometric mean.
    x, y = np.meshgrid(p, p)
    z = lk.logit(np.stack([x, y], axis=-1))
    p_a = 1.0 / (1.0 + np.exp(-lk.any_class_logit(z, labels, lam)))
    np.testing.assert_allclose(p_a, surf["geometric_mean"], rtol=1e-9, atol=1e-15)
    for name in ("bce", "any", "combined"):
        np.testing.assert_allclose(surf[f"{name}_loss"], -np.log(surf[f"{name}_likelihood"]), rtol=1e-9, atol=1e-12)
    # Meshgrid orientation: columns follow p1, rows p2.
    assert surf["bce_likelihood"][0, -1] == pytest.approx(lk.bce_likelihood(at(p[-1], p[0]), labels))
    # Losses are ≥ 0 and likelihoods are probabilities.
    assert (surf["combined_loss"] >= 0).all() and (surf["combined_likelihood"] <= 1).all()


def test_losses_are_finite_at_extreme_logits():
    z = np.array([[100.0, -100.0], [-100.0, 100.0], [800.0, -800.0]])
    for labels in lk.LABEL_PAIRS:
        losses = lk.combined_loss(z, labels, 0.02)
        assert np.isfinite(losses).all() and (losses >= 0).all()
    # −log σ(−100) = 100 exactly where log(sigmoid) would give inf in float32 and lose digits in float64.
    assert lk.bce_loss(np.array([100.0, -100.0]), (0, 1)) == pytest.approx(200.0, rel=1e-12)


def test_matches_the_training_loss():
    torch = pytest.importorskip("torch")
    from mlc.losses.any_class import AnyClassPresenceLoss

    z = np.random.default_rng(0).normal(scale=3.0, size=(16, 2))
    loss = AnyClassPresenceLoss([1.0, 1.0], 1.0, lam=0.02, alpha=1.0, beta=None, reduction="sum",
                                implementation="autograd")
    for labels in lk.LABEL_PAIRS:
        y = torch.tensor([labels] * len(z), dtype=torch.float64)
        expected = float(loss(torch.from_numpy(z), y))
        assert lk.combined_loss(z, labels, 0.02).sum() == pytest.approx(expected, rel=1e-12)


def test_bad_math_input_is_refused():
    p = lk.grid(5)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="λ"):
            lk.surfaces(p, p, (1, 0), bad)
    with pytest.raises(ValueError, match="labels"):
        lk.surfaces(p, p, (1, 2), 0.02)
    with pytest.raises(ValueError, match="two classes"):
        lk.surfaces(p, p, (1, 0, 1), 0.02)
    with pytest.raises(ValueError, match="α"):
        lk.surfaces(p, p, (1, 0), 0.02, alpha=-1.0)


def test_cli_writes_one_png_per_label_pair(tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "figs" / "likelihood"
    assert main(["likelihood", "--lam", "0.02", "--points", "21", "--output", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [out / f"likelihood_y{a}{b}_lam0.02.png" for a, b in lk.LABEL_PAIRS]
    assert lines == [str(path) for path in expected]
    assert sorted(out.iterdir()) == sorted(expected)
    for path in expected:
        image = matplotlib.image.imread(path)
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] in (3, 4)
        assert image.shape[0] > 500 and image.shape[1] > 500 and image[..., :3].std() > 0.05  # not blank

    assert main(["likelihood", "--lam", "0", "--alpha", "2", "--labels", " 1, 0", "--points", "11",
                 "--output", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(out / "likelihood_y10_lam0_alpha2.png")]


def test_cli_as_a_module_reports_without_traceback(tmp_path):
    bad = run_module("mlc.cli.plot", ["likelihood", "--lam", "2", "--output", str(tmp_path)], dict(os.environ),
                     timeout=60)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.splitlines() == [
        "error: --lam 2.0: λ must be in [0, 1]"]


@pytest.mark.parametrize(("args", "option"), [
    (["--lam", "1.5"], "--lam"),
    (["--lam", "-0.01"], "--lam"),
    (["--lam", "nan"], "--lam"),
    (["--lam", "abc"], "--lam"),
    (["--alpha", "-1"], "--alpha"),
    (["--alpha", "inf"], "--alpha"),
    (["--labels", "1,2"], "--labels"),
    (["--labels", "1"], "--labels"),
    (["--labels", "1,0,1"], "--labels"),
    (["--labels", "a,b"], "--labels"),
    (["--points", "1"], "--points"),
    (["--output", "{file}"], "--output"),                  # a file, not a folder
    (["--output", "{file}/sub"], "--output"),              # cannot be created
    ([], "--output"),                                     # required
])
def test_cli_bad_input_is_one_line_exit_2(args, option, tmp_path, capsys):
    file = tmp_path / "taken.png"
    file.write_bytes(b"not a folder")
    argv = ["likelihood", *[a.format(file=file) for a in args]]
    if option != "--output":
        argv += ["--output", str(tmp_path / "out")]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors (unparsable values, missing options)
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and option in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.png"]  # nothing written


def test_cli_needs_a_figure(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
