"""What a finished study says, beyond its best trial: the analysis the Google tuning playbook asks for
and that the anchors lack (issue 17, item 4). Tables and numbers only; nbkit.views.study_plots draws them.

    trials_table(study)            a row per trial: state, run status, value, params, compute, run folder
    run_status(trial)              completed, diverged, pruned, failed (its code raised), worker died, ...
    search_space(study)            the knobs searched and over what: a list of values or {low, high, log}
    edge_warnings(study)           "the best trial sits at the top of the searched range: widen it" (ranges)
    list_winners(study)            per knob given as a list: which value won, by how much, against the seed band
    seed_band(study)               the seed's own noise, when `seed` is a knob: same configuration, other seeds
    starved_values(study)          per scientific value of a list: its trials, and whether it got its fair share
    isolation(study)               best validation loss per scientific value, nuisance knobs tuned away
    importance(study)              Optuna's parameter importances (PED-ANOVA: numpy only, no scikit-learn)
    importance_hint(n)             why importances from fewer than FEW_FOR_IMPORTANCE trials are only a hint
    is_big_enough(study)           a bootstrap: does the best configuration survive resampling the trials?
    report_lines(study)            all of the above in words: what `python -m nbkit study show` prints
    compute_saved(grid, pruned)    epochs trained by two studies of the same question, and their bests
    pruning_over_orders(grid, new_pruner)
                                   the grid's curves replayed through a pruner in many arrival orders:
                                   how much of an asynchronous pruner's result is the order trials came in
    orders_summary(table)          that table in a few numbers: compute shares, how often the best was kept

A study is an Optuna study as nbkit.core.study makes it (direction minimize, trial value = the run's
best validation loss, intermediate values = {epoch: eval_loss}, user attrs run_dir and run_status,
study user attr "nbkit_spec" naming the scientific, nuisance and fixed knobs). Every spec shape
`study run` accepts is analysed: scientific knobs only, scientific and nuisance, nuisance only (a
tuning study: no isolation, its answer is the best configuration), `seed` as a knob, lists of numbers
or of strings, int and float ranges on log or linear scales; and every state a trial can end in. A
diverged run is a COMPLETE trial with value inf: it has no usable value here, like a FAIL trial; a
FAIL trial is either "failed" (its code raised: user attr "error") or "worker died" (no "error", no
"run_status": Optuna's heartbeat failed it, and its retry names it in system attr "failed_trial").
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from nbkit.core.config import TrainConfig
from nbkit.core.i18n import N_, _
from nbkit.core.runs import format_value
from nbkit.core.study_spec import SPEC_ATTR, pruner_stops, quiet_create_study

EDGE_MARGIN = 0.1  # the outer 10% of a range (on its own scale) is its edge, whatever else was tried
EXTREME_MARGIN = 0.25  # the outer quarter is its edge too when the best is the last value tried that way
ISOLATION_BINS = 5  # a continuous scientific range is cut into this many equal bins on its scale
STABLE_FRACTION = 0.8  # is_big_enough: "stable" if the same best configuration wins >= 80% of resamples
LOG_LIST_RATIO = 10  # a list of positive numbers spanning >= 10x is read on a log scale (1e-5, 1e-4, ...)
FEW_FOR_IMPORTANCE = 50  # PED-ANOVA wants >= 5 trials in its top 10% (Optuna's docs): below 50, a hint only
STARVED_SHARE = 0.5  # a scientific value with fewer than half its fair share of the trials is starved
WORKER_DIED = "worker died"  # run_status of a FAIL trial nothing in it finished: its worker went silent
MEASURED = (TrialState.COMPLETE, TrialState.PRUNED)  # trials with a measured loss (inf for a diverged run)


# ---------------------------------------------------------------- the study's spec and trials

def study_spec(study: optuna.Study) -> dict:
    """The nbkit spec the study was made from ({} for a study made some other way)."""
    return dict(study.user_attrs.get(SPEC_ATTR) or {})


def is_usable(trial) -> bool:
    """A trial whose value can be compared: COMPLETE with a finite validation loss (a diverged run
    may come back COMPLETE with value inf; it has no usable value)."""
    return trial.state == TrialState.COMPLETE and trial.value is not None and math.isfinite(trial.value)


def usable_trials(study: optuna.Study) -> list:
    return [t for t in study.trials if is_usable(t)]


def best_trial(study: optuna.Study):
    """The usable trial with the lowest value (None if there is none). Not study.best_trial, which
    raises on an empty study and may return a diverged trial whose value is inf."""
    trials = usable_trials(study)
    return min(trials, key=lambda t: t.value) if trials else None


def run_status(trial) -> str:
    """The run's status as the study recorded it (user attr "run_status"), else read from the trial:
    "completed" or "diverged" (COMPLETE with a finite or an infinite value), "pruned", "failed" (FAIL
    with user attr "error": its code raised), "interrupted" (stopped by hand), "worker died" (FAIL with
    neither "error" nor "run_status": nothing in the trial ended it, so Optuna's heartbeat did when its
    worker fell silent, e.g. killed or out of memory), else the state in lower case ("running")."""
    status = trial.user_attrs.get("run_status")
    if status:
        return status
    if trial.state == TrialState.COMPLETE:
        return "completed" if trial.value is not None and math.isfinite(trial.value) else "diverged"
    if trial.state == TrialState.FAIL:
        error = trial.user_attrs.get("error")
        return WORKER_DIED if error is None else "interrupted" if error == "interrupted" else "failed"
    return "pruned" if trial.state == TrialState.PRUNED else trial.state.name.lower()


def compute_of(trial) -> int:
    """Epochs the trial trained: the unit of "compute used". An epoch-0 value (the base model's
    evaluation, if a study reports it) trains nothing and is not counted."""
    return sum(1 for epoch in trial.intermediate_values if epoch >= 1)


def _param_names(study: optuna.Study) -> list[str]:
    """Every param of any trial: the scientific knobs first, then the nuisance ones, then the rest."""
    spec = study_spec(study)
    ordered = list(spec.get("scientific", {})) + list(spec.get("nuisance", {}))
    seen = dict.fromkeys(name for t in study.trials for name in t.params)
    return [n for n in ordered if n in seen] + [n for n in seen if n not in ordered]


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """A row per trial: number, state, run_status, value (NaN when the trial has none), each param,
    epochs_reported (how many epochs have a validation loss), last_epoch (where a pruned trial was
    cut), best_reported (its lowest validation loss so far: what a pruned trial reached), compute
    (epochs trained), run_dir, duration_s and retry_of (the trial whose dead worker this one re-runs:
    Optuna's system attr "failed_trial"; None for a first run)."""
    names = _param_names(study)
    rows = []
    for t in study.trials:
        reported = t.intermediate_values
        row = {"number": t.number, "state": t.state.name, "run_status": run_status(t),
               "value": math.nan if t.value is None else float(t.value)}
        row.update({n: t.params.get(n) for n in names})
        row.update(epochs_reported=len(reported), last_epoch=max(reported) if reported else None,
                   best_reported=min(reported.values()) if reported else math.nan, compute=compute_of(t),
                   run_dir=t.user_attrs.get("run_dir"),
                   duration_s=t.duration.total_seconds() if t.duration is not None else math.nan,
                   retry_of=t.system_attrs.get("failed_trial"))
        rows.append(row)
    columns = ["number", "state", "run_status", "value"] + names + [
        "epochs_reported", "last_epoch", "best_reported", "compute", "run_dir", "duration_s", "retry_of"]
    table = pd.DataFrame(rows, columns=columns)
    table["retry_of"] = table["retry_of"].astype("Int64")  # a trial number or <NA>, not 7.0 / NaN
    return table


# ---------------------------------------------------------------- the searched space

def _domain_of(distribution):
    """A searched domain from an Optuna distribution: {low, high, log} for a range, a list for choices."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return list(distribution.choices)
    return {"low": distribution.low, "high": distribution.high, "log": bool(distribution.log)}


def _searched(domain) -> bool:
    """More than one value to choose from (a one-value "search" is a fixed knob)."""
    if isinstance(domain, dict):
        return domain["high"] > domain["low"]
    return len(set(map(repr, domain))) > 1


def search_space(study: optuna.Study) -> dict:
    """Each searched knob and its domain: a list of values (a grid or a choice) or {"low", "high",
    "log"} (a range). The spec's scientific and nuisance knobs come first and the spec wins (a grid
    may be sampled through a float distribution); params the spec does not name are read from the
    trials' distributions. Knobs with a single value and the spec's fixed knobs are left out."""
    spec = study_spec(study)
    space = {}
    for role in ("scientific", "nuisance"):
        for knob, domain in spec.get(role, {}).items():
            if isinstance(domain, dict) and not {"low", "high"} <= set(domain):
                raise ValueError(_("nbkit_spec[{role!r}][{knob!r}] = {domain!r}: a range needs 'low' and 'high' "
                                   "(and optionally 'log'); a grid is a list of values").format(
                    role=role, knob=knob, domain=domain))
            space[knob] = domain if isinstance(domain, dict) else list(domain)
    for trial in study.trials:
        for knob, distribution in trial.distributions.items():
            if knob not in space and knob not in spec.get("fixed", {}):
                space[knob] = _domain_of(distribution)
    return {knob: domain for knob, domain in space.items() if _searched(domain)}


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def is_numeric(domain) -> bool:
    """A range, or a list of numbers only (an ordered grid). Strings, booleans and None are categories."""
    return isinstance(domain, dict) or all(_is_number(v) for v in domain)


def bounds(domain) -> tuple[float, float]:
    """(low, high) of a numeric domain."""
    if isinstance(domain, dict):
        return float(domain["low"]), float(domain["high"])
    return float(min(domain)), float(max(domain))


def is_log_scale(domain) -> bool:
    """Read on a log scale: a range sampled with log=True, or a list of positive numbers spanning
    >= 10x (1e-5, 1e-4, 1e-3; LoRA ranks 4..64): their steps are ratios, not differences."""
    if not is_numeric(domain):
        return False
    if isinstance(domain, dict):
        return bool(domain.get("log"))
    low, high = bounds(domain)
    return low > 0 and high / low >= LOG_LIST_RATIO


def position_in(domain, value) -> float:
    """Where value lies between the domain's low (0) and high (1), on the domain's scale."""
    low, high = bounds(domain)
    if is_log_scale(domain):
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


# ---------------------------------------------------------------- edge warnings

def edge_warnings_by_knob(study: optuna.Study, margin: float = EDGE_MARGIN,
                          extreme_margin: float = EXTREME_MARGIN) -> dict[str, str]:
    """{knob: "<knob>: <warning>"}: edge_warning_texts' sentences, each naming its knob."""
    return {knob: _("{knob}: {warning}").format(knob=knob, warning=text)
            for knob, text in edge_warning_texts(study, margin, extreme_margin).items()}


