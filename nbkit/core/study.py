"""Studies: many fine-tunes that answer one question, run by Optuna and recorded in a database.

    spec = StudySpec.from_yaml("lr_study.yaml")     # or StudySpec.from_dict({...})
    study = run_study(spec, workers=2)              # an optuna.Study; trials are nbkit runs
    study = load_study("sqlite:///runs/studies.db", "lr_study")

    python -m nbkit study run lr_study.yaml --workers 2

    summary(study) / describe(study)                # counts by state and the best trial, as a dict / text
    prepare_study(spec)                             # check, create or resume, queue the trials; run none
    work(spec.to_dict())                            # one worker's loop (what every backend runs)

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

On SQLite, Optuna's "read WAITING, then write RUNNING" is only atomic if the read and the write
are in one transaction, which Python's sqlite3 driver does not do on its own (measured: three
processes emptying a queue of 300 trials took 15 of them twice): open_storage makes every
transaction BEGIN IMMEDIATE (SQLAlchemy's documented recipe), and then none is taken twice.
PostgreSQL locks the row (SELECT ... FOR UPDATE) by itself.

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
from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import itertools
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import typing
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nbkit.core.callbacks import EPOCH_END, TRAIN_BEGIN, StopRun
from nbkit.core.config import ConfigError, TrainConfig, coerce_value, read_yaml_mapping
from nbkit.core.runs import NOT_KNOBS, Run, as_runs, format_value, load_run

SAMPLERS = ("grid", "random", "qmc", "tpe")
PRUNERS = ("none", "successive_halving", "asha", "hyperband")
BACKENDS = ("local", "inprocess", "papermill", "ray")
STORAGE_SCHEMES = ("sqlite", "postgresql")
DEFAULT_STORAGE = "sqlite:///runs/studies.db"  # a file beside the run store: nothing to install or start
SEARCH_SPACE_ATTR = "nbkit_search_space"  # the study user attr a resumed study is compared against
SPEC_ATTR = "nbkit_spec"  # the whole spec, JSON: what analysis and plots read back
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)  # fill a slot
NEVER_FOLDED = r"\btrial \d+[ :]|^waiting for trial|^progress:"  # worker lines Ray must not de-duplicate


class StudyError(ConfigError):
    """A study that cannot run as asked: the message names the field or URL and what is allowed."""


# ---------------------------------------------------------------- the spec

@dataclass
class StudySpec:
    """One study: what is varied (scientific, nuisance), what is held (base + fixed), how many
    trials, and how Optuna samples, prunes and stores them. Checked by `check()` before anything
    runs or the storage is touched."""
    study_name: str
    base: dict = field(default_factory=dict)  # TrainConfig fields shared by every trial
    scientific: dict = field(default_factory=dict)  # {knob: [values] or {low, high, log}}: the question
    nuisance: dict = field(default_factory=dict)  # tuned for every scientific value, so comparisons are fair
    fixed: dict = field(default_factory=dict)  # held for the whole study; merged into base
    n_trials: int | None = None  # required except for "grid", where it is the number of grid points
    sampler: str = "qmc"  # the playbook's quasi-random search: covers the space evenly, no trial waits on another
    sampler_seed: int | None = None  # None: a fresh seed per worker (random, tpe), one per study (qmc)
    pruner: str = "none"  # no trial is stopped early unless asked: pruning trades certainty for compute
    pruner_settings: dict = field(default_factory=dict)  # e.g. {"min_resource": 1, "reduction_factor": 3}
    storage: str = DEFAULT_STORAGE  # SQLite for one machine; postgresql+psycopg2://... for several
    output_dir: str | None = None  # None: runs/studies/<study_name>, the study's runs kept together
    notebook: str | None = None  # the notebook the papermill backend executes per trial
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats: a few cheap writes a minute
    grace_period: int = 60  # silence after which a trial's worker counts as dead: a slow load is not a death
    max_retry: int = 3  # a trial that kills its worker 3 times (e.g. out of memory) is at fault, not unlucky

    # ------------------------------------------------------------ building

    @classmethod
    def from_dict(cls, d: dict) -> "StudySpec":
        """A spec from a plain dict (YAML, JSON). `pruner` may also be {"name": ..., settings...}."""
        if not isinstance(d, dict):
            raise StudyError(f"a study spec is a mapping of field: value, got {type(d).__name__}")
        d = dict(d)
        if isinstance(d.get("pruner"), dict):
            settings = dict(d["pruner"])
            d["pruner"] = settings.pop("name", "none")
            d["pruner_settings"] = {**settings, **(d.get("pruner_settings") or {})}
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            raise StudyError(f"study spec field {unknown[0]!r} is unknown; allowed: {', '.join(names)}")
        if "study_name" not in d:
            raise StudyError("study spec: study_name is missing; allowed: a name such as 'lr_vs_warmup'")
        for key in ("base", "scientific", "nuisance", "fixed", "pruner_settings"):
            if d.get(key) is None:
                d.pop(key, None)
            elif not isinstance(d[key], dict):
                raise StudyError(f"study spec field {key}={d[key]!r} is invalid; allowed: a mapping")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path) -> "StudySpec":
        try:
            return cls.from_dict(read_yaml_mapping(path, "study spec"))
        except StudyError:
            raise
        except ConfigError as err:  # the file itself: unreadable, not YAML, not a mapping
            raise StudyError(str(err)) from None

    def to_dict(self) -> dict:
        """The spec as JSON-able values, knob values converted to their fields' types."""
        d = dataclasses.asdict(self)
        d["base"], d["fixed"] = _coerced(self.base), _coerced(self.fixed)
        d["scientific"] = {k: normalized_domain(k, v) for k, v in self.scientific.items()}
        d["nuisance"] = {k: normalized_domain(k, v) for k, v in self.nuisance.items()}
        return d

    # ------------------------------------------------------------ derived values

    @property
    def knobs(self) -> dict:
        """{knob: domain} of the searched knobs, scientific first."""
        return {**self.scientific, **self.nuisance}

    def held(self) -> dict:
        """base with fixed merged over it: the values every trial shares."""
        return {**self.base, **self.fixed}

    def search_space(self) -> dict:
        """What a resumed study must match: the searched knobs and the values held."""
        d = self.to_dict()
        # where runs go and how they are named are not part of the question
        held = {k: v for k, v in {**d["base"], **d["fixed"]}.items() if k not in NOT_KNOBS}
        return {"scientific": d["scientific"], "nuisance": d["nuisance"], "held": held}

    def grid_points(self) -> list[dict]:
        """Every combination of the knobs' lists, in order (grid sampler only)."""
        domains = {k: normalized_domain(k, v) for k, v in self.knobs.items()}
        return [dict(zip(domains, combo)) for combo in itertools.product(*domains.values())]

    def trial_count(self) -> int:
        return len(self.grid_points()) if self.sampler == "grid" else self.n_trials

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or Path("runs") / "studies" / self.study_name).resolve()

    # ------------------------------------------------------------ validation

    def check(self) -> None:
        """Raise StudyError for anything that would fail later, before a trial runs."""
        if not isinstance(self.study_name, str) or not self.study_name.strip():
            raise StudyError(f"study_name={self.study_name!r} is invalid; allowed: a non-empty name")
        _require_choice("sampler", self.sampler, SAMPLERS)
        if self.sampler == "qmc" and importlib.util.find_spec("scipy") is None:
            raise StudyError("sampler='qmc' needs scipy (Optuna's QMCSampler draws from scipy.stats.qmc): "
                             "pip install scipy; allowed without it: 'grid', 'random', 'tpe'")
        _require_choice("pruner", self.pruner, PRUNERS)
        if not self.knobs:
            raise StudyError("the study varies nothing: give at least one knob under scientific or nuisance, "
                             "e.g. scientific: {warmup_ratio: [0.0, 0.1]}")
        for section in ("base", "fixed", "scientific", "nuisance"):
            _check_knob_names(section, getattr(self, section))
        _check_no_overlap(self)
        held = _checked_held(self)
        for section in ("scientific", "nuisance"):
            for knob, domain in getattr(self, section).items():
                _check_domain(section, knob, domain, held, grid=self.sampler == "grid")
        _check_counts(self)
        _check_distinct(self)
        for name in ("heartbeat_interval", "grace_period"):
            _require_int(name, getattr(self, name), 1)
        _require_int("max_retry", self.max_retry, 0)
        if self.grace_period <= self.heartbeat_interval:  # a live worker would be taken for dead between beats
            raise StudyError(f"grace_period={self.grace_period} is invalid; allowed: more seconds than "
                             f"heartbeat_interval={self.heartbeat_interval}")
        make_pruner(self)  # checks pruner_settings
        check_storage_url(self.storage)


