"""Studies: many fine-tunes that answer one question, run by Optuna and recorded in a database.

    spec = StudySpec.from_yaml("lr_study.yaml")     # or StudySpec.from_dict({...})
    study = run_study(spec, workers=2)              # an optuna.Study; trials are nbkit runs
    study = load_study("sqlite:///runs/studies.db", "lr_study")

    python -m nbkit study run lr_study.yaml --workers 2

    summary(study) / describe(study)                # counts by state and the best trial, as a dict / text
    prepare_study(spec)                             # check, create or resume, queue the trials; run none
    work(spec.to_dict())                            # one worker's loop (what every backend runs)

This module is the front door; each part lives in its own module, in the order they import each other:
    study_spec      the spec, its checks, Optuna's sampler and pruner for it
    study_storage   the database (SQLite or PostgreSQL) and loading a stored study
    study_trials    one trial: suggest, train (or a notebook), report, record
    study_queue     creating or resuming a study, its queue of slots, each slot's params drawn once
    study_workers   the worker loop, the backends (in process, spawned, papermill, Ray), progress, summary
    optuna_private  the few private Optuna calls the worker loop needs, behind one small adapter

A spec, as YAML (numbers such as 1e-4 may be written either way; they are converted per field):

    study_name: warmup_question
    base: {model: tiny, dataset: arithmetic, num_train_epochs: 4}
    scientific: {warmup_ratio: [0.0, 0.1]}
    nuisance: {learning_rate: {low: 1e-4, high: 1e-2, log: true}}
    fixed: {lr_scheduler_type: cosine}
    n_trials: 12
    sampler: tpe
    pruner: asha
    pruner_settings: {reduction_factor: 3}

It uses the words of Google's tuning playbook:
  scientific  the knobs the question is about ("does warmup help?": warmup_ratio);
  nuisance    knobs that must be tuned afresh for each scientific value to compare them fairly
              (the learning rate almost always is one);
  fixed       knobs held at one value for the whole study (merged into `base`, TrainConfig fields).
Values of a scientific or nuisance knob are a list (categorical) or a range {low, high, log}; a
range is whole numbers for an int field of TrainConfig and real numbers otherwise. `seed` may be a
knob: a study can then ask whether a difference is larger than the seed's own noise.

Optuna does the sampling ("grid", "random", "qmc" (scrambled Sobol, the playbook's quasi-random
search; Optuna needs scipy for it), "tpe"), the pruning ("none",
"successive_halving" / "asha" (Optuna's SuccessiveHalvingPruner, which is the asynchronous
variant), "hyperband") and the storage (RDBStorage: a SQLite file by default, PostgreSQL for several
machines). Each trial is one `train()` run in the run store; its value is the run's best validation
loss over epochs >= 1 (epoch 0 is the base model), reported epoch by epoch (trial.intermediate_values
= {epoch: eval_loss}) so a pruner can stop it. A pruned run ends with status "pruned" and keeps its
curves; Optuna sets a PRUNED trial's value itself (the last reported loss). The trial records user
attrs `run_dir`, `run_status` and `best_eval_loss` (and `notebook` under papermill).

How workers agree on "exactly n_trials" -- a queue of slots, made once:
  When the study is created (or resumed), the process that calls run_study tops the queue up with
  WAITING trials: for "grid" one per grid point (with its params), otherwise empty ones (the sampler
  fills in the params when a worker takes one), until COMPLETE + PRUNED + RUNNING + WAITING trials
  number n_trials. Workers only ever take a WAITING trial (Optuna's own atomic WAITING -> RUNNING
  step); they never create one. So two workers cannot run the same trial, and there is no race on
  "is there room for one more?": the count was settled before any worker started. A worker that
  finds the queue empty waits while other trials are RUNNING, because one of them may belong to a
  dead worker: Optuna's heartbeat marks such a trial FAIL after `grace_period` seconds and
  RetryHeartbeatStaleTrialCallback (the current name of RetryFailedTrialCallback) puts a copy with
  the same params back in the queue, up to max_retry times. Re-running a study resumes it: finished
  trials stay, and only missing slots are added (a FAIL trial whose retries are spent, or a trial
  that raised, gets a fresh slot). Two `study run` commands topping up the same study in the same
  instant could both add slots; start more workers with --workers or Ray instead.

On SQLite, several workers need every transaction to be BEGIN IMMEDIATE: see study_storage.

A diverged run is a COMPLETE trial with value inf and run_status "diverged": the sampler learns
that this region is bad, a pandas table keeps it as a row, and it is never retried (only a trial
whose worker vanished is). A trial whose code raises is FAIL with user attr "error".

Backends (run_study's `backend`):
  "inprocess" (or workers=1)  the trials run in this process, one after another (chapters do this);
  "local"      `workers` workers on this machine, each pulling trials from the storage: this process
               and `workers - 1` spawned ones;
  "papermill"  each trial executes `spec.notebook` with the trial's params and output_dir as
               parameters; the output notebook is kept in the trial's folder, named after its
               params; the run the notebook wrote is read back and its curve reported to Optuna
               afterwards, so a pruner cannot stop a notebook trial (it still informs later ones);
  "ray"        `workers` Ray tasks run the same worker loop against the same storage URL.
               SQLite is fine on one machine; across machines use PostgreSQL and a shared
               output_dir (or accept that each node keeps its run folders):
                   ray start --head --port 6379                      # on the first machine
                   ray start --address HEAD_IP:6379                  # on every other machine
                   python -m nbkit study run s.yaml --backend ray --ray-address HEAD_IP:6379 \\
                       --storage postgresql+psycopg2://USER:PASS@DBHOST:5432/studies
               (RAY_ADDRESS works in place of --ray-address; with neither, a local cluster starts.)
"""

from nbkit.core.study_queue import fix_params, prepare_for_workers, prepare_study, top_up, trial_params
from nbkit.core.study_spec import (BACKENDS, DEFAULT_STORAGE, PRUNERS, SAMPLERS, SEARCH_SPACE_ATTR, SPEC_ATTR,
                                   StudyError, StudySpec, as_spec, make_pruner, make_sampler, pruning_note,
                                   quiet_create_study, spec_record, study_seed)
from nbkit.core.study_storage import check_stored, load_study, open_storage
from nbkit.core.study_trials import best_value, params_label, study_from_runs, suggest, trial_value
from nbkit.core.study_workers import StudyProgress, describe, run_study, summary, work

__all__ = ["BACKENDS", "DEFAULT_STORAGE", "PRUNERS", "SAMPLERS", "SEARCH_SPACE_ATTR", "SPEC_ATTR", "StudyError",
           "StudyProgress", "StudySpec", "as_spec", "best_value", "check_stored", "describe", "fix_params",
           "load_study", "make_pruner", "make_sampler", "open_storage", "params_label", "prepare_for_workers",
           "prepare_study", "pruning_note", "quiet_create_study", "run_study", "spec_record", "study_from_runs",
           "study_seed", "suggest", "summary", "top_up", "trial_params", "trial_value", "work"]