def edge_warning_texts(study: optuna.Study, margin: float = EDGE_MARGIN,
                       extreme_margin: float = EXTREME_MARGIN) -> dict[str, str]:
    """{knob: warning} (the sentence without the knob's name: a knob panel's title names it) for each knob
    searched over a range ({low, high}) whose best trial sits at an edge of it. Positions are read on the
    range's own scale (0 = low, 1 = high; log for a log range), and the best value is at the edge of a side
    when it lies
      - in the outer `margin` of the range (10%): close to the end, whatever else was tried; or
      - in the outer `extreme_margin` (25%), with no trial that measured a loss (completed, diverged
        or pruned) beyond it on that side: the loss fell all the way to the last value tried that way,
        and nothing in the study shows it turning back up.
    Why the second rule: random and quasi-random sampling seldom land in the outer tenth (8 random
    trials leave it empty 43% of the time, 0.9^8), so a best at 85% of a log LR range that is also the
    largest LR tried used to pass in silence, while nothing said the optimum was inside the range.
    No warning at a knob's own limit (_can_widen: a warmup of 0 cannot go lower), for `seed` (a
    replicate, not a setting), or for a list of values: a list is a set of choices, and one of them
    always wins (list_winners says which, and by how much)."""
    best = best_trial(study)
    if best is None:
        return {}
    measured = [t for t in study.trials if t.state in MEASURED]
    warnings = {}
    for knob, domain in search_space(study).items():
        value = best.params.get(knob)
        if knob == "seed" or not isinstance(domain, dict) or not _is_number(value):
            continue
        where = position_in(domain, value)
        upward = where >= 0.5
        outer = 1 - where if upward else where  # how far in from the end it is nearest to, 0..0.5
        last_tried = not any(_is_number(t.params.get(knob)) and (t.params[knob] > value if upward
                                                                 else t.params[knob] < value) for t in measured)
        if (outer <= margin or (outer <= extreme_margin and last_tried)) and _can_widen(knob, domain, upward):
            warnings[knob] = _edge_sentence(domain, value, outer, upward, margin, last_tried)
    return warnings


