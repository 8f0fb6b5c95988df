"""The loss options as composed from ``conf/loss/`` (defaults lists): same losses as before, no dead fields.

The any-class (``common/any_class.yaml``), DB (``common/db.yaml``) and PR/APR/APAF/PG
(``common/probability_guided.yaml``) options share their fields through Hydra defaults lists and state only
what differs. Checked here: every option gives the values and gradients it gave before that change
(``RECORDED``, computed with the code of commit 495ffa8, when each option was one flat file), a field that
has no effect in an option is not in it (so ``loss=bce loss.lam=0.1`` fails in Hydra instead of silently doing
nothing), the renamed fields (DB's ``neg_scale``, Hill's ``hill_lambda``) leave ``loss.lam`` to the any-class
loss alone, and the shared files are not options.
"""

from __future__ import annotations

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from mlc.config import check_command_line
from mlc.losses import AnyClassPresenceLoss
from mlc.losses.db import DistributionBalancedLoss
from tests.conftest import ROOT, compose

OPTIONS = sorted(p.stem for p in (ROOT / "conf" / "loss").glob("*.yaml"))
COUNTS = [150.0, 60.0, 25.0, 8.0, 3.0]
NEGATIVES, N = 400.0, 600

# option: (value, Σ grad, Σ grad·W, Σ |grad|) on ``batch()``, float64, W = (arange(60)/60 − 0.4) as (12, 5);
# recorded with the code of commit 495ffa8 (before the defaults lists and the lam renames).
RECORDED = {
    "an": (1.4208591726656223, 0.14315420569112675, -0.012837219534747552, 0.5362985987773893),
    "an_ls": (1.3893754333236294, 0.11981778895468019, -0.010783829322160307, 0.45358003097520483),
    "any_bce": (6.671110581688367, -0.8742461835220571, 0.013591824125890849, 2.8436379949062998),
    "any_focal": (4.777735807046928, -0.7663865512783297, 0.037110650365778056, 2.7675325364106174),
    "apaf": (1.0988666338415174, 0.13879951404462448, -0.014239928233393376, 0.5231055837279333),
    "apr": (1.835657402922579, 0.5875165624018246, 0.04348244435056431, 0.903069416189547),
    "asl": (54.30464104282299, -7.136293749234879, -2.046010252324819, 16.46498089478276),
    "bce": (3.4104639750966657, 0.3434433547357646, -0.03088661778626041, 1.2874943404964703),
    "cb_bce": (5.847097551546353, -0.42737937727774833, 0.07319426282305151, 2.408465554895168),
    "cb_focal": (4.329075689498845, -0.39365915924299777, 0.09361684397954997, 2.401588445658746),
    "cb_per_class": (2.924007527607033, 0.36258263362156073, 0.015096474410146374, 1.2143379943532273),
    "cb_per_instance": (2.4553104167075843, 0.3151320147081421, -0.01888673925059493, 1.0307141588288387),
    "db": (1.1226392311481033, 0.13823176915441393, -0.0169454513347851, 0.44513576053684595),
    "db_focal": (2.0239326090848446, 0.3020608061181592, -0.03860402584957112, 0.9091728399561523),
    "em": (0.5569634059482153, -0.19272379969371217, -0.037789101943753414, 0.21633577403144783),
    "em_apl": (0.5569634059482153, -0.19272379969371217, -0.037789101943753414, 0.21633577403144783),
    "epr": (0.6563940460943097, -0.14571104519250944, -0.03426144128159104, 0.21368883398017283),
    "focal": (2.6877030963896233, 0.36875404167500714, -0.02807122000746035, 1.2965292910099522),
    "gr": (0.9584481119068206, -0.16936173684612837, -0.035563047204738574, 0.2376210444511945),
    "hill": (53.75941580460317, -11.342018883650537, -2.5399685434370616, 15.76753670878954),
    "ldam": (1.4872988109700909, 0.13077801438693018, -0.014531788441660507, 0.5487793586265008),
    "ll_cp": (1.345912004587024, 0.12643473113990192, -0.013702757410941839, 0.5201530566612659),  # added later
    "ll_ct": (1.345912004587024, 0.12643473113990192, -0.013702757410941839, 0.5201530566612659),  # added later
    "ll_r": (1.3457291309023924, 0.1266166052004369, -0.01369366370791509, 0.5199711826007309),  # added later
    "pg": (1.4507926138065481, 0.4462265714504844, -0.005461518425680437, 0.7528235115009683),
    "pr": (1.4385269328524852, 0.332033645534192, 0.016971805059616173, 0.6475864993219144),
    "role": (1.8190426166644798, -0.1534947956143476, -0.03191640755788748, 0.29760136926360786),
    "sigmoid_f1": (0.5416584139119482, -0.005314119996974749, -0.0013492246832421432, 0.020549457795756867),
    "soft_f1": (0.619972002223847, -0.038494717172843466, -0.008405243474426288, 0.09483112813201926),
    "splc": (44.43940127040895, -12.179929808590103, -2.3466567035772252, 15.531076831436959),
    "two_way": (16.024525550950294, -5.551115123125783e-17, -0.19340134568985864, 3.6281821012344393),  # added later
    "wan": (0.8090558121373381, -0.11164059598456674, -0.032989230045962825, 0.28150379710169576),
}