def _require_choice(name, value, choices) -> None:
    if value not in choices:
        raise StudyError(f"{name}={value!r} is not allowed; allowed: {', '.join(map(repr, choices))}")


def _require_int(name, value, low) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise StudyError(f"{name}={value!r} is invalid; allowed: a whole number >= {low}")


def _field_types() -> dict:
    return {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def _field_kind(knob: str):
    """int, float, str, ... for a TrainConfig field (`int | None` -> int)."""
    annotation = _field_types()[knob]
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
    return kinds[0] if kinds else annotation


def _check_knob_names(section: str, knobs: dict) -> None:
    fields = _field_types()
    for knob in knobs:
        if knob not in fields:
            raise StudyError(f"{section}.{knob}: {knob!r} is not a TrainConfig field; "
                             f"`python -m nbkit show-config` lists every field")


def _check_no_overlap(spec: StudySpec) -> None:
    sections = ("scientific", "nuisance", "fixed")
    for a, b in itertools.combinations(sections, 2):
        both = set(getattr(spec, a)) & set(getattr(spec, b))
        if both:
            knob = sorted(both)[0]
            raise StudyError(f"{knob!r} is both {a} and {b}; allowed: each knob in one of {', '.join(sections)}")


def _checked_held(spec: StudySpec) -> dict:
    held = spec.held()
    try:
        TrainConfig.from_dict(held)
    except ConfigError as err:
        raise StudyError(f"base/fixed: {err}") from None
    return held


def _check_domain(section: str, knob: str, domain, held: dict, grid: bool) -> None:
    where = f"{section}.{knob}"
    if isinstance(domain, dict):
        if grid:
            raise StudyError(f"{where}={domain!r}: the grid sampler needs a list of values; allowed: a list, "
                             "or sampler random / qmc / tpe for a range")
        low, high, _ = _range_ends(where, knob, domain)
        values = [low, high]
    elif isinstance(domain, (list, tuple)):
        if not domain:
            raise StudyError(f"{where}=[] is empty; allowed: at least one value, e.g. {knob}: [value1, value2]")
        values = list(domain)
    else:
        raise StudyError(f"{where}={domain!r} is invalid; allowed: a list of values or a range {{low, high, log}}")
    for value in values:
        try:
            TrainConfig.from_dict({**held, knob: value})
        except ConfigError as err:
            raise StudyError(f"{where}: value {value!r} is refused: {err}") from None


def _range_ends(where: str, knob: str, domain: dict) -> tuple:
    """(low, high, log) of a range, converted to the field's type; checked non-empty and ordered."""
    extra = set(domain) - {"low", "high", "log"}
    if extra or not {"low", "high"} <= set(domain):
        raise StudyError(f"{where}={domain!r} is invalid; allowed: a range {{low: ..., high: ..., log: true|false}}")
    kind = _field_kind(knob)
    if kind not in (int, float):
        raise StudyError(f"{where}: a range needs a numeric field, but {knob} is {kind.__name__}; allowed: a list")
    try:
        low, high = coerce_value(knob, domain["low"], kind), coerce_value(knob, domain["high"], kind)
        log = coerce_value("log", domain.get("log", False), bool)
    except ConfigError as err:
        raise StudyError(f"{where}: {err}") from None
    if not low < high:
        raise StudyError(f"{where}: range low={low!r} high={high!r} is empty or inverted; allowed: low < high")
    if log and low <= 0:
        raise StudyError(f"{where}: a log range needs low > 0, got low={low!r}")
    return low, high, log


def normalized_domain(knob: str, domain):
    """A list (values in the field's type) or {"low", "high", "log"}: the form stored with the study."""
    if isinstance(domain, dict):
        low, high, log = _range_ends(knob, knob, domain)
        return {"low": low, "high": high, "log": log}
    annotation = _field_types()[knob]
    return [coerce_value(knob, v, annotation) for v in domain]


def _coerced(values: dict) -> dict:
    types = _field_types()
    return {k: coerce_value(k, v, types[k]) if k in types else v for k, v in values.items()}


def _check_counts(spec: StudySpec) -> None:
    if spec.sampler == "grid":
        points = len(spec.grid_points())
        if spec.n_trials is not None and spec.n_trials != points:
            raise StudyError(f"n_trials={spec.n_trials} but the grid has {points} points; allowed: "
                             f"n_trials: {points} or leave it out (the grid runs each point once)")
        return
    _require_int("n_trials", spec.n_trials, 1)


def balanced_knobs(spec: StudySpec) -> list[str]:
    """The scientific knobs given as lists in a sampled (not grid) study: each of their values gets its
    share of the trials, fixed in the trial's slot, and the sampler draws the other knobs. Left to a
    sampler, a list is a categorical draw (QMC's scrambled sequence covers ranges, not categories), and
    the question's values would get what chance gives them."""
    if spec.sampler == "grid":
        return []
    return [knob for knob, domain in spec.scientific.items() if not isinstance(domain, dict)]


def balanced_slots(spec: StudySpec) -> list[dict]:
    """n_trials slots, each fixing one combination of the balanced knobs' values: the combinations in an
    order shuffled by study_seed, repeated until n_trials (so the first k slots of a study extended from
    k to n trials are the same). [{}] * n_trials when there is nothing to balance."""
    knobs = balanced_knobs(spec)
    if not knobs:
        return [{}] * spec.n_trials
    combos = [dict(zip(knobs, values)) for values in
              itertools.product(*(normalized_domain(k, spec.scientific[k]) for k in knobs))]
    random.Random(study_seed(spec)).shuffle(combos)
    return [combos[i % len(combos)] for i in range(spec.n_trials)]


def domain_size(knob: str, domain) -> int | None:
    """How many distinct values a knob can take: a list's distinct values, an int range's whole numbers,
    None (unbounded) for a float range."""
    domain = normalized_domain(knob, domain)
    if isinstance(domain, list):
        return len({_canonical(v) for v in domain})
    return domain["high"] - domain["low"] + 1 if _field_kind(knob) is int else None


def _check_distinct(spec: StudySpec) -> None:
    """A sampled study runs every configuration once: refuse n_trials that cannot be met without repeats."""
    if spec.sampler == "grid":
        return
    balanced = balanced_knobs(spec)
    sizes = [domain_size(k, d) for k, d in spec.knobs.items() if k not in balanced]
    if None in sizes:
        return
    room = math.prod(sizes)
    shares = Counter(_canonical(slot) for slot in balanced_slots(spec))
    share = max(shares.values())
    if share <= room:
        return
    most = room * len(shares)
    per = f" for each of the {len(shares)} combinations of {', '.join(balanced)}" if balanced else ""
    raise StudyError(f"n_trials={spec.n_trials} asks for {share} trials{per}, but the other knobs hold only "
                     f"{room} distinct configuration(s), and a study runs each configuration once; allowed: "
                     f"n_trials <= {most}, a range instead of a list for a nuisance knob, or sampler: grid")


# ---------------------------------------------------------------- Optuna's parts

def make_sampler(spec: StudySpec, draw_seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded for one draw. A sampler seeded once per process repeats itself: a
    resumed study would draw again the points it already ran (its draws depend on the seed only), so
    each draw gets its own seed (draw_seed: see draw_seed(), made from sampler_seed, the trial's
    number and the attempt). QMC keeps one shared seed, the study's (one scrambled sequence, whose
    position is stored in the study), and takes draw_seed for the random points it draws before its
    first trial completes."""
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler({k: normalized_domain(k, v) for k, v in spec.knobs.items()},
                                           seed=draw_seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=draw_seed)
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=draw_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=study_seed(spec),
                                          independent_sampler=optuna.samplers.RandomSampler(seed=draw_seed),
                                          warn_independent_sampling=False)


def draw_seed(spec: StudySpec, trial_number: int, attempt: int = 0) -> int | None:
    """The seed of one draw: the same sampler_seed, trial number and attempt give the same seed, so a
    seeded study draws the same trials for the same history; None (fresh) when sampler_seed is None."""
    if spec.sampler_seed is None:
        return None
    return random.Random(f"{spec.sampler_seed}/{trial_number}/{attempt}").getrandbits(32)


def study_seed(spec: StudySpec) -> int:
    """One seed for the whole study (every worker, every resume): sampler_seed, else one made from
    the study's name. QMC's scrambling and the order of a grid's queue both use it."""
    return spec.sampler_seed if spec.sampler_seed is not None else zlib.crc32(spec.study_name.encode())


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner; the resource is the epoch (one report per epoch-end evaluation)."""
    settings = dict(spec.pruner_settings)
    if spec.pruner == "none":
        if settings:
            raise StudyError(f"pruner_settings={settings!r} but pruner='none'; allowed: no settings")
        return optuna.pruners.NopPruner()
    if spec.pruner == "hyperband":
        kind = optuna.pruners.HyperbandPruner
    else:
        kind = optuna.pruners.SuccessiveHalvingPruner
        settings.setdefault("min_resource", 1)  # epoch 1 is the first evaluation after any training
    try:
        return kind(**settings)
    except (TypeError, ValueError) as err:
        allowed = [p for p in inspect.signature(kind).parameters]
        raise StudyError(f"pruner_settings={spec.pruner_settings!r} for pruner={spec.pruner!r}: {err}; "
                         f"allowed settings: {', '.join(allowed)}") from None


def first_rung(spec: StudySpec) -> int | None:
    """The first epoch at which the spec's pruner can stop a trial (None: no pruner, or a rung set
    "auto", which Optuna decides from the trials it sees)."""
    settings = {"min_resource": 1, **spec.pruner_settings}
    if spec.pruner == "none" or not isinstance(settings["min_resource"], int):
        return None
    if spec.pruner == "hyperband":  # its most aggressive bracket judges trials at min_resource
        return settings["min_resource"]
    return settings["min_resource"] * settings.get("reduction_factor", 4) ** settings.get("min_early_stopping_rate", 0)


def most_epochs(spec: StudySpec) -> int:
    """The most epochs any trial of the spec trains (num_train_epochs held, or the top of its domain)."""
    domain = spec.knobs.get("num_train_epochs")
    if domain is None:
        return int(spec.held().get("num_train_epochs", TrainConfig().num_train_epochs))
    domain = normalized_domain("num_train_epochs", domain)
    return int(domain["high"] if isinstance(domain, dict) else max(domain))


def pruning_note(spec: StudySpec) -> str | None:
    """A sentence when the pruner cannot save anything: a trial that trains its last epoch is judged
    complete, never pruned (its compute is spent; dropping its result would only lose it), so a first
    rung at or after the last epoch stops nothing."""
    rung, epochs = first_rung(spec), most_epochs(spec)
    if rung is None or rung < epochs:
        return None
    return (f"pruner={spec.pruner!r} can stop nothing here: its first rung is at epoch {rung} and trials "
            f"train at most {epochs} epoch(s), and a trial that reaches its last epoch is complete, never "
            f"pruned; set pruner_settings.min_resource below {epochs}, train more epochs, or use pruner: none")


def check_storage_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        scheme = make_url(url).get_backend_name()
    except ArgumentError:
        raise StudyError(f"storage={url!r} is not a database URL; allowed: sqlite:///path/studies.db or "
                         "postgresql+psycopg2://user@host:port/db") from None
    if scheme not in STORAGE_SCHEMES:
        raise StudyError(f"storage={url!r}: {scheme!r} is not supported; allowed: sqlite:///path/studies.db or "
                         "postgresql+psycopg2://user@host:port/db")
    with_driver(url)  # a PostgreSQL URL whose driver is not installed is refused here, naming it


def with_driver(url: str) -> str:
    """The URL with a PostgreSQL driver that is installed: `postgresql://` leaves the driver to SQLAlchemy,
    whose default is psycopg (version 3) in SQLAlchemy 2.1 and psycopg2 before; where that one is missing
    and psycopg2 (nbkit's requirement) is there, the URL names psycopg2. A driver named in the URL and
    missing is refused, naming it and how to install it."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    dialect = parsed.get_dialect()
    try:
        dialect.import_dbapi()
        return url
    except ImportError:
        pass
    if "+" not in parsed.drivername and importlib.util.find_spec("psycopg2") is not None:
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    package = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary"}.get(dialect.driver, dialect.driver)
    raise StudyError(f"storage={_shown(url)}: the PostgreSQL driver {dialect.driver!r} is not installed; allowed: "
                     f"pip install {package}, or postgresql+psycopg2://user@host:port/db (nbkit installs psycopg2)")


def absolute_storage_url(url: str) -> str:
    """A SQLite URL with an absolute path (its folder created): workers elsewhere find the same file."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return url
    path = Path(parsed.database).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: check_storage_url says so
        return url


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # wait up to a minute for another worker's write instead of failing with "database is locked"
        return {"connect_args": {"timeout": 60}}
    # fail fast on a wrong host; pre-ping replaces a connection the server dropped during a long trial
    return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}


def _serialize_sqlite_transactions(engine) -> None:
    """Make each SQLite transaction BEGIN IMMEDIATE (SQLAlchemy's recipe for the pysqlite driver),
    so Optuna's read-then-write of a trial's state cannot interleave between two workers."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # the driver stops issuing its own (late) BEGIN

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the hooks are replaced by hooked ones


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 max_retry: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage for a sqlite or postgresql URL, with heartbeats and retries when asked.
    An unreachable database raises StudyError naming the URL."""
    import sqlalchemy.exc

    check_storage_url(url)
    url = absolute_storage_url(with_driver(url))
    retry = None
    with warnings.catch_warnings():  # heartbeats and retries are marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat_interval is not None:
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        try:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat_interval,
                grace_period=grace_period, heartbeat_stale_trial_callback=retry)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, ImportError) as err:
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            raise StudyError(f"storage {_shown(url)} cannot be reached: {reason}") from None
    if url.startswith("sqlite"):
        _serialize_sqlite_transactions(storage.engine)
    return storage


def spec_storage(spec: StudySpec) -> optuna.storages.RDBStorage:
    return open_storage(spec.storage, spec.heartbeat_interval, spec.grace_period, spec.max_retry)


def check_stored(storage_url: str) -> None:
    """Refuse, before opening it, a storage to read that cannot hold a study: a bad URL, or a SQLite
    file that does not exist (opening it would create an empty database there)."""
    from sqlalchemy.engine import make_url

    check_storage_url(storage_url)
    parsed = make_url(storage_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser()
        if not path.is_file():
            raise StudyError(f"storage={storage_url!r}: no such file {path.resolve()}; a study run with "
                             f"this storage creates it (python -m nbkit study run FILE.yaml)")


def load_study(storage_url: str, study_name: str) -> optuna.Study:
    """The stored study (read it with study.trials, study.user_attrs["nbkit_spec"], ...)."""
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.study.get_all_study_names(storage)
        raise StudyError(f"study {study_name!r} is not in {_shown(storage_url)}; studies there: "
                         f"{', '.join(names) or 'none'}") from None


# ---------------------------------------------------------------- creating or resuming a study

def prepare_study(spec: StudySpec) -> optuna.Study:
    """Check the spec, then create the study or resume it (same search space only), and top its
    queue up to n_trials slots. Nothing in the storage changes if the check fails."""
    spec.check()
    storage = spec_storage(spec)
    space = spec.search_space()
    try:
        study = optuna.load_study(study_name=spec.study_name, storage=storage)
    except KeyError:
        study = _create(spec, storage)
    stored = study.user_attrs.get(SEARCH_SPACE_ATTR)
    if _canonical(stored) != _canonical(space):
        raise StudyError(f"study {spec.study_name!r} already exists in {_shown(spec.storage)} with another search "
                         f"space; stored: {json.dumps(stored, sort_keys=True)}; this spec: "
                         f"{json.dumps(space, sort_keys=True)}; allowed: the stored space, or a new study_name")
    _check_same_method(study, spec)
    study.set_user_attr(SPEC_ATTR, spec_record(spec))
    top_up(study, spec)
    return study


METHOD_FIELDS = ("sampler", "sampler_seed", "pruner", "pruner_settings")  # how a study's trials were chosen


def _check_same_method(study: optuna.Study, spec: StudySpec) -> None:
    """A resumed study keeps the sampler and pruner it was run with: trials chosen one way and judged
    another are not one study (and a changed seed would draw again what the old one drew)."""
    stored = study.user_attrs.get(SPEC_ATTR) or {}
    mine = spec.to_dict()
    for name in METHOD_FIELDS:
        if name in stored and _canonical(stored[name]) != _canonical(mine[name]):
            raise StudyError(f"{name}={mine[name]!r}, but study {spec.study_name!r} in {_shown(spec.storage)} was "
                             f"run with {name}={stored[name]!r}; allowed: {stored[name]!r}, or a new study_name")


def _create(spec: StudySpec, storage) -> optuna.Study:
    try:
        study = quiet_create_study(study_name=spec.study_name, storage=storage, sampler=make_sampler(spec),
                                   pruner=make_pruner(spec))
    except optuna.exceptions.DuplicatedStudyError:  # made by another process just now: compare with it
        return optuna.load_study(study_name=spec.study_name, storage=storage)
    study.set_user_attr(SEARCH_SPACE_ATTR, spec.search_space())
    return study


def quiet_create_study(**kwargs) -> optuna.Study:
    """optuna.create_study(direction="minimize", ...) without its "A new study created in ..." line on
    stderr: a chapter's output (and the CLI's) says what happened in its own lines. Optuna's logging
    level is restored after."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(direction="minimize", **kwargs)
    finally:
        optuna.logging.set_verbosity(level)


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def spec_record(spec: StudySpec) -> dict:
    """The spec as stored in study.user_attrs["nbkit_spec"], n_trials filled in."""
    record = spec.to_dict()
    record["n_trials"] = spec.trial_count()
    return record


def top_up(study: optuna.Study, spec: StudySpec) -> int:
    """Add WAITING trials until COMPLETE + PRUNED + RUNNING + WAITING trials fill n_trials slots
    (grid: until every grid point has one, in an order shuffled by study_seed, as Optuna's GridSampler
    picks a random unvisited point: an asynchronous pruner judges a trial against those before it, and
    the grid's own order, every small learning rate first, is the worst case for it; sampled: the
    balanced_slots the trials so far have not filled, each fixing its share of the scientific values).
    Returns how many were added."""
    trials = study.get_trials(deepcopy=False, states=COUNTED)
    if spec.sampler == "grid":
        wanted = spec.grid_points()
        random.Random(study_seed(spec)).shuffle(wanted)
    else:
        wanted = balanced_slots(spec)
    knobs = list(wanted[0]) if wanted else []
    have = Counter(_canonical({k: trial_params(t).get(k) for k in knobs}) for t in trials)
    missing = []
    for slot in wanted:
        key = _canonical(slot)
        if have[key]:
            have[key] -= 1
        else:
            missing.append(slot)
    room = len(wanted) - len(trials)
    missing = (missing + [{}] * room)[:max(0, room)]  # {}: the sampler draws every knob of this slot
    for params in missing:  # the sampler fills in the rest when a worker takes the slot
        study.enqueue_trial(params)
    return len(missing)


def trial_params(trial) -> dict:
    """The params a trial runs with: those it was given in its slot (a queued trial has no params yet),
    with those drawn for it."""
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


# ---------------------------------------------------------------- one trial

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
    text = sep.join(f"{k}={format_value(v)}" for k, v in params.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]+", "-", text)


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
        raise optuna.TrialPruned(f"pruned after epoch {int(run.epochs['epoch'].max())}")
    if run.status == "diverged":  # a run that blew up is no candidate, whatever its earlier epochs said
        return math.inf
    return best


def study_from_runs(runs, scientific, nuisance=(), study_name: str = "sweep") -> optuna.Study:
    """Runs already trained (a chapter's sweep table, Runs or run folders) as an in-memory Optuna
    study, so that a sweep is read as a study is: nbkit.core.study_analysis (edge warnings, isolation,
    importance, "big enough?") and nbkit.views.study_plots take it as they take a stored study.

        df = sweep(cfg, {"learning_rate": [1e-4, 1e-3, 1e-2], "warmup_ratio": [0.0, 0.1]})
        study = study_from_runs(df, scientific="warmup_ratio", nuisance="learning_rate")

    A run becomes a trial with the runs' values of the knobs as params (each knob a list of the
    values the runs took), the value a trained trial would have (best validation loss over epochs
    >= 1; inf for a diverged run), its curve as intermediate values, and run_dir / run_status."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    scientific = [scientific] if isinstance(scientific, str) else list(scientific)
    nuisance = [nuisance] if isinstance(nuisance, str) else list(nuisance)
    runs = as_runs(runs)
    if not runs:
        raise StudyError("runs=[]: no run to make a study of; allowed: a sweep table, Runs or run folders")
    for knob in scientific + nuisance:
        missing = [r.name for r in runs if knob not in r.config]
        if missing:
            raise StudyError(f"knob {knob!r} is not in the config of run(s) {missing[:3]}; allowed: "
                             f"{', '.join(sorted(runs[0].config))}")
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
            user_attrs={"run_dir": str(Path(run.path).resolve()), "run_status": run.status}))
    return study


def train_trial(trial: optuna.Trial, spec: StudySpec) -> float:
    """One trial as an in-process train() run, each epoch's eval_loss reported to the pruner."""
    from nbkit.core.train import train

    params = suggest(trial, spec)
    cfg = TrainConfig.from_dict({**spec.held(), **params, "output_dir": str(spec.resolved_output_dir()),
                                 "run_name": f"trial-{trial.number:03d}_" + params_label(params, ","),
                                 "disable_tqdm": True})

    def report(event, data):
        if event == TRAIN_BEGIN:  # recorded now, so a killed trial still points at its (incomplete) run
            trial.set_user_attr("run_dir", str(Path(data["path"]).resolve()))
            trial.set_user_attr("host", socket.gethostname())
        elif event == EPOCH_END and data["epoch"] >= 1 and math.isfinite(data["eval_loss"]):
            trial.report(data["eval_loss"], int(data["epoch"]))
            # a trial that has trained its last epoch is complete, whatever the pruner's rungs: its compute
            # is spent, and pruning it now would only drop its result from the study
            if not data["last_epoch"] and trial.should_prune():
                raise StopRun("pruned", f"Optuna's pruner stopped it after epoch {data['epoch']}")

    run = train(cfg, callbacks=[report], keep_model=False)
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
        raise RuntimeError(f"the notebook wrote no run under {trial_dir} (does it pass output_dir to TrainConfig?)")
    matching = [r for r in runs if all(r.config.get(k) == v for k, v in params.items())]
    return (matching or runs)[0]


def check_notebook(spec: StudySpec) -> None:
    """The papermill backend needs a notebook whose parameters cell has every searched knob."""
    import papermill

    if not spec.notebook or not Path(spec.notebook).is_file():
        raise StudyError(f"notebook={spec.notebook!r} is not a file; allowed: the path of an .ipynb whose "
                         "parameters cell lists the searched knobs and output_dir")
    declared = papermill.inspect_notebook(spec.notebook)
    for knob in list(spec.knobs) + ["output_dir"]:
        if knob not in declared:
            raise StudyError(f"notebook {spec.notebook} has no parameter {knob!r}; its parameters: "
                             f"{', '.join(declared) or 'none (tag a cell parameters)'}")


# ---------------------------------------------------------------- the worker loop

def _take_trial(study: optuna.Study, spec: StudySpec) -> optuna.Trial | None:
    """A WAITING trial, now RUNNING and ours, its params fixed (fix_params), or None. Optuna's ask() does
    the same atomic step but creates a new trial when the queue is empty; a worker here must never
    create one."""
    trial_id = study._pop_waiting_trial_id()
    if trial_id is None:
        return None
    if spec.sampler != "grid":
        fix_params(study, trial_id, spec)
    return optuna.Trial(study, trial_id)


MAX_DRAWS = 50  # draws of the sampler before a finite space's unused configuration is picked directly


def fix_params(study: optuna.Study, trial_id: int, spec: StudySpec) -> dict:
    """Draw every knob the taken slot does not fix, with the spec's sampler, never a configuration any
    other trial of the study has (finished, failed, running or queued), and fix them in the slot
    (Optuna's "fixed_params", as enqueue_trial does), so the trial's suggest_* calls return them and its
    heartbeat retry runs them again. A slot that already fixes every knob (a grid point, a retry) runs as
    given. Two workers drawing the same configuration in the same instant: the later trial draws again."""
    storage = study._storage
    mine = storage.get_trial(trial_id)
    given = mine.system_attrs.get("fixed_params", {})
    if set(spec.knobs) <= set(given):
        return given
    attempt = 0
    while True:
        taken = _configurations(study, spec, exclude=trial_id)
        params, attempt = _draw(study, spec, given, mine.number, taken, attempt)
        storage.set_trial_system_attr(trial_id, "fixed_params", params)
        rivals = [t for t in study.get_trials(deepcopy=False) if t.number < mine.number
                  and _config_key(spec, trial_params(t)) == _config_key(spec, params)]
        if not rivals:
            return params


def _config_key(spec: StudySpec, params: dict) -> str | None:
    """The configuration of a trial's params as a comparable string; None while some knob is not drawn."""
    if not set(spec.knobs) <= set(params):
        return None
    return _canonical({k: params[k] for k in spec.knobs})


def _configurations(study: optuna.Study, spec: StudySpec, exclude: int) -> set[str]:
    keys = {_config_key(spec, trial_params(t)) for t in study.get_trials(deepcopy=False) if t._trial_id != exclude}
    return keys - {None}


def _draw(study, spec, given: dict, number: int, taken: set, attempt: int) -> tuple[dict, int]:
    """One configuration that is not in `taken`, drawn by the spec's sampler on a scratch copy of the
    study (its finished trials, what a sampler learns from, and its stored state: QMC's place in its
    sequence), seeded by draw_seed(spec, number, attempt). Returns it and the next attempt number."""
    stored = study._storage.get_study_system_attrs(study._study_id)
    scratch = quiet_create_study()
    scratch.add_trials([t for t in study.get_trials(deepcopy=False)
                        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)])
    for key, value in stored.items():
        scratch._storage.set_study_system_attr(scratch._study_id, key, value)
    params = {}
    for _ in range(MAX_DRAWS):
        scratch.sampler = make_sampler(spec, draw_seed(spec, number, attempt))
        attempt += 1
        scratch.enqueue_trial(given)
        trial = scratch.ask()
        params = suggest(trial, spec)
        scratch.tell(trial, state=TrialState.FAIL)  # a sampler learns nothing from a draw
        if _config_key(spec, params) not in taken:
            break
    else:  # a small finite space mostly used up: pick what is left directly
        params = _unused_configuration(spec, given, taken, draw_seed(spec, number, attempt)) or params
    for key, value in scratch._storage.get_study_system_attrs(scratch._study_id).items():
        if stored.get(key) != value:  # QMC moved along its sequence: the study keeps its place
            study._storage.set_study_system_attr(study._study_id, key, value)
    return params, attempt