def _can_widen(knob: str, domain, upward: bool) -> bool:
    """Whether the range could go further that way: not past a limit of the knob itself (a warmup
    ratio or a weight decay of 0 cannot be widened downward, a warmup ratio of 1 not upward). Asks
    TrainConfig, the one place that knows each field's allowed values; a knob TrainConfig does not
    have (a notebook's own parameter) counts as open."""
    low, high = bounds(domain)
    edge = high if upward else low
    if not upward and edge == 0 and not is_log_scale(domain):
        beyond = -abs(high) * 0.1 or -1.0
    else:
        step = abs(high - low) * 0.1 or abs(edge) * 0.1 or 1.0
        beyond = edge * 10 if is_log_scale(domain) and upward else edge / 10 if is_log_scale(domain) else (
            edge + step if upward else edge - step)
    if isinstance(edge, int) and not isinstance(edge, bool):
        beyond = int(round(beyond)) if round(beyond) != edge else edge + (1 if upward else -1)
    try:
        TrainConfig(**{knob: beyond})
    except TypeError:  # not a TrainConfig field
        return True
    except ValueError:
        return False
    return True


# The edge warning, a sentence per side and kind of edge (translated where used): {why} is EDGE_WHY's clause or "".
EDGE_SENTENCES = {
    ("at", True): N_("the best trial ({value}) sits at the top of the searched range [{low}, {high}]{why}; widen "
                     "the range upward before trusting it"),
    ("at", False): N_("the best trial ({value}) sits at the bottom of the searched range [{low}, {high}]{why}; "
                      "widen the range downward before trusting it"),
    ("near", True): N_("the best trial ({value}) sits near the top (within its outer {margin:.0%}, {scale}) of the "
                       "searched range [{low}, {high}]{why}; widen the range upward before trusting it"),
    ("near", False): N_("the best trial ({value}) sits near the bottom (within its outer {margin:.0%}, {scale}) of "
                        "the searched range [{low}, {high}]{why}; widen the range downward before trusting it"),
    ("last", True): N_("the best trial ({value}) is the largest value tried and sits in the top {outer:.0%} "
                       "({scale}) of the searched range [{low}, {high}]{why}; widen the range upward before "
                       "trusting it"),
    ("last", False): N_("the best trial ({value}) is the smallest value tried and sits in the bottom {outer:.0%} "
                        "({scale}) of the searched range [{low}, {high}]{why}; widen the range downward before "
                        "trusting it"),
}
EDGE_WHY = {True: N_(": nothing above it was tried, so the loss may still fall that way"),
            False: N_(": nothing below it was tried, so the loss may still fall that way")}


def _edge_sentence(domain, value, outer, upward, margin, last_tried) -> str:
    low, high = bounds(domain)
    scale = _("log scale") if is_log_scale(domain) else _("linear scale")
    edge = "at" if value in (low, high) or outer < 1e-9 else "near" if outer <= margin else "last"
    return _(EDGE_SENTENCES[edge, upward]).format(
        value=format_value(value), low=format_value(low), high=format_value(high), margin=margin, outer=outer,
        scale=scale, why=_(EDGE_WHY[upward]) if last_tried else "")


def edge_warnings(study: optuna.Study, margin: float = EDGE_MARGIN,
                  extreme_margin: float = EXTREME_MARGIN) -> list[str]:
    """The playbook's boundary check, in plain words: a best value at the edge of what was searched
    says the search space is too small, not that the edge is the optimum. One sentence per range
    knob (edge_warnings_by_knob has the rule); none for lists, `seed`, one-value knobs, or a study
    without a usable trial."""
    return list(edge_warnings_by_knob(study, margin, extreme_margin).values())


# ---------------------------------------------------------------- lists: which value won, which starved

def seed_band(study: optuna.Study) -> dict:
    """The seed's own noise in this study, when `seed` is a searched knob: the width (max - min) of
    the validation losses of usable trials that differ only by their seed (chapter 6's seed band),
    a configuration being the exact values of every other searched knob. Taken from the best
    configuration (the best trial's) when it ran at 2 seeds or more, else the median width over the
    configurations that did. Returns width (NaN when there is none), n_configs (how many
    configurations it comes from) and source (the same in words, or why there is no band)."""
    space = search_space(study)
    if "seed" not in space:
        return {"width": math.nan, "n_configs": 0, "source": _("seed is not a searched knob")}
    others = [k for k in space if k != "seed"]
    runs: dict[tuple, list] = {}
    for t in usable_trials(study):
        runs.setdefault(tuple(repr(t.params.get(k)) for k in others), []).append((t.params.get("seed"), t.value))
    seeded = {key: [v for _seed, v in pairs] for key, pairs in runs.items() if len({s for s, _value in pairs}) >= 2}
    best = best_trial(study)
    best_key = tuple(repr(best.params.get(k)) for k in others) if best else None
    if best_key in seeded:
        values = seeded[best_key]
        return {"width": max(values) - min(values), "n_configs": 1,
                "source": _("the best configuration over its {n} runs at different seeds").format(n=len(values))}
    if seeded:
        widths = [max(v) - min(v) for v in seeded.values()]
        return {"width": float(np.median(widths)), "n_configs": len(widths),
                "source": _("the median over {n} configuration(s) run at 2 seeds or more (the best configuration "
                            "ran at one)").format(n=len(widths))}
    return {"width": math.nan, "n_configs": 0, "source": _("no configuration ran at 2 seeds")}