def batch():
    g = torch.Generator().manual_seed(2024)
    z = torch.randn(12, 5, generator=g, dtype=torch.float64) * 2.5
    y = (torch.rand(12, 5, generator=g) < 0.35).to(torch.float64)
    y[0] = 0
    y[1] = 0
    y[1, 3] = 1
    y[2] = 1
    return z, y


def build(option: str, *overrides: str):
    cfg = compose([f"loss={option}", *overrides])
    loss = instantiate(cfg.loss, class_counts=COUNTS, negative_count=NEGATIVES, num_samples=N).double()
    loss.set_epoch(1, 4)
    return loss


def value_and_grad(loss, z, y):
    x = z.clone().requires_grad_(True)
    out = loss(x, y, **({"indices": torch.arange(len(z))} if loss.needs_indices else {}))
    out.backward()
    return out.item(), x.grad


def test_every_option_is_recorded():
    assert sorted(RECORDED) == OPTIONS


@pytest.mark.parametrize("option", OPTIONS)
def test_option_gives_the_values_recorded_before_the_defaults_lists(option):
    z, y = batch()
    value, grad = value_and_grad(build(option), z, y)
    weights = torch.arange(60, dtype=torch.float64).reshape(12, 5) / 60 - 0.4
    got = (value, grad.sum().item(), (grad * weights).sum().item(), grad.abs().sum().item())
    assert got == pytest.approx(RECORDED[option], rel=1e-10, abs=1e-14)


# fields that an option leaves out because they have no effect there (λ without the any-class term, γ on BCE)
NO_EFFECT = {
    "bce": ["lam", "gamma"], "cb_bce": ["lam", "gamma"], "any_bce": ["gamma"],
    "focal": ["lam"], "cb_focal": ["lam"],
    "db": ["gamma", "balance"],
}


@pytest.mark.parametrize("option,field", [(o, f) for o, fields in NO_EFFECT.items() for f in fields])
def test_a_field_without_effect_is_not_in_the_option(option, field):
    assert field not in compose([f"loss={option}"]).loss
    with pytest.raises(ConfigCompositionException) as err:
        compose([f"loss={option}", f"loss.{field}=0.1"])
    assert "not in struct" in str(err.value.__cause__)


def test_lam_on_an_option_without_the_any_class_term_fails_before_hydra():
    assert check_command_line(["loss=bce", "loss.lam=0.1"]) == (
        "error: loss.lam: no such key in the config (check the spelling; +loss.lam=<value> adds a new key)")
    assert check_command_line(["loss=any_bce", "loss.lam=0.1"]) is None


@pytest.mark.parametrize("option,field", [(o, f) for o, fields in NO_EFFECT.items() for f in fields])
def test_the_left_out_fields_really_have_no_effect(option, field):
    """The constructor's default fills the field in; any other value gives the same loss."""
    z, y = batch()
    value, grad = value_and_grad(build(option), z, y)
    other, other_grad = value_and_grad(build(option, f"+loss.{field}=0.37"), z, y)
    assert other == value and torch.equal(other_grad, grad)


@pytest.mark.parametrize("option", OPTIONS)
def test_only_the_any_class_loss_has_lam(option):
    """A λ sweep (``loss.lam=...``) reaches the any-class λ or fails: DB's scale and Hill's λ have their own names."""
    cfg = compose([f"loss={option}"]).loss
    if "lam" in cfg:
        assert cfg._target_ == "mlc.losses.AnyClassPresenceLoss" and cfg.alpha > 0
    else:
        with pytest.raises(ConfigCompositionException):
            compose([f"loss={option}", "loss.lam=0.05"])


def test_renamed_fields():
    assert compose(["loss=db"]).loss.neg_scale == compose(["loss=db_focal"]).loss.neg_scale == 2.0
    assert compose(["loss=hill"]).loss.hill_lambda == 1.5
    assert build("db_focal", "loss.neg_scale=5").neg_scale == 5.0
    assert build("hill", "loss.hill_lambda=1.0").hill_lambda == 1.0
    for option, key in (("db", "neg_scale"), ("hill", "hill_lambda")):
        assert check_command_line([f"loss={option}", f"loss.{key}=-1"]) is None  # the value is checked later
    assert "lam=" not in repr(DistributionBalancedLoss(COUNTS, N)) and "lam=" in repr(AnyClassPresenceLoss(COUNTS, 1))


def test_the_shared_files_are_not_options():
    assert not any(name.startswith("common") for name in OPTIONS)
    error = check_command_line(["loss=hinge"])
    assert error.startswith("error: loss=hinge: no such option in conf/loss/ (available: an, an_ls,")
    assert "common" not in error
