"""One trial: a train() run (or a notebook under papermill) with the trial's params, its curve reported
to Optuna epoch by epoch so a pruner can stop it, and its run recorded on the trial.

    suggest(trial, spec)          the trial's value of every searched knob (Optuna's suggest_* calls)
    train_trial(trial, spec)      the objective of the local and Ray backends
    notebook_trial(trial, spec)   the objective of the papermill backend
    study_from_runs(runs, ...)    a chapter's sweep read as an Optuna study, for the analysis
"""

from __future__ import annotations

import math
import socket
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nbkit.core.callbacks import EPOCH_END, TRAIN_BEGIN, StopRun
from nbkit.core.config import TrainConfig
from nbkit.core.i18n import _
from nbkit.core.runs import Run, as_runs, file_safe_label, format_value, load_run
from nbkit.core.study_spec import (SPEC_ATTR, StudyError, StudySpec, _canonical, _coerced, _field_kind,
                                   normalized_domain, pruner_stops, quiet_create_study)


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict:
    """The trial's value of every searched knob, through Optuna's suggest_* calls."""
    params = {}
    for knob, domain in spec.knobs.items():
        domain = normalized_domain(knob, domain)
        if isinstance(domain, list):
            params[knob] = trial.suggest_categorical(knob, domain)
        elif _field_kind(knob) is int:
            params[knob] = trial.suggest_int(knob, domain["low"], domain["high"], log=domain["log"])
        else:
            params[knob] = trial.suggest_float(knob, domain["low"], domain["high"], log=domain["log"])
    return params


def params_label(params: dict, sep: str = "_") -> str:
    """"learning_rate=0.001_warmup_ratio=0.1", safe in a file name."""
    return file_safe_label(sep.join(f"{k}={format_value(v)}" for k, v in params.items()))


def best_value(run: Run) -> float:
    """The run's lowest validation loss over epochs >= 1 (inf when there is none)."""
    epochs = run.epochs
    if epochs is None or epochs.empty or "eval_loss" not in epochs:
        return math.inf
    losses = epochs.loc[epochs["epoch"] >= 1, "eval_loss"].dropna()
    losses = losses[losses.map(math.isfinite)]
    return float(losses.min()) if len(losses) else math.inf


def trial_value(trial: optuna.Trial, run: Run) -> float:
    """Record the run on the trial; the value to tell (raises TrialPruned for a pruned run)."""
    best = best_value(run)
    trial.set_user_attr("run_dir", str(Path(run.path).resolve()))
    trial.set_user_attr("run_status", run.status)
    trial.set_user_attr("best_eval_loss", best if math.isfinite(best) else None)
    if run.status == "interrupted":  # the stop button: the learner wants the study to stop too
        raise KeyboardInterrupt
    if run.status == "pruned":
        raise optuna.TrialPruned(_("pruned after epoch {epoch}").format(epoch=int(run.epochs["epoch"].max())))
    if run.status == "diverged":  # a run that blew up is no candidate, whatever its earlier epochs said
        return math.inf
    return best


def study_from_runs(runs, scientific, nuisance=(), study_name: str = "sweep", user_attrs: dict | None = None,
                    ) -> optuna.Study:
    """Runs already trained (a chapter's sweep table, Runs or run folders) as an in-memory Optuna
    study, so that a sweep is read as a study is: nbkit.core.study_analysis (edge warnings, isolation,
    importance, "big enough?") and nbkit.views.study_plots take it as they take a stored study.

        df = sweep(cfg, {"learning_rate": [1e-4, 1e-3, 1e-2], "warmup_ratio": [0.0, 0.1]})
        study = study_from_runs(df, scientific="warmup_ratio", nuisance="learning_rate")

    A run becomes a trial with the runs' values of the knobs as params (each knob a list of the
    values the runs took), the value a trained trial would have (best validation loss over epochs
    >= 1; inf for a diverged run), its curve as intermediate values, and run_dir / run_status (and
    `user_attrs`, e.g. the student a class's board names)."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    scientific = [scientific] if isinstance(scientific, str) else list(scientific)
    nuisance = [nuisance] if isinstance(nuisance, str) else list(nuisance)
    runs = as_runs(runs)
    if not runs:
        raise StudyError(_("runs=[]: no run to make a study of; allowed: a sweep table, Runs or run folders"))
    for knob in scientific + nuisance:
        missing = [r.name for r in runs if knob not in r.config]
        if missing:
            raise StudyError(_("knob {knob!r} is not in the config of run(s) {runs}; allowed: {allowed}").format(
                knob=knob, runs=missing[:3], allowed=", ".join(sorted(runs[0].config))))
    values = {k: sorted({r.config[k] for r in runs}, key=_canonical) for k in scientific + nuisance}
    distributions = {k: CategoricalDistribution(v) for k, v in values.items()}
    study = quiet_create_study(study_name=study_name)
    study.set_user_attr(SPEC_ATTR, {"study_name": study_name, "base": {}, "fixed": {}, "sampler": "grid",
                                    "pruner": "none", "n_trials": len(runs),
                                    "scientific": {k: values[k] for k in scientific},
                                    "nuisance": {k: values[k] for k in nuisance}})
    for run in runs:
        epochs = run.epochs.loc[run.epochs["epoch"] >= 1] if run.epochs is not None else None
        curve = {} if epochs is None else {int(e): float(v) for e, v in zip(epochs["epoch"], epochs["eval_loss"])
                                           if math.isfinite(v)}
        pruned = run.status == "pruned"
        value = None if pruned else (math.inf if run.status == "diverged" else best_value(run))
        study.add_trial(create_trial(
            params={k: run.config[k] for k in distributions}, distributions=distributions, value=value,
            intermediate_values=curve, state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
            user_attrs={"run_dir": str(Path(run.path).resolve()), "run_status": run.status, **(user_attrs or {})}))
    return study


def trial_config(number: int, params: dict, spec: StudySpec) -> TrainConfig:
    """The config trial `number` trains with: the spec's held values and the trial's params, its run named
    after them in the study's output folder."""
    return TrainConfig.from_dict({**spec.held(), **params, "output_dir": str(spec.resolved_output_dir()),
                                  "run_name": f"trial-{number:03d}_" + params_label(params, ","),
                                  "disable_tqdm": True})


