"""Chapter 8's steps: one tuning question asked the way Google's tuning playbook asks it, answered by
Optuna studies of real tiny-model fine-tunes (nbkit.core.study), and read with the playbook's
analyses (nbkit.core.study_analysis).

    specs = question_specs(p, ch.runs_dir, seed)              # {"grid": StudySpec, "asha": StudySpec}
    studies = run_seed_studies(p, ch.runs_dir, ch.seeds, workers=2)   # {seed: {"grid": ..., "asha": ...}}
    slots_table(studies)                                      # the LAB fact: n_trials slots, pruned runs cut
    asha_table(studies)                                       # grid vs ASHA per seed: epochs and best loss
    order_table(studies)                                      # the same pruner over the grid in other arrival orders
    importance_table(studies)                                 # Optuna's importance per seed, and the spreads
    write_best_config(study, path); export_llamafactory(yaml_path, out_path)

Every study of the chapter lives in one SQLite file, `<runs_dir>/studies.db`, named after its seed
("lr_warmup_grid_s42"), so test runs in their own output_dir never meet. All the studies of a seed set
are created first; then `workers` processes (nbkit.core.workers' persistent pool: torch is imported
once per process, not once per study) take the trials of one study after another, the same worker
loop `run_study` and `python -m nbkit study run` use (nbkit.core.study.work).
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from nbkit.core.i18n import N_
from nbkit.core.runs import load_run
from nbkit.core.study import StudySpec, make_pruner, prepare_for_workers, work
from nbkit.core.study_analysis import (best_trial, compute_saved, importance, isolation, orders_summary,
                                      pruning_over_orders, study_spec)
from nbkit.core.study_export import best_config, write_best_config  # noqa: F401 (the chapter's names)

STUDY_NAME = "lr_warmup"
GRACE = 30  # a tiny trial takes seconds; 30 s of silence means its worker died


def storage_url(runs_dir) -> str:
    return f"sqlite:///{(Path(runs_dir) / 'studies.db').resolve()}"


def question_specs(p, runs_dir, seed: int) -> dict[str, StudySpec]:
    """The chapter's question as two studies with the same configurations: the full grid, and the
    same grid with the ASHA pruner (Optuna's asynchronous successive halving). Train seed = `seed`."""
    base = {"model": p.model, "dataset": p.dataset, "max_samples": p.max_samples,
            "num_train_epochs": p.num_train_epochs, "seed": int(seed), "predict_with_generate": False}
    fixed = {"lr_scheduler_type": p.lr_scheduler_type, "per_device_train_batch_size": p.batch_size}
    common = dict(base=base, fixed=fixed, scientific={"warmup_ratio": list(p.warmup_ratios)},
                  nuisance={"learning_rate": list(p.learning_rates)}, sampler="grid",
                  storage=storage_url(runs_dir), grace_period=GRACE)
    specs = {}
    for kind, pruner in (("grid", {}), ("asha", {"pruner": "asha",
                                                  "pruner_settings": {"reduction_factor": p.reduction_factor}})):
        name = f"{STUDY_NAME}_{kind}_s{seed}"
        specs[kind] = StudySpec(study_name=name, output_dir=str((Path(runs_dir) / "studies" / name).resolve()),
                                **common, **pruner)
    return specs


def spec_yaml(spec: StudySpec) -> str:
    """The spec as the YAML file `python -m nbkit study run` reads (storage and folders left out)."""
    d = {k: v for k, v in spec.to_dict().items()
         if k in ("study_name", "base", "scientific", "nuisance", "fixed", "sampler", "pruner", "pruner_settings")}
    return yaml.safe_dump(d, sort_keys=False)


def work_through(spec_dicts: list[dict], worker: int) -> int:
    """One worker process: the trials of each study in turn (nbkit.core.study.work for each)."""
    return sum(work(d, worker=worker, progress=False) for d in spec_dicts)


def run_seed_studies(p, runs_dir, seeds, workers: int = 2) -> dict[int, dict[str, optuna.Study]]:
    """Every study of the chapter: for each seed, the grid and the ASHA study; all created first, then
    run by `workers` processes side by side. Re-running resumes: finished trials are kept."""
    from nbkit.core.workers import run_side_by_side  # the chapters' persistent worker pool (core)

    specs = {s: question_specs(p, runs_dir, s) for s in seeds}
    order = [specs[s][kind] for kind in ("grid", "asha") for s in seeds]  # grids first, then the pruned studies
    dicts = [prepare_for_workers(spec)[1] for spec in order]  # as run_study does, before any worker starts
    run_side_by_side(work_through, [(dicts, i) for i in range(max(1, workers))], workers, name="run_seed_studies",
                     what=N_("study workers"))
    storage = storage_url(runs_dir)
    return {s: {kind: optuna.load_study(study_name=spec.study_name, storage=storage)
                for kind, spec in specs[s].items()} for s in seeds}


# ---------------------------------------------------------------- the numbers the checks read

def slots_table(studies: dict) -> pd.DataFrame:
    """A row per study: n_trials asked, trials COMPLETE / PRUNED / other, run folders present, pruned runs
    marked "pruned" in the store and cut before the last epoch."""
    rows = []
    for seed, pair in studies.items():
        for kind, study in pair.items():
            n = study.user_attrs["nbkit_spec"]["n_trials"]
            epochs = study.user_attrs["nbkit_spec"]["base"]["num_train_epochs"]
            trials = study.get_trials(deepcopy=False)
            done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            pruned = [t for t in trials if t.state == TrialState.PRUNED]
            folders = [t.user_attrs.get("run_dir") for t in done]
            runs = {f: load_run(f) for f in folders if f and Path(f).is_dir()}
            cut = [t for t in pruned if t.user_attrs.get("run_dir") in runs
                   and runs[t.user_attrs["run_dir"]].status == "pruned"
                   and runs[t.user_attrs["run_dir"]].epochs["epoch"].max() < epochs]
            rows.append({"seed": seed, "study": kind, "n_trials": n, "trials": len(trials),
                         "complete": len(done) - len(pruned), "pruned": len(pruned),
                         "other": len(trials) - len(done), "run_folders": len(runs),
                         "pruned_and_cut": len(cut), "epochs": epochs})
    table = pd.DataFrame(rows)
    table["holds"] = ((table["trials"] == table["n_trials"]) & (table["other"] == 0)
                      & (table["run_folders"] == table["n_trials"]) & (table["pruned_and_cut"] == table["pruned"]))
    return table


def cited_runs(studies: dict) -> list[str]:
    """Every finished trial's run folder, for a check to cite."""
    return [t.user_attrs["run_dir"] for pair in studies.values() for study in pair.values()
            for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def asha_table(studies: dict) -> pd.DataFrame:
    """A row per seed: compute_saved(grid, ASHA) (epochs trained by each, their ratio, each best and the
    gap), each study's best configuration, how many trials ASHA pruned and let finish, and for those it
    let finish the largest difference to the grid's loss for the same configuration (replay_max_diff:
    0 when the same fine-tune, same seed, gives the same curve in either study)."""
    rows = []
    for seed, pair in studies.items():
        r = compute_saved(pair["grid"], pair["asha"], labels=("grid", "ASHA"))
        g, a = best_trial(pair["grid"]), best_trial(pair["asha"])
        grid_values = {_label(t.params): t.value for t in pair["grid"].trials if t.state == TrialState.COMPLETE}
        finished = [t for t in pair["asha"].trials if t.state == TrialState.COMPLETE]
        replay = [abs(t.value - grid_values[_label(t.params)]) for t in finished if _label(t.params) in grid_values]
        rows.append({"seed": seed, "grid_epochs": r["grid_compute"], "asha_epochs": r["pruned_compute"],
                     "share": r["compute_ratio"], "grid_best": r["grid_best"], "asha_best": r["pruned_best"],
                     "gap": r["relative_gap"], "grid_best_params": _label(g.params),
                     "asha_best_params": _label(a.params),
                     "pruned": sum(t.state == TrialState.PRUNED for t in pair["asha"].trials),
                     "finished": len(finished), "matched": len(replay),
                     "replay_max_diff": max(replay) if replay else math.nan,
                     "summary": r["summary"]})
    return pd.DataFrame(rows)


def order_table(studies: dict, orders: int = 200, within: float = 0.02, share: float = 0.4) -> pd.DataFrame:
    """A row per seed: the seed's grid replayed through its ASHA study's own pruner in `orders` random
    arrival orders (pruning_over_orders; seeded by the train seed), summed up by orders_summary: the
    shares of the grid's epochs, and how often the replay found the grid's best exactly, came within
    `within` of it, and met the whole target (within `within` at no more than `share` of the epochs)."""
    rows = []
    for seed, pair in studies.items():
        spec = StudySpec.from_dict(study_spec(pair["asha"]))
        table = pruning_over_orders(pair["grid"], lambda: make_pruner(spec), orders, seed=seed)
        rows.append({"seed": seed, "orders": orders, **orders_summary(table, within, share)})
    return pd.DataFrame(rows)


def importance_table(studies: dict) -> pd.DataFrame:
    """A row per seed, on the grid study: Optuna's importance of each knob, the knob it ranks first, and the
    playbook's plain measure beside it: how much the best loss moves across each knob's values when the
    other knob is tuned away (the spread of isolation()'s best_value, max - min)."""
    rows = []
    for seed, pair in studies.items():
        study = pair["grid"]
        scores = importance(study)
        row = {"seed": seed, "first": next(iter(scores)), **{f"importance_{k}": v for k, v in scores.items()}}
        for knob in ("learning_rate", "warmup_ratio"):
            best = isolation(study, scientific=knob)["best_value"]
            row[f"spread_over_{knob}"] = float(best.max() - best.min())
        rows.append(row)
    return pd.DataFrame(rows)


def _label(params: dict) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in params.items())


# ---------------------------------------------------------------- the best configuration, exported
# best_config and write_best_config live in the core (nbkit.core.study_export), where `python -m nbkit study
# best` uses them too; imported above, so `from nbkit.labs.ch08_studies import write_best_config` still works.


def export_command(config_path, out_path) -> list[str]:
    return [sys.executable, "-m", "nbkit", "export", "--format", "llamafactory", "--config", str(config_path),
            "-o", str(out_path)]


def export_llamafactory(config_path, out_path) -> dict:
    """Run the CLI as a learner would in a shell; returns the command line, its exit code and the
    YAML it wrote (loaded back), so the notebook can show both."""
    cmd = export_command(config_path, out_path)
    done = subprocess.run(cmd, capture_output=True, text=True)
    written = yaml.safe_load(Path(out_path).read_text()) if done.returncode == 0 else None
    return {"command": " ".join(["python"] + cmd[1:]), "returncode": done.returncode,
            "stderr": done.stderr.strip(), "yaml": written}


