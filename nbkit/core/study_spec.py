"""A study's spec: what it varies, what it holds, how many trials and how Optuna samples and prunes
them; every check a spec passes before anything runs or a storage is touched.

    spec = StudySpec.from_yaml("lr_study.yaml")     # or StudySpec.from_dict({...}); spec.check()
    make_sampler(spec, draw_seed(spec, number))      # Optuna's sampler for one draw
    make_pruner(spec); pruning_note(spec)            # Optuna's pruner, and a sentence when it can stop nothing

The spec's YAML form and the playbook's words (scientific, nuisance, fixed) are in nbkit/core/study.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import itertools
import json
import math
import random
import typing
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from nbkit.core import config, notices
from nbkit.core.config import ConfigError, TrainConfig, coerce_value, read_yaml_mapping
from nbkit.core.data import check_dataset
from nbkit.core.i18n import _
from nbkit.core.runs import NOT_KNOBS

SAMPLERS = ("grid", "random", "qmc", "tpe")
PRUNERS = ("none", "successive_halving", "asha", "hyperband")
BACKENDS = ("local", "inprocess", "papermill", "ray")
STORAGE_SCHEMES = ("sqlite", "postgresql")
DEFAULT_STORAGE = "sqlite:///runs/studies.db"  # a file beside the run store: nothing to install or start
SEARCH_SPACE_ATTR = "nbkit_search_space"  # the study user attr a resumed study is compared against
SPEC_ATTR = "nbkit_spec"  # the whole spec, JSON: what analysis and plots read back
METHOD_FIELDS = ("sampler", "sampler_seed", "pruner", "pruner_settings")  # how a study's trials were chosen


class StudyError(ConfigError):
    """A study that cannot run as asked: the message names the field or URL and what is allowed."""


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
            raise StudyError(_("a study spec is a mapping of field: value, got {type}").format(type=type(d).__name__))
        d = dict(d)
        if isinstance(d.get("pruner"), dict):
            settings = dict(d["pruner"])
            d["pruner"] = settings.pop("name", "none")
            d["pruner_settings"] = {**settings, **(d.get("pruner_settings") or {})}
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            raise StudyError(_("study spec field {field!r} is unknown; allowed: {allowed}").format(
                field=unknown[0], allowed=", ".join(names)))
        if "study_name" not in d:
            raise StudyError(_("study spec: study_name is missing; allowed: a name such as 'lr_vs_warmup'"))
        for key in ("base", "scientific", "nuisance", "fixed", "pruner_settings"):
            if d.get(key) is None:
                d.pop(key, None)
            elif not isinstance(d[key], dict):
                raise StudyError(_("study spec field {field}={value!r} is invalid; allowed: a mapping").format(
                    field=key, value=d[key]))
        return cls(**d)

    @classmethod
    def from_yaml(cls, path) -> "StudySpec":
        try:
            return cls.from_dict(read_yaml_mapping(path, _("study spec")))
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
            raise StudyError(_("study_name={value!r} is invalid; allowed: a non-empty name").format(
                value=self.study_name))
        _require_choice("sampler", self.sampler, SAMPLERS)
        if self.sampler == "qmc" and importlib.util.find_spec("scipy") is None:
            raise StudyError(_("sampler='qmc' needs scipy (Optuna's QMCSampler draws from scipy.stats.qmc): "
                               "pip install scipy; allowed without it: 'grid', 'random', 'tpe'"))
        _require_choice("pruner", self.pruner, PRUNERS)
        if not self.knobs:
            raise StudyError(_("the study varies nothing: give at least one knob under scientific or nuisance, "
                               "e.g. scientific: {{warmup_ratio: [0.0, 0.1]}}").format())
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
            raise StudyError(_("grace_period={grace_period} is invalid; allowed: more seconds than "
                               "heartbeat_interval={heartbeat_interval}").format(
                grace_period=self.grace_period, heartbeat_interval=self.heartbeat_interval))
        make_pruner(self)  # checks pruner_settings
        check_storage_url(self.storage)


def _require_choice(name, value, choices) -> None:
    """config's rule and message (with its did-you-mean), raised as a StudyError."""
    _as_study_error(config._require_choice, name, value, choices)