def list_winners(study: optuna.Study) -> pd.DataFrame:
    """For each knob searched over a list of values (a grid, or choices such as lr_scheduler_type),
    `seed` aside: which value won and by how much. A list is a set of choices, so "the best is at the
    end of the list" is no warning (of two values one always wins); the margin, set against the
    seed's noise, is what says whether the win means anything. A row per knob: knob, winner (the
    best trial's value), winner_value (its validation loss), runner_up (the value with the next best
    loss; best per value as isolation(study, scientific=knob) takes it, the other knobs tuned away),
    runner_up_value, margin (runner_up_value - winner_value), seed_band and seed_band_source
    (seed_band(study): NaN unless seed is a knob and some configuration ran at 2 seeds),
    beyond_seed_band (margin > seed_band; None without a band), n_values (values with a usable
    trial), at_end ("largest" / "smallest": the winner ends an ordered list of 3 or more numbers
    that could go further, so nothing past it was tried; "" otherwise) and sentence (the row in words)."""
    band = seed_band(study)
    present = set(_param_names(study))
    rows = []
    for knob, domain in search_space(study).items():
        if knob == "seed" or isinstance(domain, dict) or knob not in present:
            continue
        table = isolation(study, scientific=knob)
        ranked = table[table["best_value"].notna()].sort_values("best_value", kind="stable")
        if ranked.empty:
            continue
        first = ranked.iloc[0]
        second = ranked.iloc[1] if len(ranked) > 1 else None
        margin = second["best_value"] - first["best_value"] if second is not None else math.nan
        row = {"knob": knob, "winner": first[knob], "winner_value": first["best_value"],
               "runner_up": second[knob] if second is not None else None,
               "runner_up_value": second["best_value"] if second is not None else math.nan, "margin": margin,
               "seed_band": band["width"], "seed_band_source": band["source"],
               "beyond_seed_band": None if math.isnan(band["width"]) or math.isnan(margin)
               else bool(margin > band["width"]),
               "n_values": len(ranked), "at_end": _list_end(knob, domain, first[knob])}
        row["sentence"] = _winner_sentence(row, [v for v in domain if repr(v) not in set(map(repr, ranked[knob]))])
        rows.append(row)
    columns = ["knob", "winner", "winner_value", "runner_up", "runner_up_value", "margin", "seed_band",
               "seed_band_source", "beyond_seed_band", "n_values", "at_end", "sentence"]
    return pd.DataFrame(rows, columns=columns).astype({"beyond_seed_band": object})  # True, False or None


def _list_end(knob, domain, winner) -> str:
    """ "largest" / "smallest" when the winner ends an ordered list of 3 or more numbers that the knob
    allows to go further (with two values, one of two always ends the list: nothing to say)."""
    if not is_numeric(domain) or len(set(domain)) < 3:
        return ""
    low, high = bounds(domain)
    if winner == high and _can_widen(knob, domain, upward=True):
        return "largest"
    if winner == low and _can_widen(knob, domain, upward=False):
        return "smallest"
    return ""


def _winner_sentence(row: dict, unusable: list) -> str:
    """The row in words: clauses joined by the punctuation each carries ("; the seed band is ...")."""
    text = _("{knob}: {winner} won (best validation loss {value:.4f})").format(
        knob=row["knob"], winner=format_value(row["winner"]), value=row["winner_value"])
    if row["runner_up"] is None:
        return text + (_(", the only value with a usable trial (none for {values})").format(
            values=", ".join(map(format_value, unusable))) if unusable else "")
    text += _(", {margin:.4f} below the runner-up {runner_up} ({value:.4f})").format(
        margin=row["margin"], runner_up=format_value(row["runner_up"]), value=row["runner_up_value"])
    if row["beyond_seed_band"] is not None:
        text += (_("; the seed band is {band:.4f} ({source}): the margin is beyond it") if row["beyond_seed_band"] else
                 _("; the seed band is {band:.4f} ({source}): the margin is within it, so the seed alone could have "
                   "made this winner")).format(band=row["seed_band"], source=row["seed_band_source"])
    else:
        text += _("; no seed band to judge the margin by ({source})").format(source=row["seed_band_source"])
    if row["at_end"]:
        text += _(AT_END[row["at_end"]])
    return text


AT_END = {"largest": N_("; it is the largest value listed: nothing past it was tried"),
          "smallest": N_("; it is the smallest value listed: nothing past it was tried")}


def starved_values(study: optuna.Study, share: float = STARVED_SHARE) -> pd.DataFrame:
    """How the trials fell on each scientific knob given as a list: a row per (knob, value) with
    n_trials (trials that drew the value, in any state: what the sampler gave it), n_usable (of
    them, completed with a finite loss), fair_share (the knob's trials / its number of values) and
    starved (n_trials < share * fair_share, half by default: that value's best rests on far fewer
    trials than the others', so the isolation comparison is not even). Values of the spec's list
    that no trial drew count with 0. Empty for a study without a scientific list, or before a trial
    drew one."""
    rows = []
    for knob, domain in study_spec(study).get("scientific", {}).items():
        if isinstance(domain, dict) or not _searched(domain):
            continue
        drew = [t for t in study.trials if knob in t.params]
        if not drew:  # nothing drawn yet: no share to judge
            continue
        values = list(dict.fromkeys([*domain, *(t.params[knob] for t in drew)]))
        fair = len(drew) / len(values)
        for value in values:
            mine = [t for t in drew if repr(t.params[knob]) == repr(value)]
            rows.append({"knob": knob, "value": value, "n_trials": len(mine),
                         "n_usable": sum(map(is_usable, mine)), "fair_share": fair,
                         "starved": len(mine) < share * fair})
    return pd.DataFrame(rows, columns=["knob", "value", "n_trials", "n_usable", "fair_share", "starved"])