def _unused_configuration(spec: StudySpec, given: dict, taken: set, seed) -> dict | None:
    """A configuration, with the given values, that no trial has; None if none is left or the space
    is unbounded (a float range)."""
    values = {}
    for knob, domain in spec.knobs.items():
        if knob in given:
            values[knob] = [given[knob]]
            continue
        domain = normalized_domain(knob, domain)
        if isinstance(domain, dict):
            if _field_kind(knob) is not int:
                return None
            domain = list(range(domain["low"], domain["high"] + 1))
        values[knob] = domain
    free = [dict(zip(values, combo)) for combo in itertools.product(*values.values())
            if _config_key(spec, dict(zip(values, combo))) not in taken]
    return random.Random(seed).choice(free) if free else None


def _finish(study: optuna.Study, trial: optuna.Trial, objective, spec: StudySpec) -> str:
    """Run the objective under Optuna's heartbeat and tell the result; a line saying how it went."""
    from optuna.storages._heartbeat import get_heartbeat_thread  # what Optuna's optimize loop uses

    value, state, error = None, TrialState.COMPLETE, None
    with get_heartbeat_thread(trial._trial_id, study._storage):
        try:
            value = objective(trial, spec)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except Exception as err:  # the trial's own failure: recorded, the study goes on
            state, error = TrialState.FAIL, f"{type(err).__name__}: {err}"
            trial.set_user_attr("error", error[:2000])
        except KeyboardInterrupt:  # stopped by hand: the trial is FAIL and queued again as it was, the loop ends
            trial.set_user_attr("error", "interrupted")
            frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            _queue_again(study, frozen)
            raise
    if study._storage.get_trial(trial._trial_id).state.is_finished():  # failed by another worker meanwhile
        return (f"trial {trial.number}: taken for dead (no heartbeat for {spec.grace_period} s) and retried; "
                "this result is dropped")
    done = study.tell(trial, value if state == TrialState.COMPLETE else None, state=state, skip_if_finished=True)
    return trial_line(done, error)


