"""``mlc reproduce NAME [overrides]``: one seed paper's headline comparison, run and written up in one command.

Each preset is an ``experiment=<name>`` config (``conf/experiment/<name>.yaml``) whose ``reproduce`` node names
the claim it tests and how to report it: a grid of runs on mlc's sweeper (phases included: ``mlc sweep
experiment=<name>`` runs the same), one study per grid point with one trial each, so **running the command again
continues where it stopped**. Then ``mlc report`` makes the table over seeds, the paired differences and the
figures from the tracked runs, and ``experiments/<name>/RESULTS.md`` is written around them: the exact command,
machine, date, git commit and wall time, and the report's own files, unedited. Its ``Reading`` section (two or
three sentences on whether the paper's claim held) is written by a person and kept when the file is re-made.

Overrides go to every run (``dataset=coco_modified dataset.root=/data/coco backbone=tresnet_l``); the runs
of one config share one sweep folder, ``<outputs>/reproduce/<name>@<config hash>`` (the studies' name).
``--tiny`` runs the same preset in a tiny form (1 epoch, small data, the first and last values of each grid
list, the node's ``tiny`` overrides): the test suite does, so that presets cannot rot. ``--workers N`` runs
each sweep with N processes on the same studies (``mlc sweep --workers``).

A *search* preset (``reseed``: ``lambda_vs_negative_ratio_study``) searches with Optuna per grid point,
then re-runs each study's best parameters at fresh seeds (in ``<folder>/seeds``), and reports three
ways: ``mlc report`` of the search (``search/``) and of the re-runs (``report/``), and
``python -m mlc.report.lambda_study`` (``study/``: the best λ per ratio with its uncertainty).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mlc.provenance import git_commit, machine
from mlc.stores import journal_file, sqlite_file

REPO = Path(__file__).resolve().parents[2]
READING_START, READING_END = "<!-- reading: written by hand, kept when the file is re-made -->", "<!-- /reading -->"
TINY = ("trainer.max_epochs=1", "dataset.train_size=128", "dataset.val_size=64", "dataset.test_size=64",
        "trainer.batch_size=32", "trainer.tune_thresholds=null")


@dataclass(frozen=True)
class Preset:
    """How ``mlc reproduce`` runs and reports one ``conf/experiment/<name>.yaml``: its ``reproduce`` node."""

    name: str
    claim: str  # the seed paper and the claim the comparison tests
    group_by: str
    metrics: str
    baseline: str | None = None
    tiny: tuple[str, ...] = ()  # extra overrides of the tiny form
    tiny_metrics: str | None = None  # the tiny form's metrics, where its data lacks some (no head classes)
    reseed: tuple[int, ...] = ()  # a search preset: then re-run each study's best parameters at these seeds


def presets() -> dict[str, Preset]:
    """Every experiment config with a ``reproduce`` node, by name (the config is the one definition)."""
    import yaml

    nodes = {p.stem: (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("reproduce")
             for p in sorted((REPO / "conf" / "experiment").glob("*.yaml"))}
    return {name: Preset(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in node.items()})
            for name, node in nodes.items() if node}


class ReproduceError(Exception):
    """An input mistake: one line, exit 2."""


@dataclass(frozen=True)
class Plan:
    """What the first sweep of a preset will make: its folder and the keys its studies vary and search."""

    folder: Path
    grid_keys: frozenset[str]  # e.g. dataset.negative_ratio, loss, seed
    searched: frozenset[str]  # e.g. loss.lam


def plan(outputs: Path, name: str, arguments: list[str]) -> Plan:
    """The preset's sweep planned as the sweep will plan it (``mlc.sweep.plan``); its folder is ``sweep_folder``'s."""
    from mlc.config import compose_config  # deferred: mlc.config loads torch and Hydra; `mlc reproduce --help` does not
    from mlc.sweep.plan import plan_sweep, storage_url  # deferred: loads Hydra's override parser; `--help` does not

    with _outputs_env(outputs):  # the storage the runs will use
        cfg = compose_config([f"experiment={name}", *arguments], hydra=True)
        planned = plan_sweep(cfg)
        ran_in = _folder_of_trials([s.name for s in planned.studies], storage_url(cfg.hydra.sweeper.storage))
    folder = ran_in or outputs / "reproduce" / planned.studies[0].name.split("[", 1)[0]
    return Plan(folder, frozenset(k for s in planned.studies for k in s.fixed), frozenset(planned.distributions))


def sweep_folder(outputs: Path, name: str, arguments: list[str]) -> Path:
    """Where this config's runs go and the report finds them: the folder its studies' trials already ran in
    (a re-run, or an earlier ``mlc sweep experiment=<name>``: continuing them elsewhere would split their
    runs), else ``<outputs>/reproduce/<study base name>``, the name mlc's sweeper gives the studies
    (``<preset>@<config hash>``). So the folder changes exactly when the studies do: a changed preset,
    override or default config gets new studies and a new folder, which the report then sees alone."""
    return plan(outputs, name, arguments).folder


def _folder_of_trials(study_names: list[str], url: str | None) -> Path | None:
    """The sweep folder the first recorded trial of these studies ran in (None: no such trial yet)."""
    import optuna

    from mlc.sweep.study import open_storage  # deferred: loads Optuna; `mlc reproduce --help` does not

    path = (sqlite_file(url) or journal_file(url)) if url else None
    if url is None or (path is not None and not path.is_file()):
        return None
    storage = open_storage(url, heartbeat_interval=None, grace_period=None)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    for study_name in (n for n in study_names if n in existing):
        for trial in optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False):
            if trial.user_attrs.get("mlc.sweep_dir"):
                return Path(trial.user_attrs["mlc.sweep_dir"])
    return None


@contextlib.contextmanager
def _outputs_env(outputs: Path):
    before = os.environ.get("MLC_OUTPUTS")
    os.environ["MLC_OUTPUTS"] = str(outputs)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLC_OUTPUTS", None)
        else:
            os.environ["MLC_OUTPUTS"] = before


def tiny_overrides(preset: Preset, overrides: list[str]) -> list[str]:
    """The tiny form: 1 epoch of small data and the first and last values of each grid list (a phase's too)."""
    from mlc.config import compose_config  # deferred: mlc.config loads torch and Hydra; `mlc reproduce --help` does not
    from mlc.flat import flatten as flat  # deferred: loads OmegaConf; `mlc reproduce --help` does not

    sweeper = compose_config([f"experiment={preset.name}", *overrides], hydra=True).hydra.sweeper
    grids = [("study_grid", flat(sweeper.study_grid)), *((f"phases.{i}.study_grid", flat(phase.get("study_grid")))
                                                        for i, phase in enumerate(sweeper.get("phases") or []))]
    own = {o.partition("=")[0] for o in preset.tiny}  # a preset's own tiny grid is not trimmed again
    trimmed = [f"hydra.sweeper.{where}.{key}=[{','.join(map(str, _ends(values)))}]" for where, grid in grids
               for key, values in grid.items() if len(values) > 2 and f"hydra.sweeper.{where}.{key}" not in own]
    return [*TINY, *preset.tiny, *trimmed]


DEFAULT_MAX_SEEDS = 10


@dataclass(frozen=True)
class Adaptive:
    """``--until-decided``: seeds added in planned rounds until every comparison is decided
    (``mlc.report.sequential``)."""

    max_seeds: int
    per_round: int | None = None  # seeds added at each look (default: as many as the preset's first look has)
    alpha: float = 0.05  # the error rate over all looks


def run(name: str, overrides: list[str], tiny: bool = False, output: Path | None = None,
        outputs: Path | None = None, workers: int = 1, say=print, adaptive: Adaptive | None = None) -> Path:
    """Run preset ``name`` (continuing an earlier run of the same command), report it, write RESULTS.md."""
    preset = presets().get(name)
    if preset is None:
        raise ReproduceError(f"no preset {name!r}; choose from {', '.join(presets())}")
    if workers < 1:
        raise ReproduceError(f"--workers={workers}: must be at least 1")
    outputs = Path(outputs or os.environ.get("MLC_OUTPUTS") or REPO / "outputs").resolve()
    output = Path(output) if output is not None else REPO / "experiments" / name
    arguments = [*(tiny_overrides(preset, overrides) if tiny else []), *overrides]
    looks = _plan_looks(preset, arguments, adaptive) if adaptive else None  # before anything runs
    planned = plan(outputs, name, arguments)
    folder = planned.folder
    env = {**os.environ, "MLC_OUTPUTS": str(outputs)}
    commit, started = _git_commit(), time.perf_counter()  # the code the runs start from

    def sweep(directory: Path, arguments: list[str]) -> None:
        command = [*(("mlc.cli", "sweep", f"--workers={workers}") if workers > 1 else ("mlc.cli.train", "-m")),
                   f"experiment={name}", f"hydra.sweep.dir={_path_value(directory)}", *_last_wins(arguments)]
        say(f"reproduce {name}: {shlex.join(['-m', *command])}", flush=True)
        code = run_python(command, env)
        if code != 0:
            raise SystemExit(code)  # the sweep printed its own error; the same command continues it

    report_dir, study_dir, design, search_seeds = output / "report", None, None, "0"
    if looks is None:
        sweep(folder, arguments)  # every phase of the preset (hydra.sweeper.phases), as `mlc sweep` runs it
    else:  # the same sweep, one planned look of seeds at a time, until every comparison is decided
        design = _until_decided(preset, looks, adaptive, tiny, outputs, folder,
                                lambda seeds: sweep(folder, [*arguments, _seed_grid(seeds)]), say)
    if preset.reseed:  # the search is done: its best parameters over fresh seeds, in <folder>/seeds
        seeds = _ends(list(preset.reseed)) if tiny else list(preset.reseed)
        for fixed, best in best_points(folder, planned):
            sweep(folder / "seeds", [*arguments, *reseed_overrides(fixed, best, seeds)])
        monitor, search_seeds = _search_monitor(folder)
        _report(name, outputs, folder, "lam,negative_ratio", f"best/{monitor}", output / "search", None, say)
        study_dir = output / "study"
        _call(["mlc.report.lambda_study", "--search", str(folder), "--seeds", str(folder / "seeds"), "--outputs",
               str(outputs), "--experiment", name, "--metrics", (tiny and preset.tiny_metrics) or preset.metrics,
               "--output", str(study_dir)], name, say)
    _report(name, outputs, folder / "seeds" if preset.reseed else folder, preset.group_by,
            (tiny and preset.tiny_metrics) or preset.metrics, report_dir, preset.baseline, say,
            design.report_options if design else ())
    seconds = time.perf_counter() - started
    results = output / "RESULTS.md"
    results.write_text(results_text(preset, overrides, tiny, report_dir, seconds, _reading(results), commit,
                                    study_dir, workers, design, search_seeds))
    say(f"reproduce {name}: wrote {results} ({seconds / 60:.1f} min)")
    return results


def best_points(folder: Path, planned: Plan) -> list[tuple[dict, dict]]:
    """(grid values, best parameters) of every study of the search in ``folder`` (its sweep summary).

    They become command-line overrides of the re-runs, so the file may only name the keys the preset's
    config grids and searches, with plain values: a summary that says ``loss._target_=...`` or holds an
    interpolation is refused instead of choosing what runs."""
    import json

    path = folder / "sweep_summary.json"
    try:
        studies = json.loads(path.read_text())["studies"]
        points = [(dict(s["fixed"]), dict(s["best_params"])) for s in studies if s.get("best_params")]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ReproduceError(f"{path}: no sweep summary of the search to re-run ({type(err).__name__})") from None
    if len(points) != len(studies):
        raise ReproduceError(f"{path}: {len(studies) - len(points)} of {len(studies)} studies have no best trial; "
                             "run the same command again to finish them")
    for fixed, best in points:
        for values, allowed, what in ((fixed, planned.grid_keys, "grid"), (best, planned.searched, "search")):
            for key, value in values.items():
                if key not in allowed:
                    raise ReproduceError(f"{path}: {key!r} is not a key of this preset's {what} "
                                         f"({', '.join(sorted(allowed)) or 'none'}); refusing to re-run it")
                if not _plain(value):
                    raise ReproduceError(f"{path}: {key}={value!r} is not a plain number or name; refusing to "
                                         "re-run it")
    return points


def _plain(value) -> bool:
    import re

    if isinstance(value, bool | int | float):
        return isinstance(value, bool) or math.isfinite(value)
    return isinstance(value, str) and re.fullmatch(r"[\w.\-]+", value) is not None


def reseed_overrides(fixed: dict, best: dict, seeds: list[int]) -> list[str]:
    """One sweep re-running a study's best parameters: its grid point alone, × ``seeds``, no search (one run
    per seed: a search scored over K seeds per trial does not make each re-run K runs)."""
    return ["hydra.sweeper.params=null", "hydra.sweeper.n_trials=1", "hydra.sweeper.seeds_per_trial=1",
            *(f"hydra.sweeper.study_grid.{key}=[{_value(v)}]" for key, v in fixed.items()),
            f"++hydra.sweeper.study_grid.seed=[{','.join(map(str, seeds))}]",
            *(f"{key}={_value(v)}" for key, v in best.items())]


def _report(name: str, outputs: Path, sweep_dir: Path, group_by: str, metrics: str, out: Path, baseline: str | None,
            say, options: tuple[str, ...] = ()) -> None:
    _call(["mlc.report", "--outputs", str(outputs), "--experiment", name, "--sweep", str(sweep_dir), "--group-by",
           group_by, "--metrics", metrics, "--output", str(out), *(["--baseline", baseline] if baseline else []),
           *options], name, say)


@dataclass(frozen=True)
class Design:
    """What ``--until-decided`` did: the write-up's section, and the final report's level and seeds."""

    text: str  # mlc.report.sequential.markdown
    report_options: tuple[str, ...]  # --alpha (the per-look level) and --seeds (those of the last look run)
    command: tuple[str, ...]  # its options as the RESULTS.md command line shows them


def _plan_looks(preset: Preset, arguments: list[str], adaptive: Adaptive) -> list[tuple[int, ...]]:
    """The looks of ``--until-decided``, planned from the preset's seed grid before any run (one line if it cannot)."""
    from mlc.config import compose_config  # deferred: mlc.config loads torch and Hydra; `mlc reproduce --help` does not
    from mlc.report import sequential  # deferred: loads SciPy; `mlc reproduce --help` does not

    if preset.reseed or not preset.baseline:
        paired = [p.name for p in presets().values() if p.baseline and not p.reseed]
        raise ReproduceError(f"--until-decided: preset {preset.name!r} has no paired comparisons to decide "
                             f"(presets with a baseline: {', '.join(paired)})")
    if not 0 < adaptive.alpha < 0.5:
        raise ReproduceError(f"--alpha={adaptive.alpha!r}: must lie in (0, 0.5)")
    grid = compose_config([f"experiment={preset.name}", *arguments], hydra=True).hydra.sweeper.study_grid
    first = list(grid.get("seed") or [])
    if not first:
        raise ReproduceError(f"--until-decided: preset {preset.name!r} has no seed list in its study_grid to extend")
    try:
        return sequential.plan_looks(first, adaptive.max_seeds,
                                     len(first) if adaptive.per_round is None else adaptive.per_round)
    except sequential.DesignError as err:
        raise ReproduceError(f"--until-decided: {err}") from None


def _seed_grid(seeds: tuple[int, ...]) -> str:
    return f"hydra.sweeper.study_grid.seed=[{','.join(map(str, seeds))}]"


def _until_decided(preset: Preset, looks: list[tuple[int, ...]], adaptive: Adaptive, tiny: bool, outputs: Path,
                   folder: Path, sweep, say) -> Design:
    """Run the looks in order until every comparison of the preset's table is decided (``mlc.report.sequential``).

    A look runs the sweep with its seeds (the runs of earlier looks are already there: the sweep continues them),
    then computes the paired differences over exactly those seeds at the per-look level. Running the command again
    replays the looks over the stored runs and reaches the same decisions."""
    from mlc.report import build, sequential, stats  # deferred: loads numpy, SciPy, MLflow; `--help` does not
    from mlc.report.cli import comma_list  # deferred: with the rest of mlc.report
    from mlc.report.runs import ReportError, store_uri  # deferred: loads MLflow; `mlc reproduce --help` does not

    per_look = sequential.look_alpha(adaptive.alpha, len(looks))
    metrics = comma_list((tiny and preset.tiny_metrics) or preset.metrics, "metrics")
    decisions: dict = {}
    done: list[sequential.Look] = []
    rows: list = []
    groups = 0
    for number, seeds in enumerate(looks, start=1):
        say(f"reproduce {preset.name}: look {number}/{len(looks)}: {len(seeds)} seeds, each comparison at "
            f"α = {per_look:.4g}", flush=True)
        sweep(seeds)
        opts = build.Options(store=store_uri(None, str(outputs)), store_option="--outputs", experiment=preset.name,
                             output=outputs / "reproduce" / ".look", group_by=comma_list(preset.group_by, "group_by"),
                             metrics=metrics, sweep=str(folder), baseline=preset.baseline, alpha=per_look,
                             seeds=[str(s) for s in seeds])
        try:
            selection = build.select(opts)
        except ReportError as err:
            raise ReproduceError(f"--until-decided, look {number}: {err}") from None
        rows = stats.differences(selection.summaries, selection.pairs, metrics, alpha=per_look)
        undecided = sequential.record(decisions, rows, number, len(seeds))
        groups = len(selection.summaries)
        done.append(sequential.Look(number, seeds, len(selection.records), len(decisions),
                                    len(decisions) + len(undecided)))
        named = "; ".join(f"{'/'.join(values)} {metric}" for values, metric in undecided[:6])
        say(f"reproduce {preset.name}: look {number}: {len(decisions)} of {len(decisions) + len(undecided)} "
            f"comparisons decided" + (f"; undecided: {named}{' …' if len(undecided) > 6 else ''}" if undecided
                                      else ""), flush=True)
        if not undecided:
            break
    text = sequential.markdown(done, looks, decisions, rows, adaptive.alpha, fixed_runs=groups * len(looks[-1]))
    last = done[-1].seeds
    options = ("--alpha", repr(per_look), "--seeds", ",".join(map(str, last)))
    command = ("--until-decided", f"--max-seeds={adaptive.max_seeds}",
               *([f"--seeds-per-round={adaptive.per_round}"] if adaptive.per_round else []),
               *([f"--alpha={adaptive.alpha:g}"] if adaptive.alpha != 0.05 else []))
    return Design(text, options, command)


def run_python(module_and_args: list[str], env: dict) -> int:
    """``python -m <module> <args>`` in the repository with ``env``: a sweep, in a process of its own (Hydra's
    state, logging and exit code are a whole process's); its exit code. (The tests start it from a warm
    interpreter: tests/conftest.py.)"""
    return subprocess.run([sys.executable, "-m", *module_and_args], cwd=REPO, env=env).returncode


def _call(module_and_args: list[str], name: str, say) -> None:
    """A report step, run in this process: the same ``main`` that ``python -m <module> <args>`` runs, without
    loading numpy, SciPy, MLflow and matplotlib again (~5 s of CPU per report)."""
    from mlc.report import cli as report_cli  # deferred: loads numpy and MLflow; `mlc reproduce --help` does not
    from mlc.report import lambda_study  # deferred: with the rest of mlc.report

    module, *args = module_and_args
    main = {"mlc.report": report_cli.main, "mlc.report.lambda_study": lambda_study.main}[module]
    say(f"reproduce {name}: {shlex.join(['-m', *module_and_args])}", flush=True)
    if main(args) != 0:
        raise SystemExit(1)


def _search_monitor(folder: Path) -> tuple[str, str]:
    """The search's objective, and the seeds its trials were scored over ("0" for one seed per trial)."""
    from mlc.report.lambda_study import read_search  # deferred: loads numpy; `mlc reproduce --help` does not

    monitor, _, searches, _, _ = read_search(folder)
    seeds = {seed for s in searches for trial in s.seeds for seed in trial}
    return monitor, ", ".join(sorted(seeds, key=int)) if seeds else "0"


def _path_value(path: Path) -> str:
    """A folder as a Hydra override value: quoted only where it holds characters Hydra would read."""
    import re

    from mlc.config import quote_override  # deferred: mlc.config loads torch and Hydra; `mlc reproduce --help` does not

    return str(path) if re.fullmatch(r"[\w/.@-]+", str(path)) else quote_override(str(path))


def _value(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def _last_wins(arguments: list[str]) -> list[str]:
    """The overrides with each key set once, at its last position (a re-run's grid replaces the preset's)."""
    def key(a: str) -> str:
        return a.partition("=")[0].lstrip("+~")

    keys = [key(a) for a in arguments]
    return [a for i, a in enumerate(arguments) if key(a) not in keys[i + 1:]]


def results_text(preset: Preset, overrides: list[str], tiny: bool, report_dir: Path, seconds: float,
                 reading: str, commit: str, study_dir: Path | None = None, workers: int = 1,
                 design: Design | None = None, search_seeds: str = "0") -> str:
    command = shlex.join(["mlc", "reproduce", preset.name, *(["--tiny"] if tiny else []),
                          *([f"--workers={workers}"] if workers > 1 else []), *(design.command if design else ()),
                          *overrides])
    files = {p.name for p in report_dir.iterdir()}
    lines = [f"# `{preset.name}`", "", f"**Claim tested**: {preset.claim}.", "",
             "## How it was made", "", "```", command, "```", "",
             f"- machine: {machine()}", f"- date: {datetime.now().strftime('%Y-%m-%d %H:%M')}; git commit "
             f"{commit}; wall time {seconds / 60:.1f} min (runs continued from an earlier invocation "
             "are not counted again)"]
    if study_dir is None:
        lines += [f"- runs: `experiment={preset.name}` (`conf/experiment/{preset.name}.yaml`), then `mlc report "
                  f"--group-by {preset.group_by}{f' --baseline {preset.baseline}' if preset.baseline else ''}` "
                  f"(its full output: [report/report.md](report/report.md))", ""]
    else:
        seeds = ", ".join(map(str, _ends(list(preset.reseed)) if tiny else preset.reseed))
        lines += [f"- runs: `experiment={preset.name}` (`conf/experiment/{preset.name}.yaml`): one Optuna study "
                  f"per grid point (each trial scored over seed{'s' * (',' in search_seeds)} {search_seeds}), "
                  f"then each study's best parameters re-run at seeds {seeds}; "
                  "`python -m mlc.report.lambda_study` ([study/lambda_study.md](study/lambda_study.md)) and "
                  f"`mlc report` of the search ([search/report.md](search/report.md)) and of the re-runs "
                  f"(`--group-by {preset.group_by}`, [report/report.md](report/report.md))", "",
                  "## Best λ against the negative ratio (made by `mlc.report.lambda_study`, not edited)", "",
                  _read(study_dir / "lambda_study.md"), "",
                  "![best lambda vs ratio](study/best_lambda_vs_ratio.png)", "",
                  "The search, every trial (`mlc report` of the search):", "",
                  "![search](search/lambda_vs_ratio.png)", ""]
    if design is not None:
        lines += ["## Adaptive seeds (`--until-decided`, made by `mlc reproduce`, not edited)", "", design.text, ""]
    lines += [f"## {'Re-runs over seeds' if study_dir else 'Results'} (made by `mlc report`, not edited)", "",
              "Mean ± sample std over seeds; best mean per column in bold.", "", _read(report_dir / "table.md")]
    if "differences.md" in files:
        key = preset.group_by.split(",")[0]
        to = (f"`{key}={preset.baseline}`" if ":" not in preset.baseline else "each " + key + "'s own baseline ("
              + ", ".join(f"`{a}` → `{b}`" for a, b in (p.split(":") for p in preset.baseline.split(","))) + ")")
        at = design.report_options[1] if design else "0.05"
        lines += ["", f"Paired per-seed differences to {to} over every seed run "
                  f"({100 * (1 - float(at)):.3g}% t interval; *better*/*worse*: it excludes 0 and survives Holm's "
                  "correction; *equivalent*: "
                  "inside ±δ; else *inconclusive*, with what the seeds could have detected):", "",
                  _read(report_dir / "differences.md")]
    if "best_lambda.md" in files:
        lines += ["", "Best λ per negative ratio:", "", _read(report_dir / "best_lambda.md")]
    figures = [f for f in ("lambda_vs_ratio.png", "learning_curves.png", "probabilities.png", "per_class_ap.png")
               if f in files]
    lines += [""] + [f"![{f[:-4].replace('_', ' ')}](report/{f})" for f in figures]
    lines += ["", "## Reading", "", READING_START, reading.strip() or "_Not written yet._", READING_END, ""]
    return "\n".join(lines)


def _reading(results: Path) -> str:
    if not results.is_file():
        return ""
    text = results.read_text()
    if READING_START in text and READING_END in text:
        return text.split(READING_START, 1)[1].split(READING_END, 1)[0]
    return ""


def _read(path: Path) -> str:
    return path.read_text().strip() if path.is_file() else "_(not made)_"


def _ends(values: list) -> list:
    return [values[0], values[-1]] if len(values) > 2 else list(values)


def _git_commit() -> str:
    commit = git_commit(REPO)
    if commit is None:
        return "unknown (not a git checkout)"
    return f"{commit[0][:7]}{' (with uncommitted changes)' if commit[1] else ''}"


def main(argv: list[str] | None = None) -> int:
    names = ", ".join(presets())
    parser = argparse.ArgumentParser(prog="mlc reproduce", description=__doc__.split("\n\n")[0],
                                     epilog="presets: " + names)
    parser.add_argument("name", help="the preset: " + names)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (dataset=..., backbone=...)")
    parser.add_argument("--tiny", action="store_true",
                        help="1 epoch, small data, the first and last value of each grid list")
    parser.add_argument("--output", type=Path, default=None, help="where RESULTS.md and report/ go "
                        "(default: experiments/<name>/)")
    parser.add_argument("--outputs", type=Path, default=None, help="mlc's outputs folder (default: $MLC_OUTPUTS or "
                        "outputs/)")
    parser.add_argument("--workers", type=int, default=1, help="processes of each sweep (mlc sweep --workers; "
                        "one per GPU on a GPU machine; default: %(default)s)")
    parser.add_argument("--until-decided", action="store_true", help="add seeds in planned rounds until every "
                        "paired comparison is better, worse or equivalent, or --max-seeds is reached; α is split "
                        "over the planned looks (mlc.report.sequential)")
    parser.add_argument("--max-seeds", type=int, default=None, help="with --until-decided: the most seeds per "
                        f"group (default: {DEFAULT_MAX_SEEDS})")
    parser.add_argument("--seeds-per-round", type=int, default=None, help="with --until-decided: seeds added at "
                        "each look (default: as many as the preset's own)")
    parser.add_argument("--alpha", type=float, default=None, help="with --until-decided: the error rate over all "
                        "looks (default: 0.05)")
    args = parser.parse_intermixed_args(argv)  # overrides may come after the options too
    adaptive = Adaptive(DEFAULT_MAX_SEEDS if args.max_seeds is None else args.max_seeds, args.seeds_per_round,
                        0.05 if args.alpha is None else args.alpha) if args.until_decided else None
    try:
        if adaptive is None and any(v is not None for v in (args.max_seeds, args.seeds_per_round, args.alpha)):
            raise ReproduceError("--max-seeds, --seeds-per-round and --alpha go with --until-decided")
        run(args.name, args.overrides, args.tiny, args.output, args.outputs, args.workers, adaptive=adaptive)
    except ReproduceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