def starved_warnings(study: optuna.Study, share: float = STARVED_SHARE) -> list[str]:
    """A sentence per scientific knob with starved values (starved_values), naming each one."""
    table = starved_values(study, share)
    sentences = []
    for knob, group in table.groupby("knob", sort=False):
        starved = group[group["starved"]]
        if starved.empty:
            continue
        got = ", ".join(_("{value} got {n}").format(value=format_value(r.value), n=r.n_trials)
                        for r in starved.itertuples())
        sentences.append(_("{knob}: starved values: {got} of the {n} trials, where a fair share is {fair:.1f} each "
                           "(fewer than {share:.0%} of that); their best losses rest on fewer trials than the "
                           "others', so the comparison is not even: run more trials before reading the isolation "
                           "table").format(knob=knob, got=got, n=int(group["n_trials"].sum()),
                                           fair=group["fair_share"].iloc[0], share=share))
    return sentences


# ---------------------------------------------------------------- isolation

def scientific_knobs(study: optuna.Study, scientific=None) -> list[str]:
    """The knobs the question is about: those given, else the spec's scientific knobs."""
    if scientific is None:
        spec = study_spec(study)
        scientific = list(spec.get("scientific", {}))
        if not scientific and spec:  # a tuning study: its answer is its best configuration
            raise ValueError(_("the study has no scientific knob: it tunes {knobs} and asks no question about a "
                               "knob, so there is nothing to isolate; pass scientific='KNOB' to see the best "
                               "validation loss per value of one of its knobs").format(knobs=_tuned(spec)))
        if not scientific:
            raise ValueError(_("scientific=None: the study has no nbkit_spec naming its scientific knobs; pass "
                               "scientific='learning_rate' (or a list)"))
    knobs = [scientific] if isinstance(scientific, str) else list(scientific)
    present = set(_param_names(study))
    for knob in knobs:
        if knob not in present:
            message = _("scientific={knob!r} is not a param of any of the {n} trials; allowed: {allowed}")
            raise ValueError(message.format(knob=knob, n=len(study.trials),
                                            allowed=", ".join(sorted(present)) or _("none (no trial has params yet)")))
    return knobs


def _tuned(spec: dict) -> str:
    return ", ".join(spec.get("nuisance", {})) or _("no knob")


def bin_edges(domain, bins: int = ISOLATION_BINS) -> np.ndarray:
    """bins equal bins on the domain's scale: log-spaced for a log range (each bin the same ratio
    wide, 1e-5..1e-4, 1e-4..1e-3, ...), evenly spaced otherwise."""
    low, high = bounds(domain)
    return np.geomspace(low, high, bins + 1) if is_log_scale(domain) else np.linspace(low, high, bins + 1)


def _binned(domain, values, bins) -> bool:
    """Bin a knob only when it was searched over a range and took more distinct values than bins:
    a grid sampled through a float range keeps its exact values."""
    return isinstance(domain, dict) and len(set(values)) > bins


def _bin_index(edges: np.ndarray, value: float) -> int:
    return int(np.clip(np.searchsorted(edges, value, side="right") - 1, 0, len(edges) - 2))


def _bin_label(edges: np.ndarray, i: int) -> str:
    return f"{edges[i]:.2g} to {edges[i + 1]:.2g}"


def _bin_center(edges: np.ndarray, i: int, log: bool) -> float:
    return float(math.sqrt(edges[i] * edges[i + 1]) if log else (edges[i] + edges[i + 1]) / 2)


def _groups(study, knob, values, bins):
    """For one knob's column of values: (group key per value, {key: (x, label or None)})."""
    domain = search_space(study).get(knob)
    present = [v for v in values if v is not None]
    if domain is None or not _binned(domain, present, bins):
        return list(values), {v: (v, None) for v in present}
    edges = bin_edges(domain, bins)
    keys = [None if v is None else _bin_index(edges, v) for v in values]
    log = is_log_scale(domain)
    return keys, {k: (_bin_center(edges, k, log), _bin_label(edges, k)) for k in set(keys) if k is not None}


def nuisance_knobs(study: optuna.Study, scientific: list[str]) -> list[str]:
    """The knobs tuned away: the spec's nuisance knobs, else every other searched knob."""
    spec_nuisance = list(study_spec(study).get("nuisance", {}))
    candidates = spec_nuisance or [k for k in search_space(study) if k not in scientific]
    present = set(_param_names(study))
    return [k for k in candidates if k in present and k not in scientific]


def isolation(study: optuna.Study, scientific=None, bins: int = ISOLATION_BINS) -> pd.DataFrame:
    """The playbook's isolation analysis: for each value of the scientific knob(s), the best
    validation loss over every usable trial with that value, whatever its nuisance knobs: the
    nuisance knobs are "tuned away" by taking the minimum over them. A row per scientific value
    (per combination, for several knobs), sorted by it: the value (for a binned range, the bin's
    centre, geometric on a log scale), `<knob>_bin` ("1e-05 to 3.2e-05") when binned, best_value
    (NaN when every trial there was pruned, failed or diverged), best_trial, n_trials (usable trials
    behind it), n_unusable (pruned, failed, diverged), each nuisance knob's winning value, and
    `nuisance` (the winners as one label). A continuous range with more distinct values than `bins`
    is cut into `bins` equal bins on its scale (log bins for a log range); a grid keeps its values.
    df.attrs: scientific, nuisance, binned (the knobs that were binned)."""
    knobs = scientific_knobs(study, scientific)
    nuisance = nuisance_knobs(study, knobs)
    trials = [t for t in study.trials if all(k in t.params for k in knobs)]
    keys, labels, binned = [], {}, []
    for knob in knobs:
        column, labels[knob] = _groups(study, knob, [t.params[knob] for t in trials], bins)
        keys.append(column)
        if any(label for _x, label in labels[knob].values()):
            binned.append(knob)
    by_key: dict[tuple, list] = {}
    for trial, key in zip(trials, zip(*keys)):
        by_key.setdefault(key, []).append(trial)
    rows = [_isolation_row(key, members, knobs, labels, binned, nuisance) for key, members in by_key.items()]
    columns = (knobs + [f"{k}_bin" for k in binned] +
               ["best_value", "best_trial", "n_trials", "n_unusable"] + nuisance + ["nuisance"])
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values(knobs, key=_sort_key).reset_index(drop=True)
    table.attrs.update(scientific=knobs, nuisance=nuisance, binned=binned)
    return table


