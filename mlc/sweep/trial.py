"""``TrialSpec``: the one message from mlc's sweeper to a trial's training process.

Everything a trial needs from its sweep travels in it, written and read only here: the values Optuna
sampled and the study's grid point (as Hydra overrides, so they are ordinary config), the checkpoint a
continued trial resumes from, the trial's Optuna identity (storage, study, number) and pruner, for
reporting each epoch's value, the sweep's parent MLflow run, and the seeds of the trial. It reaches the
process as one environment variable, set through ``hydra.job.env_set``, so that it arrives whatever the
launcher (in-process, joblib, submitit/SLURM) and whatever the number of ranks (the elastic launcher's
ranks inherit it), and stays out of the task config (the config's fingerprint does not change).

``seeds`` lists the seeds a trial is scored over: with ``hydra.sweeper.seeds_per_trial`` K > 1 one
trial is K runs (one job each, ``seed`` naming the job's own), valued by their mean; otherwise the
config's one seed. The training process refuses to run under a message whose seeds do not include its own.

Nothing in the message chooses code to run: the pruner is rebuilt from Optuna's own pruner classes only
(``mlc.sweep.pruning.build_pruner``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mlc.errors import MlcError

ENV = "MLC_TRIAL"


@dataclass(frozen=True)
class TrialSpec:
    study: str
    number: int
    storage: str | None = None  # Optuna storage URL; None for an in-memory study (nothing to report to)
    params: dict[str, Any] = field(default_factory=dict)  # what the sampler chose, e.g. {"loss.lam": 0.03}
    fixed: dict[str, Any] = field(default_factory=dict)  # the study's grid point, e.g. {"dataset.negative_ratio": 0.8}
    resume: str | None = None  # last.pt of this trial's interrupted or dead earlier attempt
    pruner: dict[str, Any] | None = None  # hydra.sweeper.pruner (``_target_`` + its arguments)
    parent_run_id: str | None = None  # the sweep's parent MLflow run
    seeds: tuple[int, ...] = ()  # the trial's seeds (one run each); () = the config's seed
    seed: int | None = None  # this job's seed, one of ``seeds``, when the trial is several seeded runs

    def overrides(self, fixed_args: list[str] | tuple[str, ...] = ()) -> list[str]:
        """The Hydra overrides of this trial's job: the sweep's fixed arguments, the grid point, the
        sampled values, the checkpoint to resume, and this message itself (for the training process)."""
        from mlc.config import quote_override  # deferred: mlc.config imports torch, the sweeper's plan does not

        job = [*fixed_args, *(f"{k}={v}" for k, v in {**self.fixed, **self.params}.items())]
        if self.resume:
            job.append(f"trainer.resume={quote_override(self.resume)}")
        if self.seed is not None:
            job.append(f"seed={int(self.seed)}")
        return [*job, f"+hydra.job.env_set.{ENV}={quote_override(self.to_json())}"]

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "seeds": list(self.seeds)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrialSpec:
        try:
            raw = json.loads(text)
            if not isinstance(raw, Mapping):
                raise TypeError("not an object")
            return cls(**{**raw, "seeds": tuple(int(s) for s in raw.get("seeds") or ())})
        except (ValueError, TypeError) as err:
            raise MlcError(f"${ENV} is not a trial message of this mlc ({type(err).__name__}: {err}); "
                           f"run trials through mlc's sweeper") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TrialSpec | None:
        """This process's trial, or None when it is not a trial of mlc's sweeper."""
        text = environ.get(ENV)
        return cls.from_json(text) if text else None