def _require_int(name, value, low) -> None:
    """config's message for a refused value, raised as a StudyError."""
    whole = not isinstance(value, bool) and isinstance(value, int) and value >= low
    if not whole:
        raise StudyError(_("{field}={value!r} is invalid; allowed: {allowed}.").format(
            field=name, value=value, allowed=_("a whole number >= {low}").format(low=low)))


def _as_study_error(check, *args) -> None:
    try:
        check(*args)
    except ConfigError as err:
        raise StudyError(str(err)) from None


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
            raise StudyError(_("{section}.{knob}: {knob!r} is not a TrainConfig field; "
                               "`python -m nbkit show-config` lists every field").format(section=section, knob=knob))


def _check_no_overlap(spec: StudySpec) -> None:
    sections = ("scientific", "nuisance", "fixed")
    for a, b in itertools.combinations(sections, 2):
        both = set(getattr(spec, a)) & set(getattr(spec, b))
        if both:
            knob = sorted(both)[0]
            raise StudyError(_("{knob!r} is both {first} and {second}; allowed: each knob in one of {sections}").format(
                knob=knob, first=a, second=b, sections=", ".join(sections)))


def _checked_held(spec: StudySpec) -> dict:
    held = spec.held()
    try:
        check_dataset(TrainConfig.from_dict(held).dataset)  # a bad file would fail every trial, one by one
    except (ConfigError, ValueError) as err:
        raise StudyError(_("base/fixed: {error}").format(error=err)) from None
    return held


def _check_domain(section: str, knob: str, domain, held: dict, grid: bool) -> None:
    where = f"{section}.{knob}"
    if isinstance(domain, dict):
        if grid:
            raise StudyError(_("{where}={domain!r}: the grid sampler needs a list of values; allowed: a list, "
                               "or sampler random / qmc / tpe for a range").format(where=where, domain=domain))
        low, high, _log = _range_ends(where, knob, domain)
        values = [low, high]
    elif isinstance(domain, (list, tuple)):
        if not domain:
            raise StudyError(_("{where}=[] is empty; allowed: at least one value, e.g. {knob}: [value1, value2]")
                             .format(where=where, knob=knob))
        values = list(domain)
    else:
        raise StudyError(_("{where}={domain!r} is invalid; allowed: a list of values or a range {{low, high, log}}")
                         .format(where=where, domain=domain))
    for value in values:
        try:
            cfg = TrainConfig.from_dict({**held, knob: value})
            if knob == "dataset":
                check_dataset(cfg.dataset)
        except (ConfigError, ValueError) as err:
            raise StudyError(_("{where}: value {value!r} is refused: {error}").format(
                where=where, value=value, error=err)) from None