def _queue_again(study: optuna.Study, trial) -> None:
    """A WAITING copy of an interrupted trial, its params fixed, marked as its retry (Optuna's heartbeat
    retry does the same for a dead worker's trial): the next run resumes with that configuration."""
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING,
        system_attrs={"fixed_params": trial_params(trial), "failed_trial": trial.number,
                      "retry_history": [*trial.system_attrs.get("retry_history", []), trial.number]}))


def trial_line(trial, error: str | None = None) -> str:
    value = "" if trial.value is None else f" value {trial.value:.4f}"
    params = ", ".join(f"{k}={format_value(v)}" for k, v in trial.params.items())
    status = trial.user_attrs.get("run_status", "")
    line = f"trial {trial.number} {trial.state.name}{value} [{params}] {status}".rstrip()
    return line + (f": {error}" if error else "")


def work(spec_dict: dict, backend: str = "local", worker: int = 0, threads: int | None = None,
         progress: bool = True) -> int:
    """A worker: take WAITING trials of the study until none is left and none is running; returns
    how many it ran. Runs in this process, a spawned process or a Ray task alike."""
    if threads:
        import torch
        torch.set_num_threads(threads)
    spec = StudySpec.from_dict(spec_dict)
    objective = notebook_trial if backend == "papermill" else train_trial
    # every slot's params are fixed before its trial starts (fix_params draws them with the spec's sampler):
    # the study's own sampler never draws, and a neutral one keeps QMC's place in its sequence untouched
    sampler = make_sampler(spec) if spec.sampler == "grid" else optuna.samplers.RandomSampler(seed=0)
    study = optuna.load_study(study_name=spec.study_name, storage=spec_storage(spec), sampler=sampler,
                              pruner=make_pruner(spec))
    done, told = 0, set()
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial goes back in the queue
        trial = _take_trial(study, spec)
        if trial is None:
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return done
            if progress:
                for line in _waiting_lines(study, spec, told):
                    print(line, flush=True)
            # a running trial may still turn out to be a dead worker's: look again in a second (reading the
            # storage is cheap; sleeping a whole heartbeat_interval kept the last trial's neighbour idle)
            time.sleep(min(1.0, spec.heartbeat_interval))
            continue
        line = _finish(study, trial, objective, spec)
        done += 1
        if progress:
            print(line, flush=True)


