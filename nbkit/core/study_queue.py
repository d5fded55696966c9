"""A study's queue of trial slots: created or resumed once, filled before any worker starts, and each
slot's params fixed when a worker takes it.

    prepare_study(spec)         check, create or resume (same search space, sampler and pruner), top up the queue
    fix_params(study, number, spec)   draw a taken slot's params: never a configuration the study already has

The queue is how workers agree on "exactly n_trials": see nbkit/core/study.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from collections import Counter

import optuna
from optuna.trial import TrialState

from nbkit.core import optuna_private
from nbkit.core.i18n import _
from nbkit.core.study_spec import (SEARCH_SPACE_ATTR, SPEC_ATTR, METHOD_FIELDS, StudyError, StudySpec, _canonical,
                                   _field_kind, _shown, balanced_slots, draw_seed, make_pruner, make_sampler,
                                   normalized_domain, quiet_create_study, spec_record, study_seed)
from nbkit.core.study_storage import absolute_storage_url, spec_storage
from nbkit.core.study_trials import suggest

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)  # fill a slot
MAX_DRAWS = 50  # draws of the sampler before a finite space's unused configuration is picked directly


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
        raise StudyError(_("study {name!r} already exists in {storage} with another search space; stored: {stored}; "
                           "this spec: {space}; allowed: the stored space, or a new study_name").format(
            name=spec.study_name, storage=_shown(spec.storage), stored=json.dumps(stored, sort_keys=True),
            space=json.dumps(space, sort_keys=True)))
    _check_same_method(study, spec)
    study.set_user_attr(SPEC_ATTR, spec_record(spec))
    top_up(study, spec)
    return study


def _check_same_method(study: optuna.Study, spec: StudySpec) -> None:
    """A resumed study keeps the sampler and pruner it was run with: trials chosen one way and judged
    another are not one study (and a changed seed would draw again what the old one drew)."""
    stored = study.user_attrs.get(SPEC_ATTR) or {}
    mine = spec.to_dict()
    for name in METHOD_FIELDS:
        if name in stored and _canonical(stored[name]) != _canonical(mine[name]):
            raise StudyError(_("{field}={mine!r}, but study {name!r} in {storage} was run with {field}={stored!r}; "
                               "allowed: {stored!r}, or a new study_name").format(
                field=name, mine=mine[name], name=spec.study_name, storage=_shown(spec.storage), stored=stored[name]))


def _create(spec: StudySpec, storage) -> optuna.Study:
    try:
        study = quiet_create_study(study_name=spec.study_name, storage=storage, sampler=make_sampler(spec),
                                   pruner=make_pruner(spec))
    except optuna.exceptions.DuplicatedStudyError:  # made by another process just now: compare with it
        return optuna.load_study(study_name=spec.study_name, storage=storage)
    study.set_user_attr(SEARCH_SPACE_ATTR, spec.search_space())
    return study


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


def fix_params(study: optuna.Study, number: int, spec: StudySpec) -> dict:
    """Draw every knob the taken slot (trial `number`) does not fix, with the spec's sampler, never a
    configuration any other trial of the study has (finished, failed, running or queued), and fix them in
    the slot (Optuna's "fixed_params", as enqueue_trial does), so the trial's suggest_* calls return them
    and its heartbeat retry runs them again. A slot that already fixes every knob (a grid point, a retry)
    runs as given. Two workers drawing the same configuration in the same instant: the later trial draws
    again."""
    given = optuna_private.stored_trial(study, number).system_attrs.get("fixed_params", {})
    if set(spec.knobs) <= set(given):
        return given
    attempt = 0
    while True:
        taken = _configurations(study, spec, exclude=number)
        params, attempt = _draw(study, spec, given, number, taken, attempt)
        optuna_private.set_trial_system_attr(study, number, "fixed_params", params)
        rivals = [t for t in study.get_trials(deepcopy=False) if t.number < number
                  and _config_key(spec, trial_params(t)) == _config_key(spec, params)]
        if not rivals:
            return params


def _config_key(spec: StudySpec, params: dict) -> str | None:
    """The configuration of a trial's params as a comparable string; None while some knob is not drawn."""
    if not set(spec.knobs) <= set(params):
        return None
    return _canonical({k: params[k] for k in spec.knobs})


def _configurations(study: optuna.Study, spec: StudySpec, exclude: int) -> set[str]:
    """The configurations of every trial but number `exclude` whose knobs are all drawn."""
    keys = {_config_key(spec, trial_params(t)) for t in study.get_trials(deepcopy=False) if t.number != exclude}
    return keys - {None}


def _draw(study, spec, given: dict, number: int, taken: set, attempt: int) -> tuple[dict, int]:
    """One configuration that is not in `taken`, drawn by the spec's sampler on a scratch copy of the
    study (its finished trials, what a sampler learns from, and its stored state: QMC's place in its
    sequence), seeded by draw_seed(spec, number, attempt). Returns it and the next attempt number."""
    stored = optuna_private.study_system_attrs(study)
    scratch = quiet_create_study()
    scratch.add_trials([t for t in study.get_trials(deepcopy=False)
                        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)])
    for key, value in stored.items():
        optuna_private.set_study_system_attr(scratch, key, value)
    params = {}
    for _draw in range(MAX_DRAWS):
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
    for key, value in optuna_private.study_system_attrs(scratch).items():
        if stored.get(key) != value:  # QMC moved along its sequence: the study keeps its place
            optuna_private.set_study_system_attr(study, key, value)
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


def _queue_again(study: optuna.Study, trial) -> None:
    """A WAITING copy of an interrupted trial, its params fixed, marked as its retry (Optuna's heartbeat
    retry does the same for a dead worker's trial): the next run resumes with that configuration."""
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING,
        system_attrs={"fixed_params": trial_params(trial), "failed_trial": trial.number,
                      "retry_history": [*trial.system_attrs.get("retry_history", []), trial.number]}))


def prepare_for_workers(spec: StudySpec) -> tuple[optuna.Study, dict]:
    """What every backend does before a worker starts: the storage URL made absolute (a worker in
    another folder or process finds the same file), the study checked, created or resumed and its
    queue filled (prepare_study). Returns the study and the spec as the dict each worker's `work` takes."""
    spec = dataclasses.replace(spec, storage=absolute_storage_url(spec.storage))
    return prepare_study(spec), spec.to_dict()