def _sort_key(column: pd.Series) -> pd.Series:
    """Numbers in order; categories in the order they were first seen (kept as strings)."""
    if all(_is_number(v) for v in column):
        return column.astype(float)
    return column.map({v: i for i, v in enumerate(dict.fromkeys(column))})


def _isolation_row(key, members, knobs, labels, binned, nuisance) -> dict:
    usable = [t for t in members if is_usable(t)]
    best = min(usable, key=lambda t: t.value) if usable else None
    row = {knob: labels[knob][k][0] for knob, k in zip(knobs, key)}
    row.update({f"{knob}_bin": labels[knob][k][1] for knob, k in zip(knobs, key) if knob in binned})
    row.update(best_value=best.value if best else math.nan, best_trial=best.number if best else None,
               n_trials=len(usable), n_unusable=len(members) - len(usable))
    winners = {k: best.params.get(k) if best else None for k in nuisance}
    row.update(winners)
    row["nuisance"] = ", ".join(f"{k}={format_value(v)}" for k, v in winners.items() if v is not None)
    return row


# ---------------------------------------------------------------- importance

def importance(study: optuna.Study) -> dict[str, float]:
    """Which knobs mattered: optuna.importance.get_param_importances with its default evaluator
    (PED-ANOVA in Optuna 5: numpy only, no scikit-learn; it scores how differently a knob is
    distributed among the top 10% of trials than among all of them), on the usable trials and the
    params that vary among them. Normalised to sum to 1, most important first. Below
    FEW_FOR_IMPORTANCE trials (fewer than 5 in the top 10%, Optuna's own advice) read it as a hint
    (importance_hint says so). ValueError when there are fewer than 2 usable trials or no param
    varies: there is nothing to rank."""
    usable = usable_trials(study)
    if len(usable) < 2:
        raise ValueError(_("importance needs at least 2 completed trials with a finite validation loss; the study "
                           "has {n}").format(n=len(usable)))
    varying = [n for n in _param_names(study)
               if len({repr(t.params.get(n)) for t in usable}) > 1 and all(n in t.params for t in usable)]
    if not varying:
        raise ValueError(_("importance needs a param that varies between the {n} completed trials; none does "
                           "({params})").format(n=len(usable), params=", ".join(_param_names(study)) or _("no params")))
    scores = optuna.importance.get_param_importances(study, params=varying)
    return {knob: float(score) for knob, score in sorted(scores.items(), key=lambda kv: -kv[1])}


def importance_hint(n_trials: int) -> str:
    """Why importances from `n_trials` usable trials are only a hint ("" from FEW_FOR_IMPORTANCE on):
    the same words in the importance figure's title and in `study show`'s line."""
    if n_trials >= FEW_FOR_IMPORTANCE:
        return ""
    return _("few trials: a hint, not a ranking (its top 10% holds {n} trial(s); it wants >= 5, about {few} "
             "trials)").format(n=math.ceil(n_trials / 10), few=FEW_FOR_IMPORTANCE)


# ---------------------------------------------------------------- is the study big enough?

def _config_keys(study, trials, knobs, bins) -> list[tuple]:
    """A configuration per trial: its value of each knob, a continuous range read as its isolation
    bin (two trials in the same bin are the same configuration)."""
    columns = [_groups(study, knob, [t.params.get(knob) for t in trials], bins)[0] for knob in knobs]
    return list(zip(*columns)) if columns else [(t.number,) for t in trials]


def _config_label(study, trials, knobs, bins, key) -> str:
    parts = []
    for knob, k in zip(knobs, key):
        labels = _groups(study, knob, [t.params.get(knob) for t in trials], bins)[1]
        x, label = labels.get(k, (k, None))
        parts.append(_("{knob} in {bin}").format(knob=knob, bin=label) if label else f"{knob}={format_value(x)}")
    return ", ".join(parts) or _("trial {number}").format(number=key[0])