def _waiting_lines(study: optuna.Study, spec: StudySpec, told: set) -> list[str]:
    """A line, once per trial, for each RUNNING trial whose worker has missed its heartbeats (a live one
    beats every heartbeat_interval): the queue is empty and this worker waits for it to be taken for
    dead, at most grace_period seconds after its last beat."""
    lines = []
    for number, age in heartbeat_ages(study).items():
        if number not in told and age > 2 * spec.heartbeat_interval:
            told.add(number)
            left = max(0, math.ceil(spec.grace_period - age))
            lines.append(f"waiting for trial {number}: its worker has sent no heartbeat for {age:.0f} s; it is taken "
                         f"for dead and queued again after grace_period={spec.grace_period} s (about {left} s more)")
    return lines


def heartbeat_ages(study: optuna.Study) -> dict[int, float]:
    """{trial number: seconds since its last heartbeat} for the RUNNING trials that have beaten. Optuna
    keeps heartbeats in its own table and offers only "which trials are stale"; this reads the table."""
    from optuna.storages._rdb import models
    from sqlalchemy import func

    storage = getattr(study._storage, "_backend", study._storage)  # the RDBStorage inside Optuna's cache
    with storage.scoped_session() as session:
        now = session.execute(func.now()).scalar().replace(tzinfo=None)
        rows = (session.query(models.TrialModel.number, models.TrialHeartbeatModel.heartbeat)
                .join(models.TrialHeartbeatModel, models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id)
                .filter(models.TrialModel.study_id == study._study_id,
                        models.TrialModel.state == TrialState.RUNNING).all())
    return {number: (now - beat.replace(tzinfo=None)).total_seconds() for number, beat in rows}