def train_trial(trial: optuna.Trial, spec: StudySpec, callbacks=(), stop_event=None) -> float:
    """One trial as an in-process train() run, each epoch's eval_loss reported to the pruner. `callbacks`
    and `stop_event` as train() takes them (a classroom panel draws the trial live and can stop it)."""
    from nbkit.core.train import train  # here, not at the top: torch (the CLI's study commands import this module)

    params = suggest(trial, spec)
    cfg = trial_config(trial.number, params, spec)

    def report(event, data):
        if event == TRAIN_BEGIN:  # recorded now, so a killed trial still points at its (incomplete) run
            trial.set_user_attr("run_dir", str(Path(data["path"]).resolve()))
            trial.set_user_attr("host", socket.gethostname())
        elif event == EPOCH_END and data["epoch"] >= 1 and math.isfinite(data["eval_loss"]):
            trial.report(data["eval_loss"], int(data["epoch"]))
            if pruner_stops(trial, data["last_epoch"]):
                raise StopRun("pruned", f"Optuna's pruner stopped it after epoch {data['epoch']}")

    run = train(cfg, callbacks=[report, *callbacks], keep_model=False, stop_event=stop_event)
    return trial_value(trial, run)


def notebook_trial(trial: optuna.Trial, spec: StudySpec) -> float:
    """One trial as a papermill execution of spec.notebook; its run's curve reported afterwards
    (a notebook cannot be stopped from here, so pruning only informs later trials)."""
    import papermill

    params = suggest(trial, spec)
    trial_dir = spec.resolved_output_dir() / f"trial-{trial.number:03d}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    out = trial_dir / f"trial-{trial.number:03d}_{params_label(params)}.ipynb"
    trial.set_user_attr("notebook", str(out))
    trial.set_user_attr("host", socket.gethostname())
    declared = papermill.inspect_notebook(spec.notebook)
    held = {k: v for k, v in _coerced(spec.held()).items() if k in declared}
    papermill.execute_notebook(spec.notebook, str(out), parameters={**held, **params, "output_dir": str(trial_dir)},
                               cwd=str(Path(spec.notebook).resolve().parent),  # where Jupyter would run it
                               progress_bar=False, log_output=False)
    run = _notebook_run(trial_dir, params)
    for row in run.epochs.itertuples():
        if row.epoch >= 1 and math.isfinite(row.eval_loss):
            trial.report(float(row.eval_loss), int(row.epoch))
    return trial_value(trial, run)


def _notebook_run(trial_dir: Path, params: dict) -> Run:
    """The first run the notebook wrote with the trial's params (else its first run)."""
    runs = sorted((load_run(p.parent) for p in trial_dir.rglob("summary.json")),
                  key=lambda r: r.summary.get("started_at", 0))
    if not runs:
        raise RuntimeError(_("the notebook wrote no run under {folder} (does it pass output_dir to "
                             "TrainConfig?)").format(folder=trial_dir))
    matching = [r for r in runs if all(r.config.get(k) == v for k, v in params.items())]
    return (matching or runs)[0]


def check_notebook(spec: StudySpec) -> None:
    """The papermill backend needs a notebook whose parameters cell has every searched knob."""
    import papermill

    if not spec.notebook or not Path(spec.notebook).is_file():
        raise StudyError(_("notebook={notebook!r} is not a file; allowed: the path of an .ipynb whose "
                           "parameters cell lists the searched knobs and output_dir").format(notebook=spec.notebook))
    declared = papermill.inspect_notebook(spec.notebook)
    for knob in list(spec.knobs) + ["output_dir"]:
        if knob not in declared:
            raise StudyError(_("notebook {notebook} has no parameter {knob!r}; its parameters: {parameters}").format(
                notebook=spec.notebook, knob=knob,
                parameters=", ".join(declared) or _("none (tag a cell parameters)")))


def trial_line(trial, error: str | None = None) -> str:
    params = ", ".join(f"{k}={format_value(v)}" for k, v in trial.params.items())
    status = trial.user_attrs.get("run_status", "")
    fields = dict(number=trial.number, state=trial.state.name, params=params, status=status)
    if trial.value is None:
        line = _("trial {number} {state} [{params}] {status}").format(**fields).rstrip()
    else:
        line = _("trial {number} {state} value {value:.4f} [{params}] {status}").format(value=trial.value,
                                                                                      **fields).rstrip()
    return line + (f": {error}" if error else "")