def is_big_enough(study: optuna.Study, n_boot: int = 1000, seed: int = 0, knobs=None,
                  threshold: float = STABLE_FRACTION, bins: int = ISOLATION_BINS) -> dict:
    """Is this study big enough to trust its best configuration? Bootstrap the usable trials:
    draw n_boot resamples (with replacement, as many trials as the study has), find the best
    trial of each, and count how often its configuration is the full study's best configuration.

    A configuration is the trial's values of `knobs` (default: every searched knob but `seed`,
    since seeds are replicates of one configuration), with a continuous range read as its
    isolation bin (`bins` equal bins on its scale). Why bins and not "the same trial": a given
    trial is missing from a resample with probability (1 - 1/n)^n, about 37%, so a best that rests
    on a single trial can win at most ~63% of resamples however far below the others it is; a
    configuration backed by several good trials (nearby values, or repeated seeds) wins far more.

    Returns: n_trials, n_boot, threshold, best_config (label), best_value, stability (fraction of
    resamples won by best_config), best_value_p5 / p50 / p95 (the resampled bests' percentiles),
    runners_up ([(label, fraction)] for the other winners, most frequent first), stable (stability
    >= threshold: the same winner in 4 resamples out of 5; below that, a new batch of trials has a
    fair chance of moving the winner) and verdict (one plain line)."""
    trials = usable_trials(study)
    if len(trials) < 2:
        return {"n_trials": len(trials), "n_boot": n_boot, "threshold": threshold, "stable": False,
                "stability": math.nan, "verdict": _("not big enough: {n} completed trial(s) with a finite validation "
                                                    "loss; a bootstrap needs at least 2").format(n=len(trials))}
    if knobs is None:
        knobs = [k for k in search_space(study) if k != "seed"]
    keys = _config_keys(study, trials, knobs, bins)
    values = np.array([t.value for t in trials], dtype=float)
    drawn = np.random.default_rng(seed).integers(0, len(trials), size=(n_boot, len(trials)))
    winners = drawn[np.arange(n_boot), np.argmin(values[drawn], axis=1)]
    full_key = keys[int(np.argmin(values))]
    counts = Counter(keys[i] for i in winners)
    stability = counts[full_key] / n_boot
    p5, p50, p95 = np.percentile(values[winners], [5, 50, 95])
    label = _config_label(study, trials, knobs, bins, full_key)
    result = {"n_trials": len(trials), "n_boot": n_boot, "threshold": threshold, "best_config": label,
              "best_value": float(values.min()), "stability": stability, "best_value_p5": float(p5),
              "best_value_p50": float(p50), "best_value_p95": float(p95),
              "runners_up": [(_config_label(study, trials, knobs, bins, k), n / n_boot)
                             for k, n in counts.most_common() if k != full_key],
              "stable": stability >= threshold}
    result["verdict"] = _verdict(result)
    return result


def _verdict(r: dict) -> str:
    spread = _("best validation loss {best:.4f} (resampled bests {p5:.4f} to {p95:.4f}, 5th-95th percentile)").format(
        best=r["best_value"], p5=r["best_value_p5"], p95=r["best_value_p95"])
    verdict = (_("big enough: the best configuration ({config}) wins {stability:.0%} of {n_boot} resamples of the "
                 "{n} trials (threshold {threshold:.0%}); {spread}") if r["stable"] else
               _("not big enough yet: the best configuration ({config}) wins only {stability:.0%} of {n_boot} "
                 "resamples of the {n} trials (threshold {threshold:.0%}); {spread}. Run more trials, or repeat the "
                 "best few configurations with new seeds"))
    return verdict.format(config=r["best_config"], stability=r["stability"], n_boot=r["n_boot"], n=r["n_trials"],
                          threshold=r["threshold"], spread=spread)


# ---------------------------------------------------------------- the whole report in words

def report_lines(study: optuna.Study) -> list[str]:
    """What `python -m nbkit study show` prints: the trials table, the best trial, the edge warnings,
    each list's winner, the starved scientific values, the isolation table, the importances (a hint
    below FEW_FOR_IMPORTANCE trials) and "is it big enough?". A part that cannot be computed for this
    study (no trial yet, no usable trial, no scientific knob) says why in its own line."""
    if not study.trials:
        return [_("study {name!r} has no trial yet: nothing to analyse (`python -m nbkit study run` adds its trials "
                  "and runs them)").format(name=study.study_name)]
    table = trials_table(study).drop(columns=["run_dir"])
    if table["retry_of"].isna().all():
        table = table.drop(columns=["retry_of"])
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 500):
        lines = [table.to_string(index=False), "", _best_line(study)]
        lines += [_("warning: {warning}").format(warning=w) for w in edge_warnings(study)]
        lines += [_("winner: {sentence}").format(sentence=s) for s in list_winners(study)["sentence"]]
        lines += [_("warning: {warning}").format(warning=w) for w in starved_warnings(study)]
        lines += _isolation_lines(study)
    return lines + ["", _importance_line(study),
                    _("big enough? {verdict}").format(verdict=is_big_enough(study)["verdict"])]


def _best_line(study) -> str:
    best = best_trial(study)
    if best is None:
        counts = Counter(run_status(t) for t in study.trials)
        return _("best: none yet, no completed trial with a finite validation loss ({counts})").format(
            counts=", ".join(f"{n} {status}" for status, n in counts.items()))
    params = ", ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
    return _("best: trial {number} ({params}), validation loss {value:.4f}").format(
        number=best.number, params=params, value=best.value)


def _isolation_lines(study) -> list[str]:
    spec = study_spec(study)
    if spec and not spec.get("scientific"):
        return ["", _("isolation: none, the study has no scientific knob: it tunes {knobs}, and its answer is the "
                      "best configuration above").format(knobs=_tuned(spec))]
    if not usable_trials(study):
        return ["", _("isolation: not computed, no completed trial with a finite validation loss yet")]
    try:
        table = isolation(study)
    except ValueError as err:
        return ["", _("isolation: not computed ({reason})").format(reason=err)]
    return ["", _("isolation: the best validation loss per scientific value, nuisance knobs tuned away"),
            table.to_string(index=False)]


def _importance_line(study) -> str:
    try:
        ranked = importance(study)
    except ValueError as err:
        return _("importance: not computed ({reason})").format(reason=err)
    if len(ranked) == 1:
        return _("importance: {knob} is the only knob that varies: nothing to rank it against").format(
            knob=next(iter(ranked)))
    hint = importance_hint(len(usable_trials(study)))
    scores = ", ".join(f"{k} {v:.2f}" for k, v in ranked.items())
    return (_("importance: {scores}; {hint}") if hint else _("importance: {scores}")).format(scores=scores, hint=hint)


# ---------------------------------------------------------------- compute saved by pruning

def compute_used(study: optuna.Study) -> int:
    """Epochs trained by all the study's trials, pruned and failed ones included (they cost too)."""
    return sum(compute_of(t) for t in study.trials)