def default_workers() -> int:
    """One worker per two cores (each keeps two threads for its run), at least one."""
    return max(1, (os.cpu_count() or 1) // 2)


def run_study(spec, workers: int | None = None, backend: str = "local", storage: str | None = None,
              ray_address: str | None = None, progress: bool = True) -> optuna.Study:
    """Run a study to the end: spec is a StudySpec, a dict or a YAML path. Checks everything first,
    creates or resumes the study, runs the missing trials on `backend` with `workers` workers
    (default: one per two cores; backend "inprocess" or workers=1: in this process), prints a line
    per trial and a summary, and returns the optuna Study."""
    spec = as_spec(spec)
    _require_choice("backend", backend, BACKENDS)
    changes = {"output_dir": str(spec.resolved_output_dir())}
    if storage is not None:
        changes["storage"] = storage
    if spec.notebook:
        changes["notebook"] = str(Path(spec.notebook).resolve())
    spec = dataclasses.replace(spec, **changes)
    spec.check()
    if backend == "papermill":
        check_notebook(spec)
    workers = default_workers() if workers is None else workers
    _require_int("workers", workers, 1)
    study, spec_dict = prepare_for_workers(spec)
    note = pruning_note(spec)
    if note and progress:
        print(f"note: {note}", flush=True)
    board = StudyProgress(study, spec.trial_count(), workers) if progress else None
    try:
        if backend == "ray":
            _run_on_ray(spec_dict, workers, ray_address, progress)
        elif backend == "inprocess" or workers == 1:
            work(spec_dict, "papermill" if backend == "papermill" else "local", progress=progress)
        else:
            _run_in_processes(spec_dict, backend, workers, progress)
    except KeyboardInterrupt:
        if progress:
            print(interrupted_line(study), flush=True)
        raise
    finally:
        if board:
            board.close()
    if progress:  # the Study reads the storage afresh: it sees what every worker wrote
        print(describe(study), flush=True)
    return study


def interrupted_line(study: optuna.Study) -> str:
    """What an interrupted study kept, and how to go on: one line instead of a traceback per worker."""
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    kept = counts["COMPLETE"] + counts["PRUNED"]
    return (f"interrupted: {kept} finished trial(s) kept ({counts['COMPLETE']} COMPLETE, {counts['PRUNED']} PRUNED) "
            f"in study {study.study_name!r}; {counts['WAITING']} queued, the interrupted ones among them with "
            "their params; run the same command again to resume")


class StudyProgress:
    """Trials started, ended (pruned and failed among them) and left, with an estimate of the time left,
    read from the storage every `every` seconds by a thread of this process (the workers may be other
    processes or machines): a bar in a terminal, a line per change when the output is piped, a widget
    in a notebook. close() shows the last state and stops."""

    def __init__(self, study: optuna.Study, n_trials: int, workers: int, every: float = 1.0, mode: str | None = None):
        self.study, self.n_trials, self.workers, self.every = study, n_trials, workers, every
        self.mode = mode or progress_mode()
        self.shown, self.done = None, threading.Event()
        self.bar = self.widget = None
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def counts(self) -> dict:
        trials = self.study.get_trials(deepcopy=False)
        states = Counter(t.state.name for t in trials)
        ended = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.duration]
        mean = sum(t.duration.total_seconds() for t in ended) / len(ended) if ended else None
        left, running = states["WAITING"], states["RUNNING"]
        eta = None if mean is None else mean * (left + running / 2) / max(1, self.workers)
        return {"started": running + states["COMPLETE"] + states["PRUNED"] + states["FAIL"],
                "ended": states["COMPLETE"] + states["PRUNED"], "pruned": states["PRUNED"],
                "failed": states["FAIL"], "running": running, "left": left, "eta_s": eta}

    def text(self, c: dict) -> str:
        eta = "time left: known after the first trial" if c["eta_s"] is None else f"about {_duration(c['eta_s'])} left"
        return (f"{c['ended']} of {self.n_trials} ended ({c['pruned']} pruned, {c['failed']} failed), "
                f"{c['running']} running, {c['left']} left; {eta}")

    def _watch(self) -> None:
        while not self.done.wait(self.every):
            self._show()

    def _show(self) -> None:
        try:
            c = self.counts()
        except Exception:  # a busy database: the next look will do
            return
        key = {k: v for k, v in c.items() if k != "eta_s"}
        if key == self.shown and self.mode == "lines":
            return
        self.shown = key
        if self.mode == "lines":
            print(f"progress: {self.text(c)}", flush=True)
        elif self.mode == "bar":
            self._bar(c)
        else:
            self._widget(c)

    def _bar(self, c: dict) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=self.n_trials, desc="trials", unit="trial", leave=True)
        self.bar.n = c["ended"]
        self.bar.set_postfix_str(self.text(c).split(", ", 1)[1])

    def _widget(self, c: dict) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        if self.widget is None:
            self.widget = (widgets.IntProgress(min=0, max=self.n_trials, description="trials"), widgets.HTML())
            display(widgets.HBox(self.widget))
        self.widget[0].value, self.widget[1].value = c["ended"], self.text(c)

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.shown = None
        self._show()
        if self.bar is not None:
            self.bar.close()