def _range_ends(where: str, knob: str, domain: dict) -> tuple:
    """(low, high, log) of a range, converted to the field's type; checked non-empty and ordered."""
    extra = set(domain) - {"low", "high", "log"}
    if extra or not {"low", "high"} <= set(domain):
        raise StudyError(_("{where}={domain!r} is invalid; allowed: a range {{low: ..., high: ..., log: true|false}}")
                         .format(where=where, domain=domain))
    kind = _field_kind(knob)
    if kind not in (int, float):
        raise StudyError(_("{where}: a range needs a numeric field, but {knob} is {kind}; allowed: a list").format(
            where=where, knob=knob, kind=kind.__name__))
    try:
        low, high = coerce_value(knob, domain["low"], kind), coerce_value(knob, domain["high"], kind)
        log = coerce_value("log", domain.get("log", False), bool)
    except ConfigError as err:
        raise StudyError(_("{where}: {error}").format(where=where, error=err)) from None
    if not low < high:
        raise StudyError(_("{where}: range low={low!r} high={high!r} is empty or inverted; allowed: low < high").format(
            where=where, low=low, high=high))
    if log and low <= 0:
        raise StudyError(_("{where}: a log range needs low > 0, got low={low!r}").format(where=where, low=low))
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
            raise StudyError(_("n_trials={n_trials} but the grid has {points} points; allowed: "
                               "n_trials: {points} or leave it out (the grid runs each point once)").format(
                n_trials=spec.n_trials, points=points))
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
    if balanced:
        message = _("n_trials={n_trials} asks for {share} trials for each of the {combinations} combinations of "
                    "{knobs}, but the other knobs hold only {room} distinct configuration(s), and a study runs each "
                    "configuration once; allowed: n_trials <= {most}, a range instead of a list for a nuisance knob, "
                    "or sampler: grid")
    else:
        message = _("n_trials={n_trials} asks for {share} trials, but the other knobs hold only {room} distinct "
                    "configuration(s), and a study runs each configuration once; allowed: n_trials <= {most}, a "
                    "range instead of a list for a nuisance knob, or sampler: grid")
    raise StudyError(message.format(n_trials=spec.n_trials, share=share, combinations=len(shares),
                                    knobs=", ".join(balanced), room=room, most=most))


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
    with notices.optuna_experimental():
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
            raise StudyError(_("pruner_settings={settings!r} but pruner='none'; allowed: no settings").format(
                settings=settings))
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
        raise StudyError(_("pruner_settings={settings!r} for pruner={pruner!r}: {error}; "
                           "allowed settings: {allowed}").format(settings=spec.pruner_settings, pruner=spec.pruner,
                                                                 error=err, allowed=", ".join(allowed))) from None


def pruner_stops(trial: optuna.Trial, last_epoch: bool) -> bool:
    """Whether the pruner stops the trial after the epoch it just reported. Never at its last epoch: the
    trial's compute is spent, and pruning it then would only drop its result from the study. The rule of
    a live trial (study_trials.train_trial) and of a replayed one (study_analysis.replay_pruning)."""
    return not last_epoch and trial.should_prune()


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
    return _("pruner={pruner!r} can stop nothing here: its first rung is at epoch {rung} and trials "
             "train at most {epochs} epoch(s), and a trial that reaches its last epoch is complete, never "
             "pruned; set pruner_settings.min_resource below {epochs}, train more epochs, or use pruner: none").format(
        pruner=spec.pruner, rung=rung, epochs=epochs)


def check_storage_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        scheme = make_url(url).get_backend_name()
    except ArgumentError:
        raise StudyError(_("storage={url!r} is not a database URL; allowed: sqlite:///path/studies.db or "
                           "postgresql+psycopg2://user@host:port/db").format(url=url)) from None
    if scheme not in STORAGE_SCHEMES:
        raise StudyError(_("storage={url!r}: {scheme!r} is not supported; allowed: sqlite:///path/studies.db or "
                           "postgresql+psycopg2://user@host:port/db").format(url=url, scheme=scheme))
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
    raise StudyError(_("storage={url}: the PostgreSQL driver {driver!r} is not installed; allowed: "
                       "pip install {package}, or postgresql+psycopg2://user@host:port/db (nbkit installs psycopg2)")
                     .format(url=_shown(url), driver=dialect.driver, package=package))


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: check_storage_url says so
        return url


def quiet_create_study(**kwargs) -> optuna.Study:
    """optuna.create_study(direction="minimize", ...) without its "A new study created in ..." line
    (nbkit.core.notices.optuna_quiet)."""
    with notices.optuna_quiet():
        return optuna.create_study(direction="minimize", **kwargs)


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def spec_record(spec: StudySpec) -> dict:
    """The spec as stored in study.user_attrs["nbkit_spec"], n_trials filled in."""
    record = spec.to_dict()
    record["n_trials"] = spec.trial_count()
    return record


def as_spec(spec) -> StudySpec:
    if isinstance(spec, StudySpec):
        return spec
    if isinstance(spec, dict):
        return StudySpec.from_dict(spec)
    return StudySpec.from_yaml(spec)
