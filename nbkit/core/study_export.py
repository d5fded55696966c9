"""A study's winner, exported: the best trial's configuration as a TrainConfig and as the files
`python -m nbkit train --config` and other tools read.

    cfg = best_config(study)                    # held knobs + the best trial's params; epochs = its best epoch
    write_best_config(study, "best.yaml")       # the YAML `python -m nbkit train --config best.yaml` reads
    best_text(study, "llamafactory")            # what `python -m nbkit export --format llamafactory` writes for it

    python -m nbkit study best --study NAME [--format yaml|llamafactory|trl|training_args] [-o FILE]

"Best" is nbkit.core.study_analysis.best_trial (the usable trial with the lowest validation loss), the
one rule that `study show` and chapter 8 use too. A study without one is refused with a StudyError
that names the study and says why. Nothing here imports torch: the yaml and export texts are plain
text, so the command answers at once.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
import yaml

from nbkit.core.callbacks import best_of
from nbkit.core.config import TrainConfig
from nbkit.core.export import EXPORT_FORMATS, export_text
from nbkit.core.i18n import _
from nbkit.core.runs import load_run
from nbkit.core.study import SPEC_ATTR, StudyError
from nbkit.core.study_analysis import best_trial, run_status, study_spec

BEST_FORMATS = ("yaml",) + EXPORT_FORMATS  # yaml: TrainConfig fields; the others: nbkit.core.export's


def winner(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """best_trial(study), or a StudyError naming the study and why there is none to export."""
    if not study_spec(study):
        raise StudyError(_("study {name!r} was not made by nbkit (it has no {attr!r} user attr), so the configuration "
                           "its trials ran is unknown").format(name=study.study_name, attr=SPEC_ATTR))
    best = best_trial(study)
    if best is None:
        raise StudyError(_("study {name!r} has no usable trial to export ({why}); a usable trial is COMPLETE with a "
                           "finite validation loss").format(name=study.study_name, why=_why_none(study)))
    return best


def _why_none(study: optuna.Study) -> str:
    """"no trial has run yet" or "its 3 trials: 2 pruned, 1 diverged"."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return _("no trial has run yet: python -m nbkit study run FILE.yaml runs them")
    counts = Counter(run_status(t) for t in trials)
    return _("its {n} trials: {counts}").format(
        n=len(trials), counts=", ".join(f"{n} {status}" for status, n in counts.most_common()))


def best_epoch(trial: optuna.trial.FrozenTrial, threshold: float = 0.0) -> int | None:
    """The best epoch of the trial's run: from its run folder (summary.json, the trainer's rule), or,
    where that folder is not on this machine (a PostgreSQL study whose workers ran elsewhere), from the
    curve the trial reported to the study, by the same rule (nbkit.core.callbacks.best_of)."""
    run_dir = trial.user_attrs.get("run_dir")
    if run_dir and (Path(run_dir) / "summary.json").is_file():
        return load_run(run_dir).best_epoch
    found = best_of(sorted(trial.intermediate_values.items()), threshold)
    return int(found[0]) if found else None


def best_config(study: optuna.Study) -> TrainConfig:
    """The best trial's full configuration: the study's held knobs (base, fixed) and the trial's params,
    with the number of epochs set to that run's best epoch (the validation minimum)."""
    best = winner(study)
    spec = study_spec(study)
    cfg = TrainConfig.from_dict({**spec.get("base", {}), **spec.get("fixed", {}), **best.params})
    epoch = best_epoch(best, cfg.early_stopping_threshold)
    # epoch 0 (the base model was best) or unknown: training shorter would not help, keep the study's length
    return cfg.replace(num_train_epochs=int(epoch)) if epoch and epoch >= 1 else cfg


def best_config_yaml(study: optuna.Study) -> str:
    """best_config as YAML of the fields that differ from the defaults, plus model, dataset, seed and
    the searched knobs, said even where they equal the defaults (what `--config` reads)."""
    cfg = best_config(study)
    always = {"model", "dataset", "seed", *winner(study).params}
    defaults = TrainConfig()
    fields = {k: v for k, v in cfg.to_dict().items() if v != getattr(defaults, k) or k in always}
    return yaml.safe_dump(fields, sort_keys=False)


def write_best_config(study: optuna.Study, path) -> Path:
    """The best configuration as a YAML file of TrainConfig fields (what `--config` reads)."""
    path = Path(path)
    path.write_text(best_config_yaml(study))
    return path


def best_text(study: optuna.Study, fmt: str = "yaml", style: str = "json") -> str:
    """The best configuration in format `fmt` (one of BEST_FORMATS): yaml as best_config_yaml, the
    others exactly as `python -m nbkit export --format fmt --style style` writes that config."""
    if fmt == "yaml":
        return best_config_yaml(study)
    return export_text(best_config(study), fmt, style)