def progress_mode() -> str:
    """"widget" in a Jupyter kernel, "bar" in a terminal, "lines" when the output goes to a file or pipe."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        return "widget"
    return "bar" if sys.stdout.isatty() else "lines"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def prepare_for_workers(spec: StudySpec) -> tuple[optuna.Study, dict]:
    """What every backend does before a worker starts: the storage URL made absolute (a worker in
    another folder or process finds the same file), the study checked, created or resumed and its
    queue filled (prepare_study). Returns the study and the spec as the dict each worker's `work` takes."""
    spec = dataclasses.replace(spec, storage=absolute_storage_url(spec.storage))
    return prepare_study(spec), spec.to_dict()


def as_spec(spec) -> StudySpec:
    if isinstance(spec, StudySpec):
        return spec
    if isinstance(spec, dict):
        return StudySpec.from_dict(spec)
    return StudySpec.from_yaml(spec)


def _run_in_processes(spec_dict: dict, backend: str, workers: int, progress: bool) -> None:
    """`workers` workers, each with an equal share of the cores, all pulling from the same storage:
    worker 0 is this process (torch is imported here already: it starts training at once, while the
    others are still importing it, about 5 s each) and the others are spawned processes (never
    forked: torch's OpenMP pool does not survive a fork; measured here, a forked child with 2 threads hangs).
    The spawned ones ignore Ctrl-C (which a terminal sends to every process of the group): this process
    stops them, so one line, not one traceback per worker, says what happened; and they end when this
    process dies (worker_process)."""
    import torch

    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker_process, args=(spec_dict, backend, i, threads, progress), daemon=False)
                 for i in range(1, workers)]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # ignored from their first instruction (kept by exec)
    try:
        for process in processes:
            process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    own_threads = torch.get_num_threads()
    try:
        work(spec_dict, backend, 0, threads, progress)
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()  # SIGTERM: the worker stops its trial as Ctrl-C would (worker_process)
        raise
    finally:
        torch.set_num_threads(own_threads)  # the caller's process (a kernel, say) gets its threads back
        for process in processes:
            process.join()
    died = [p.exitcode for p in processes if p.exitcode != 0]
    if died and progress:
        print(f"{len(died)} of {workers} workers ended abnormally (exit codes {died}); their trials are retried "
              "by the others or on the next run", flush=True)