def compute_saved(grid_study: optuna.Study, pruned_study: optuna.Study,
                  labels: tuple[str, str] = ("grid", "pruned")) -> dict:
    """Two studies of the same question, one run to the end (a grid) and one with a pruner (ASHA,
    Hyperband): the compute each used (epochs trained), their ratio, each one's best value, and the
    relative gap of the pruned study's best to the grid's (positive = worse). `labels` name them in
    the sentence, e.g. ("grid", "ASHA"). ValueError if the specs name different scientific knobs
    or a study has no usable trial."""
    _same_question(grid_study, pruned_study)
    grid_best, pruned_best = best_trial(grid_study), best_trial(pruned_study)
    for name, study, best in ((labels[0], grid_study, grid_best), (labels[1], pruned_study, pruned_best)):
        if best is None:
            raise ValueError(_("{label} study {name!r}: no completed trial with a finite validation loss").format(
                label=name, name=study.study_name))
    grid_compute, pruned_compute = compute_used(grid_study), compute_used(pruned_study)
    if grid_compute == 0:
        raise ValueError(_("{label} study {name!r}: no trial reported an epoch; compute is 0").format(
            label=labels[0], name=grid_study.study_name))
    result = {"grid_compute": grid_compute, "pruned_compute": pruned_compute,
              "compute_ratio": pruned_compute / grid_compute, "grid_best": grid_best.value,
              "pruned_best": pruned_best.value,
              "relative_gap": (pruned_best.value - grid_best.value) / abs(grid_best.value)}
    result["summary"] = _compute_sentence(result, labels)
    return result


def _same_question(a: optuna.Study, b: optuna.Study) -> None:
    first, second = list(study_spec(a).get("scientific", {})), list(study_spec(b).get("scientific", {}))
    if first and second and sorted(first) != sorted(second):
        raise ValueError(_("the studies ask different questions: scientific knobs {first} in {a!r}, {second} in "
                           "{b!r}").format(first=first, a=a.study_name, second=second, b=b.study_name))


def _compute_sentence(r: dict, labels) -> str:
    gap = r["relative_gap"]
    if abs(gap) < 5e-4:
        sentence = _("{grid} vs {pruned} at the same question: the {pruned} study used {ratio:.0%} of the {grid}'s "
                     "compute ({used} of {total} epochs) and its best ({best:.4g}) matches the {grid}'s best "
                     "({grid_best:.4g})")
    elif gap > 0:
        sentence = _("{grid} vs {pruned} at the same question: the {pruned} study used {ratio:.0%} of the {grid}'s "
                     "compute ({used} of {total} epochs) and its best ({best:.4g}) is within {gap:.1%} of the "
                     "{grid}'s best ({grid_best:.4g})")
    else:
        sentence = _("{grid} vs {pruned} at the same question: the {pruned} study used {ratio:.0%} of the {grid}'s "
                     "compute ({used} of {total} epochs) and its best ({best:.4g}) is {gap:.1%} below (better "
                     "than) the {grid}'s best ({grid_best:.4g})")
    return sentence.format(grid=labels[0], pruned=labels[1], ratio=r["compute_ratio"], used=r["pruned_compute"],
                           total=r["grid_compute"], best=r["pruned_best"], gap=abs(gap), grid_best=r["grid_best"])


# ---------------------------------------------------------------- the same pruner, other arrival orders

def replay_pruning(grid_study: optuna.Study, pruner: optuna.pruners.BasePruner, order: list) -> optuna.Study:
    """The grid's trials (`order`: some of grid_study's finished trials, in the order they are to arrive)
    told to a new in-memory study with `pruner`: each reports, epoch by epoch, the validation losses the
    grid measured until the pruner stops it, as one worker taking them one after another would. Nothing
    trains: a fine-tune's curve does not depend on the pruner watching it (chapter 8 checks that ASHA's
    finished trials give the grid's losses exactly), so the replay is what the pruner would have done."""
    study = quiet_create_study(pruner=pruner)
    study.set_user_attr(SPEC_ATTR, study_spec(grid_study))
    for measured in order:
        trial = study.ask()
        curve = sorted(measured.intermediate_values.items())
        last = curve[-1][0] if curve else None
        for epoch, loss in curve:
            trial.report(loss, epoch)
            if pruner_stops(trial, last_epoch=epoch == last):  # the live trial's rule
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, measured.value)
    return study


def pruning_over_orders(grid_study: optuna.Study, new_pruner, orders: int = 200, seed: int = 0) -> pd.DataFrame:
    """An asynchronous pruner (ASHA) judges each trial against those that reached a rung before it, so
    its result depends on the order the trials arrive in, which one live study samples once. This
    replays the grid's finished trials (replay_pruning) in `orders` random orders (random.Random(seed)),
    each with a fresh pruner from `new_pruner()` (Hyperband keeps state per study). A row per order:
    compute_ratio and relative_gap as compute_saved(grid, replay) gives them, and whether the replay's
    best value is the grid's best value (found; the finished trials replay the grid's values exactly)."""
    import random

    if orders < 1:
        raise ValueError(_("orders={orders}: replay at least one order").format(orders=orders))
    trials = [t for t in grid_study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not trials:
        raise ValueError(_("grid study {name!r}: no COMPLETE trial to replay").format(name=grid_study.study_name))
    rng, rows = random.Random(seed), []
    for i in range(orders):
        replay = replay_pruning(grid_study, new_pruner(), rng.sample(trials, len(trials)))
        r = compute_saved(grid_study, replay, labels=("grid", "replay"))
        rows.append({"order": i, "compute_ratio": r["compute_ratio"], "relative_gap": r["relative_gap"],
                     "found": r["relative_gap"] == 0})
    return pd.DataFrame(rows)


def orders_summary(table: pd.DataFrame, within: float = 0.02, share: float = 0.4) -> dict:
    """pruning_over_orders' table in a few numbers: the median share of the grid's compute (and its 10th
    and 90th percentiles), and the share of orders whose replay found the grid's best, came within
    `within` of it, and met the whole target (within `within` at no more than `share` of the compute)."""
    ratios, close = table["compute_ratio"], table["relative_gap"] <= within
    return {"median_share": float(ratios.median()), "share_10": float(ratios.quantile(0.1)),
            "share_90": float(ratios.quantile(0.9)), "found": float(table["found"].mean()),
            "within": float(close.mean()), "target_met": float((close & (ratios <= share)).mean())}