def worker_process(spec_dict: dict, backend: str, worker: int, threads: int, progress: bool) -> None:
    """A spawned worker: `work`, ended by SIGTERM as by Ctrl-C (its trial queued again, no traceback), and
    ended when the process that started it dies (a SIGKILL, a closed terminal): left alone, it would go
    on taking trials nobody watches. Its trial then stays RUNNING until the heartbeat gives it back."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    parent = multiprocessing.parent_process()

    def exit_with_parent():
        multiprocessing.connection.wait([parent.sentinel])  # ready when the parent process is gone
        os._exit(1)

    if parent is not None:
        threading.Thread(target=exit_with_parent, daemon=True).start()
    try:
        work(spec_dict, backend, worker, threads, progress)
    except KeyboardInterrupt:
        sys.exit(130)


def _run_on_ray(spec_dict: dict, workers: int, address: str | None, progress: bool) -> None:
    """`workers` Ray tasks of the worker loop; connects to `address` (or RAY_ADDRESS), else starts a
    local cluster of `workers` CPUs, which is shut down afterwards."""
    # Ray folds log lines that differ only in their numbers (two "trial N COMPLETE value ..." lines from two
    # workers become one): nbkit's trial lines are each a result, so they are let through (Ray's documented
    # RAY_DEDUP_LOGS_ALLOW_REGEX, read when ray is first imported)
    os.environ.setdefault("RAY_DEDUP_LOGS_ALLOW_REGEX", NEVER_FOLDED)
    import ray

    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=progress)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=progress)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(work)  # a dead task's trial comes back via the heartbeat
        ray.get([task.remote(spec_dict, "local", i, None, progress) for i in range(workers)])
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------- summary

def summary(study: optuna.Study) -> dict:
    """Counts of trials by state, and the best trial (lowest finite value) with its params."""
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    finite = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    best = min(finite, key=lambda t: t.value) if finite else None
    return {"study_name": study.study_name, "counts": dict(counts),
            "best_trial": None if best is None else best.number,
            "best_value": None if best is None else best.value,
            "best_params": None if best is None else dict(best.params),
            "best_run_dir": None if best is None else best.user_attrs.get("run_dir")}


def describe(study: optuna.Study) -> str:
    s = summary(study)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(s["counts"].items()))
    lines = [f"study {s['study_name']}: {counts or 'no trials'}"]
    if s["best_trial"] is None:
        lines.append("best: none (no trial completed with a finite validation loss)")
    else:
        params = ", ".join(f"{k}={format_value(v)}" for k, v in s["best_params"].items())
        lines.append(f"best: trial {s['best_trial']}, eval_loss {s['best_value']:.4f}, {params}")
        lines.append(f"      run {s['best_run_dir']}")
    return "\n".join(lines)
