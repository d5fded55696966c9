"""nbkit.core.study_analysis on small studies built by hand (optuna in memory, no training), each
with a known answer: a loss quadratic in log(learning_rate) whose minimum we place inside or
outside the searched range, grids whose per-value minima we compute by brute force here."""
import math

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from nbkit.core import study_analysis as sa

optuna.logging.set_verbosity(optuna.logging.WARNING)

LR_RANGE = (1e-5, 1e-2)
LR = FloatDistribution(*LR_RANGE, log=True)
WARMUP = FloatDistribution(0.0, 0.2)


def make_study(trials, spec=None):
    study = optuna.create_study(direction="minimize")
    if spec is not None:
        study.set_user_attr("nbkit_spec", spec)
    for t in trials:
        study.add_trial(t)
    return study


def trial(params, value=None, state=TrialState.COMPLETE, epochs=3, status=None, distributions=None):
    """A finished trial: `epochs` validation losses ending at `value` (or at 2.0 when it has none)."""
    distributions = distributions or {k: CategoricalDistribution(sorted({v}, key=str)) if isinstance(v, str)
                                      else LR if k == "learning_rate" else WARMUP for k, v in params.items()}
    last = value if value is not None and math.isfinite(value) else 2.0
    curve = {e: last + 0.1 * (epochs - e) for e in range(1, epochs + 1)}
    attrs = {"run_dir": f"runs/{len(params)}-{value}", **({"run_status": status} if status else {})}
    return create_trial(params=params, distributions=distributions, value=value, state=state,
                        intermediate_values=curve, user_attrs=attrs)


def quadratic_loss(lr, best_lr, warmup=0.05):
    """1 + (log10 lr - log10 best_lr)^2 / 4, plus a small warmup term with its minimum at 0.05."""
    return 1.0 + (math.log10(lr) - math.log10(best_lr)) ** 2 / 4 + 0.2 * (warmup - 0.05) ** 2


def random_lr_study(best_lr, n=30, seed=0):
    rng = np.random.default_rng(seed)
    lrs = 10 ** rng.uniform(math.log10(LR_RANGE[0]), math.log10(LR_RANGE[1]), n)
    warmups = rng.uniform(0.0, 0.2, n)
    spec = {"study_name": "lr", "scientific": {"learning_rate": {"low": LR_RANGE[0], "high": LR_RANGE[1], "log": True}},
            "nuisance": {"warmup_ratio": {"low": 0.0, "high": 0.2, "log": False}}, "fixed": {"seed": 0}}
    trials = [trial({"learning_rate": float(lr), "warmup_ratio": float(w)}, quadratic_loss(lr, best_lr, w))
              for lr, w in zip(lrs, warmups)]
    return make_study(trials, spec)


GRID_LRS = [1e-4, 3e-4, 1e-3]
GRID_WARMUPS = [0.0, 0.05, 0.1]


def grid_spec():
    return {"study_name": "grid", "scientific": {"learning_rate": GRID_LRS},
            "nuisance": {"warmup_ratio": GRID_WARMUPS}, "fixed": {"per_device_train_batch_size": 16}}


def grid_study(losses):
    """losses: {(lr, warmup): value, or a TrialState for a trial with no value}."""
    trials = []
    for (lr, w), loss in losses.items():
        params = {"learning_rate": lr, "warmup_ratio": w}
        if isinstance(loss, TrialState):
            trials.append(trial(params, None, state=loss, epochs=1))
        else:
            trials.append(trial(params, loss))
    return make_study(trials, grid_spec())


# ------------------------------------------------------------------ trials_table

def test_trials_table_has_a_row_per_trial_with_its_compute():
    trials = [trial({"learning_rate": 1e-4, "warmup_ratio": 0.1}, 1.5, epochs=4, status="completed"),
              trial({"learning_rate": 1e-3, "warmup_ratio": 0.0}, None, state=TrialState.PRUNED, epochs=1,
                    status="pruned"),
              trial({"learning_rate": 1e-2, "warmup_ratio": 0.0}, math.inf, epochs=2),  # diverged, no status
              trial({"learning_rate": 5e-3, "warmup_ratio": 0.2}, None, state=TrialState.FAIL, epochs=2)]
    study = make_study(trials)
    table = sa.trials_table(study)
    assert list(table["number"]) == [t.number for t in study.trials]
    assert list(table["state"]) == ["COMPLETE", "PRUNED", "COMPLETE", "FAIL"]
    assert list(table["run_status"]) == ["completed", "pruned", "diverged", "worker died"]  # FAIL, no "error"
    assert list(table["compute"]) == [len(t.intermediate_values) for t in study.trials]
    assert list(table["last_epoch"]) == [max(t.intermediate_values) for t in study.trials]
    assert table.loc[0, "value"] == 1.5 and math.isnan(table.loc[1, "value"]) and table.loc[2, "value"] == math.inf
    assert list(table["learning_rate"]) == [t.params["learning_rate"] for t in study.trials]
    assert list(table["run_dir"]) == [t.user_attrs["run_dir"] for t in study.trials]
    assert table.loc[1, "best_reported"] == min(study.trials[1].intermediate_values.values())
    assert (table["duration_s"] >= 0).all()


def fail(params, **user_attrs):
    return create_trial(params=params, distributions={"learning_rate": LR}, state=TrialState.FAIL,
                        intermediate_values={1: 2.0}, user_attrs=user_attrs)


def test_a_dead_worker_is_told_from_a_trial_that_raised_and_its_retry_names_it():
    """Optuna's heartbeat fails a trial whose worker died: FAIL with neither "error" nor "run_status";
    nbkit.core.study records "error" on a trial whose code raised, and RetryFailedTrialCallback's copy
    names the dead trial in system attr "failed_trial"."""
    study = make_study([fail({"learning_rate": 1e-4}),
                        fail({"learning_rate": 1e-3}, error="RuntimeError: out of memory"),
                        fail({"learning_rate": 1e-3}, error="interrupted")])
    study.add_trial(create_trial(params={"learning_rate": 1e-4}, distributions={"learning_rate": LR}, value=1.0,
                                 system_attrs={"failed_trial": 0}))
    assert [sa.run_status(t) for t in study.trials] == [sa.WORKER_DIED, "failed", "interrupted", "completed"]
    table = sa.trials_table(study)
    assert list(table["run_status"]) == ["worker died", "failed", "interrupted", "completed"]
    assert table["retry_of"].isna().tolist() == [True, True, True, False] and table.loc[3, "retry_of"] == 0
    shown = sa.report_lines(study)[0]  # the table `study show` prints
    assert "worker died" in shown and "retry_of" in shown


def test_epoch_zero_the_base_model_is_not_compute():
    t = create_trial(params={"learning_rate": 1e-4}, distributions={"learning_rate": LR}, value=1.0,
                     intermediate_values={0: 3.0, 1: 1.5, 2: 1.0})
    assert sa.trials_table(make_study([t])).loc[0, "compute"] == 2


# ------------------------------------------------------------------ edge warnings

def test_no_edge_warning_when_the_minimum_is_inside_the_range():
    study = random_lr_study(best_lr=3e-4, n=40)
    assert sa.edge_warnings(study) == []


@pytest.mark.parametrize("best_lr, side, way", [(1.0, "top", "upward"), (1e-8, "bottom", "downward")])
def test_a_minimum_outside_the_range_warns_naming_the_knob_and_side(best_lr, side, way):
    study = random_lr_study(best_lr=best_lr, n=40)
    warnings = sa.edge_warnings(study)
    assert len(warnings) == 1
    assert warnings[0].startswith("learning_rate:")
    assert side in warnings[0] and f"widen the range {way}" in warnings[0]
    best = sa.best_trial(study).params["learning_rate"]
    assert sa.format_value(best) in warnings[0]


def test_a_list_is_a_set_of_choices_never_an_edge():
    """One of a list's values always wins; its place in the list is no warning (list_winners says
    which value won; an ordered list of 3+ numbers says when nothing past the winner was listed)."""
    at_top = {(lr, w): quadratic_loss(lr, 1e-1, w) for lr in GRID_LRS for w in GRID_WARMUPS}
    assert sa.edge_warnings(grid_study(at_top)) == []
    winners = sa.list_winners(grid_study(at_top)).set_index("knob")
    assert winners.loc["learning_rate", "winner"] == 1e-3 and winners.loc["learning_rate", "at_end"] == "largest"
    assert "it is the largest value listed: nothing past it was tried" in winners.loc["learning_rate", "sentence"]
    two = {"scientific": {"warmup_ratio": [0.0, 0.1]}, "nuisance": {}, "fixed": {}}
    distributions = {"warmup_ratio": CategoricalDistribution([0.0, 0.1])}
    study = make_study([trial({"warmup_ratio": 0.0}, 2.0, distributions=distributions),
                        trial({"warmup_ratio": 0.1}, 1.0, distributions=distributions)], two)
    assert sa.edge_warnings(study) == []  # of two values one always ends the list
    assert sa.list_winners(study).loc[0, "at_end"] == ""


def test_a_best_that_is_the_largest_value_tried_in_the_outer_quarter_warns():
    """85% of the way up a log range, past the outer 10%: the rule's second half. It warns while no
    trial measured a loss above it, and stops once one did (the loss was seen to turn back up)."""
    lrs = [1e-5, 1e-4, 1e-3, 10 ** -2.45]  # the last at 85% of [1e-5, 1e-2] on the log scale
    falling = [trial({"learning_rate": lr}, 2.0 - i * 0.3) for i, lr in enumerate(lrs)]
    warnings = sa.edge_warnings_by_knob(make_study(falling))
    assert list(warnings) == ["learning_rate"]
    assert "is the largest value tried and sits in the top 15% (log scale)" in warnings["learning_rate"]
    assert "nothing above it was tried" in warnings["learning_rate"]
    assert "widen the range upward" in warnings["learning_rate"]
    for beyond in (trial({"learning_rate": 10 ** -2.2}, 1.5), trial({"learning_rate": 10 ** -2.2}, math.inf),
                   trial({"learning_rate": 10 ** -2.2}, None, state=TrialState.PRUNED)):
        assert sa.edge_warnings(make_study(falling + [beyond])) == [], beyond.state
    died = fail({"learning_rate": 10 ** -2.2})  # a dead worker measured nothing: still nothing above it
    assert list(sa.edge_warnings_by_knob(make_study(falling + [died]))) == ["learning_rate"]
    middle = [trial({"learning_rate": lr}, 2.0 - i * 0.3) for i, lr in enumerate(lrs[:3])]  # 67%: inside
    assert sa.edge_warnings(make_study(middle)) == []


def test_near_the_edge_counts_within_the_outer_tenth_on_the_log_scale():
    # 8e-3 in [1e-5, 1e-2] is 97% of the way up on a log scale, 1e-3 only 67%
    for lr, warned in ((8e-3, True), (1e-3, False)):
        trials = [trial({"learning_rate": lr}, 1.0), trial({"learning_rate": 1e-4}, 2.0)]
        warnings = sa.edge_warnings(make_study(trials))
        assert bool(warnings) == warned, (lr, warnings)
    trials = [trial({"learning_rate": 8e-3}, 1.0), trial({"learning_rate": 1e-4}, 2.0)]
    assert "near the top" in sa.edge_warnings(make_study(trials))[0]


@pytest.mark.parametrize("knob, domain, values, best, warned", [
    ("warmup_ratio", (0.0, 0.2, False), [0.0, 0.1, 0.2], 0.0, False),  # no warmup is the knob's own floor
    ("warmup_ratio", (0.0, 0.2, False), [0.0, 0.1, 0.2], 0.2, True),   # but more warmup could be tried
    ("warmup_ratio", (0.5, 1.0, False), [0.5, 0.75, 1.0], 1.0, False),  # all the steps: TrainConfig's ceiling
    ("lora_rank", (1, 64, True), [1, 8, 64], 1, False),                 # rank 0 is no adapter at all
    ("lora_rank", (1, 64, True), [1, 8, 64], 64, True),
    ("weight_decay", (0.0, 0.1, False), [0.0, 0.01, 0.1], 0.0, False),
    ("weight_decay", (0.001, 0.1, True), [0.001, 0.01, 0.1], 0.001, True)])
def test_an_edge_that_is_the_knobs_own_limit_gives_no_warning(knob, domain, values, best, warned):
    """Whether a range could be widened past its edge is TrainConfig's call (its allowed values)."""
    low, high, log = domain
    distributions = {knob: (IntDistribution if isinstance(low, int) else FloatDistribution)(low, high, log=log)}
    trials = [trial({knob: v}, 1.0 if v == best else 2.0 + i, distributions=distributions)
              for i, v in enumerate(values)]
    spec = {"scientific": {knob: {"low": low, "high": high, "log": log}}, "nuisance": {}, "fixed": {}}
    warnings = sa.edge_warnings(make_study(trials, spec))
    assert bool(warnings) == warned, warnings


def test_no_edge_warning_for_categories_or_single_values():
    spec = {"scientific": {"optim": ["adamw_torch", "sgd"]}, "nuisance": {"lora_rank": [8]}, "fixed": {}}
    distributions = {"optim": CategoricalDistribution(["adamw_torch", "sgd"]),
                     "lora_rank": CategoricalDistribution([8])}
    trials = [trial({"optim": o, "lora_rank": 8}, v, distributions=distributions)
              for o, v in (("adamw_torch", 2.0), ("sgd", 1.0))]  # the best is the last category: no matter
    assert sa.edge_warnings(make_study(trials, spec)) == []


def test_a_failed_or_diverged_trial_is_never_the_best():
    trials = [trial({"learning_rate": 1e-2}, math.inf), trial({"learning_rate": 3e-4}, 1.5),
              trial({"learning_rate": 1e-2}, None, state=TrialState.FAIL)]
    assert sa.best_trial(make_study(trials)).params["learning_rate"] == 3e-4
    assert sa.edge_warnings(make_study(trials)) == []


# ------------------------------------------------------------------ lists: winners, seed band, starved values

def seeded_study(losses, seeds=(0, 1, 2)):
    """warmup_ratio [0.0, 0.1] x seed: losses = {warmup: [loss per seed]} (None: that seed not run)."""
    spec = {"scientific": {"warmup_ratio": [0.0, 0.1]}, "nuisance": {"seed": list(seeds)}, "fixed": {}}
    distributions = {"warmup_ratio": CategoricalDistribution([0.0, 0.1]), "seed": CategoricalDistribution(list(seeds))}
    return make_study([trial({"warmup_ratio": w, "seed": s}, v, distributions=distributions)
                       for w, values in losses.items() for s, v in zip(seeds, values) if v is not None], spec)


def test_list_winners_names_the_winner_and_its_margin_over_the_runner_up():
    rng = np.random.default_rng(4)
    losses = {(lr, w): float(rng.uniform(1, 2)) for lr in GRID_LRS for w in GRID_WARMUPS}
    winners = sa.list_winners(grid_study(losses))
    assert list(winners.columns[:9]) == ["knob", "winner", "winner_value", "runner_up", "runner_up_value", "margin",
                                         "seed_band", "seed_band_source", "beyond_seed_band"]
    assert list(winners["knob"]) == ["learning_rate", "warmup_ratio"]
    for row in winners.itertuples():
        best = {}  # brute force: the best loss per value of this knob, whatever the other knob
        for (lr, w), v in losses.items():
            value = lr if row.knob == "learning_rate" else w
            best[value] = min(best.get(value, math.inf), v)
        ranked = sorted(best, key=best.get)
        assert (row.winner, row.runner_up) == (ranked[0], ranked[1])
        assert row.margin == pytest.approx(best[ranked[1]] - best[ranked[0]])
        assert math.isnan(row.seed_band) and row.beyond_seed_band is None
        assert row.sentence.startswith(f"{row.knob}: {sa.format_value(ranked[0])} won")
        assert "no seed band" in row.sentence


def test_a_margin_is_judged_by_the_seed_band_of_the_best_configuration():
    within = sa.list_winners(seeded_study({0.1: [1.00, 1.05, 1.10], 0.0: [1.02, 1.08, 1.12]}))
    assert list(within["knob"]) == ["warmup_ratio"]  # never "the best seed"
    row = within.iloc[0]
    assert row["winner"] == 0.1 and row["margin"] == pytest.approx(0.02)
    assert row["seed_band"] == pytest.approx(0.10) and row["beyond_seed_band"] is False
    assert "the seed alone could have made this winner" in row["sentence"]
    beyond = sa.list_winners(seeded_study({0.1: [1.00, 1.01, 1.02], 0.0: [1.20, 1.25, 1.30]})).iloc[0]
    assert beyond["margin"] == pytest.approx(0.20) and beyond["seed_band"] == pytest.approx(0.02)
    assert beyond["beyond_seed_band"] is True and "the margin is beyond it" in beyond["sentence"]


def test_the_seed_band_falls_back_to_the_configurations_run_at_two_seeds():
    alone = seeded_study({0.1: [1.00, None, None], 0.0: [1.20, 1.30, 1.24]})  # the best ran at one seed
    band = sa.seed_band(alone)
    assert band["width"] == pytest.approx(0.10) and band["n_configs"] == 1 and "median" in band["source"]
    none = sa.seed_band(seeded_study({0.1: [1.00, None, None], 0.0: [None, 1.30, None]}))
    assert math.isnan(none["width"]) and none["source"] == "no configuration ran at 2 seeds"
    assert sa.seed_band(grid_study({(1e-4, 0.0): 1.0}))["source"] == "seed is not a searched knob"


def test_starved_values_are_those_with_less_than_half_their_fair_share():
    spec = {"scientific": {"warmup_ratio": [0.0, 0.1, 0.3]}, "nuisance": {}, "fixed": {}}
    distributions = {"warmup_ratio": CategoricalDistribution([0.0, 0.1, 0.3])}
    drawn = [0.0] * 5 + [0.1] * 5 + [0.3]
    trials = [trial({"warmup_ratio": w}, 1.0 + i / 100, distributions=distributions) for i, w in enumerate(drawn)]
    trials.append(trial({"warmup_ratio": 0.3}, None, state=TrialState.FAIL, distributions=distributions))
    table = sa.starved_values(make_study(trials, spec)).set_index("value")  # 12 trials, a fair share of 4
    assert list(table["n_trials"]) == [5, 5, 2] and list(table["n_usable"]) == [5, 5, 1]
    assert (table["fair_share"] == 4).all() and list(table["starved"]) == [False, False, False]  # 2 is half
    table = sa.starved_values(make_study(trials[:-1], spec)).set_index("value")  # 11 trials: 0.3 got 1 < 1.83
    assert list(table["starved"]) == [False, False, True]
    (sentence,) = sa.starved_warnings(make_study(trials[:-1], spec))
    assert sentence.startswith("warmup_ratio: starved values: 0.3 got 1 of the 11 trials, where a fair share is 3.7")
    assert sa.starved_values(make_study(trials, grid_spec())).empty  # no scientific list drawn


def test_a_value_no_trial_drew_is_starved():
    spec = {"scientific": {"optim": ["adamw_torch", "sgd"]}, "nuisance": {}, "fixed": {}}
    distributions = {"optim": CategoricalDistribution(["adamw_torch", "sgd"])}
    study = make_study([trial({"optim": "adamw_torch"}, 1.0 + i / 10, distributions=distributions)
                        for i in range(4)], spec)
    table = sa.starved_values(study)
    assert list(table["value"]) == ["adamw_torch", "sgd"] and list(table["n_trials"]) == [4, 0]
    assert list(table["starved"]) == [False, True]


# ------------------------------------------------------------------ isolation

def test_isolation_takes_the_minimum_over_nuisance_values_per_scientific_value():
    rng = np.random.default_rng(1)
    losses = {(lr, w): float(rng.uniform(1, 2)) for lr in GRID_LRS for w in GRID_WARMUPS}
    losses[(1e-3, 0.1)] = TrialState.PRUNED  # pruned: no value, but counted as unusable
    table = sa.isolation(grid_study(losses))
    assert list(table["learning_rate"]) == sorted(GRID_LRS)
    for _, row in table.iterrows():
        mine = {w: v for (lr, w), v in losses.items() if lr == row["learning_rate"] and not isinstance(v, TrialState)}
        winner = min(mine, key=mine.get)
        assert row["best_value"] == mine[winner]
        assert row["warmup_ratio"] == winner
        assert f"warmup_ratio={sa.format_value(winner)}" == row["nuisance"]
        assert row["n_trials"] == len(mine)
        assert row["n_trials"] + row["n_unusable"] == len(GRID_WARMUPS)
    assert table.attrs["scientific"] == ["learning_rate"] and table.attrs["nuisance"] == ["warmup_ratio"]


def test_isolation_keeps_a_scientific_value_where_every_trial_failed():
    losses = {(lr, w): 1.0 + lr for lr in GRID_LRS for w in GRID_WARMUPS}
    for w in GRID_WARMUPS:
        losses[(1e-3, w)] = TrialState.FAIL
    table = sa.isolation(grid_study(losses)).set_index("learning_rate")
    assert math.isnan(table.loc[1e-3, "best_value"]) and table.loc[1e-3, "n_trials"] == 0
    assert table.loc[1e-3, "n_unusable"] == len(GRID_WARMUPS)


def test_isolation_bins_a_continuous_range_on_its_log_scale():
    study = random_lr_study(best_lr=3e-4, n=40)
    table = sa.isolation(study, bins=4)
    edges = np.geomspace(*LR_RANGE, 5)
    assert table.attrs["binned"] == ["learning_rate"]
    assert len(table) <= 4 and table["n_trials"].sum() == 40
    for _, row in table.iterrows():
        i = int(np.searchsorted(edges, row["learning_rate"]) - 1)  # the centre lies inside its bin
        inside = [t for t in study.trials if edges[i] <= t.params["learning_rate"] < edges[i + 1]
                  or (i == 3 and t.params["learning_rate"] == edges[4])]
        assert row["best_value"] == min(t.value for t in inside)
        assert row["n_trials"] == len(inside)
        assert edges[i] < row["learning_rate"] < edges[i + 1]
    assert table["best_value"].idxmin() == table.index[
        np.argmin(np.abs(np.log(table["learning_rate"]) - math.log(3e-4)))]  # the optimum's bin wins


def test_isolation_needs_to_know_the_scientific_knob():
    study = make_study([trial({"learning_rate": 1e-4}, 1.0)])  # no spec
    with pytest.raises(ValueError, match="scientific"):
        sa.isolation(study)
    assert list(sa.isolation(study, scientific="learning_rate")["best_value"]) == [1.0]
    with pytest.raises(ValueError, match="weight_decay"):
        sa.isolation(study, scientific="weight_decay")


def test_a_tuning_study_says_it_has_no_scientific_knob():
    spec = {"scientific": {}, "nuisance": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}}, "fixed": {}}
    study = make_study([trial({"learning_rate": 1e-4}, 1.0), trial({"learning_rate": 1e-3}, 0.9)], spec)
    with pytest.raises(ValueError, match="no scientific knob: it tunes learning_rate"):
        sa.isolation(study)
    lines = sa.report_lines(study)
    assert "isolation: none, the study has no scientific knob: it tunes learning_rate" in "\n".join(lines)
    assert "best: trial 1 (learning_rate=0.001), validation loss 0.9000" in lines


# ------------------------------------------------------------------ importance

def test_importance_ranks_the_knob_that_matters_first():
    study = random_lr_study(best_lr=3e-4, n=60, seed=2)  # warmup moves the loss by < 0.01, lr by ~1
    scores = sa.importance(study)
    assert list(scores)[0] == "learning_rate"
    assert set(scores) == {"learning_rate", "warmup_ratio"}
    assert scores["learning_rate"] > scores["warmup_ratio"]
    assert math.isclose(sum(scores.values()), 1.0)


def test_importance_refuses_what_it_cannot_rank():
    with pytest.raises(ValueError, match="at least 2 completed"):
        sa.importance(make_study([trial({"learning_rate": 1e-4}, 1.0),
                                  trial({"learning_rate": 1e-3}, math.inf)]))
    with pytest.raises(ValueError, match="varies"):
        sa.importance(make_study([trial({"learning_rate": 1e-4}, 1.0), trial({"learning_rate": 1e-4}, 1.2)]))


def importance_line(study):
    return next(line for line in sa.report_lines(study) if line.startswith("importance"))


def test_importance_from_few_trials_is_a_hint_in_words_as_in_the_figure():
    few = random_lr_study(best_lr=3e-4, n=sa.FEW_FOR_IMPORTANCE - 1)
    assert importance_line(few).endswith("; " + sa.importance_hint(sa.FEW_FOR_IMPORTANCE - 1))
    assert "a hint, not a ranking (its top 10% holds 5 trial(s); it wants >= 5" in sa.importance_hint(49)
    enough = random_lr_study(best_lr=3e-4, n=sa.FEW_FOR_IMPORTANCE)
    assert sa.importance_hint(sa.FEW_FOR_IMPORTANCE) == "" and "hint" not in importance_line(enough)
    assert importance_line(enough).startswith("importance: learning_rate ")


# ------------------------------------------------------------------ is the study big enough?

def lr_only_study(lrs_and_losses):
    spec = {"scientific": {"learning_rate": {"low": LR_RANGE[0], "high": LR_RANGE[1], "log": True}},
            "nuisance": {}, "fixed": {}}
    return make_study([trial({"learning_rate": float(lr)}, float(v)) for lr, v in lrs_and_losses], spec)


def test_a_best_region_far_below_the_rest_is_stable():
    rng = np.random.default_rng(3)
    good = [(lr, 1.0 + rng.uniform(0, 0.01)) for lr in rng.uniform(2e-4, 5e-4, 8)]  # one log bin
    rest = [(lr, 3.0 + rng.uniform(0, 1)) for lr in 10 ** rng.uniform(-5, -2, 22)]
    result = sa.is_big_enough(lr_only_study(good + rest), n_boot=500)
    assert result["stable"] and result["stability"] >= result["threshold"]
    assert result["verdict"].startswith("big enough")
    assert result["best_value_p95"] < 2.0  # the resampled bests stay in the good region
    assert result["best_value"] <= result["best_value_p5"] <= result["best_value_p50"] <= result["best_value_p95"]


def test_near_ties_spread_over_the_range_are_not_stable():
    rng = np.random.default_rng(4)
    tied = [(lr, 1.0 + rng.uniform(0, 1e-3)) for lr in 10 ** rng.uniform(-5, -2, 20)]
    result = sa.is_big_enough(lr_only_study(tied), n_boot=500)
    assert not result["stable"] and result["stability"] < result["threshold"]
    assert result["verdict"].startswith("not big enough")
    assert result["runners_up"] and sum(f for _, f in result["runners_up"]) + result["stability"] == pytest.approx(1)


def test_a_lone_best_trial_wins_only_the_resamples_that_draw_it():
    # one trial per grid configuration: the best is absent from (1 - 1/n)^n of the resamples
    losses = {(lr, w): 2.0 + lr * 1000 + w for lr in GRID_LRS for w in GRID_WARMUPS}
    losses[(3e-4, 0.05)] = 0.5
    result = sa.is_big_enough(grid_study(losses), n_boot=2000, seed=1)
    n = len(losses)
    assert result["stability"] == pytest.approx(1 - (1 - 1 / n) ** n, abs=0.04)
    assert result["best_config"] == "learning_rate=0.0003, warmup_ratio=0.05"


def test_seeds_are_replicates_of_one_configuration():
    spec = grid_spec()
    spec["nuisance"]["seed"] = [0, 1, 2]
    rng = np.random.default_rng(5)
    trials = [trial({"learning_rate": lr, "warmup_ratio": w, "seed": s},
                    (0.5 if (lr, w) == (3e-4, 0.05) else 2.0) + rng.uniform(0, 0.1),
                    distributions={"learning_rate": CategoricalDistribution(GRID_LRS),
                                   "warmup_ratio": CategoricalDistribution(GRID_WARMUPS),
                                   "seed": CategoricalDistribution([0, 1, 2])})
              for lr in GRID_LRS for w in GRID_WARMUPS for s in range(3)]
    study = make_study(trials, spec)
    result = sa.is_big_enough(study, n_boot=500)
    assert result["stable"] and "seed" not in result["best_config"]
    assert sa.is_big_enough(study, n_boot=500) == result  # same seed, same answer
    with_seed = sa.is_big_enough(study, n_boot=500, knobs=["learning_rate", "warmup_ratio", "seed"])
    assert with_seed["stability"] < result["stability"]


def test_one_trial_is_not_big_enough():
    result = sa.is_big_enough(make_study([trial({"learning_rate": 1e-4}, 1.0)]))
    assert not result["stable"] and "at least 2" in result["verdict"]


def test_a_study_without_trials_says_so():
    study = make_study([], grid_spec())
    assert sa.report_lines(study) == [f"study {study.study_name!r} has no trial yet: nothing to analyse "
                                      "(`python -m nbkit study run` adds its trials and runs them)"]
    assert sa.list_winners(study).empty and sa.starved_values(study).empty and sa.edge_warnings(study) == []


# ------------------------------------------------------------------ compute saved

def test_compute_saved_compares_epochs_and_bests():
    full = {(lr, w): quadratic_loss(lr, 3e-4, w) for lr in GRID_LRS for w in GRID_WARMUPS}
    grid = make_study([trial({"learning_rate": lr, "warmup_ratio": w}, v, epochs=6) for (lr, w), v in full.items()],
                      grid_spec())
    kept = [(3e-4, 0.05), (1e-4, 0.05)]  # the pruner let these two finish; it cut the rest after 1 or 2 epochs
    pruned_trials, cut_epochs = [], {}
    for i, ((lr, w), v) in enumerate(full.items()):
        params = {"learning_rate": lr, "warmup_ratio": w}
        if (lr, w) in kept:
            pruned_trials.append(trial(params, v + 0.01, epochs=6))
        else:
            cut_epochs[(lr, w)] = 1 + i % 2
            pruned_trials.append(trial(params, None, state=TrialState.PRUNED, epochs=cut_epochs[(lr, w)]))
    asha = make_study(pruned_trials, grid_spec())
    result = sa.compute_saved(grid, asha, labels=("grid", "ASHA"))
    assert result["grid_compute"] == 6 * len(full)
    assert result["pruned_compute"] == 6 * len(kept) + sum(cut_epochs.values())
    assert result["compute_ratio"] == pytest.approx(result["pruned_compute"] / result["grid_compute"])
    assert result["grid_best"] == min(full.values())
    assert result["pruned_best"] == min(full[k] for k in kept) + 0.01
    assert result["relative_gap"] == pytest.approx((result["pruned_best"] - result["grid_best"]) / result["grid_best"])
    assert result["relative_gap"] > 0
    assert f"used {result['compute_ratio']:.0%} of the grid's compute" in result["summary"]
    assert f"within {result['relative_gap']:.1%}" in result["summary"] and "ASHA" in result["summary"]


def test_compute_saved_refuses_different_questions():
    other = grid_spec()
    other["scientific"] = {"warmup_ratio": GRID_WARMUPS}
    other["nuisance"] = {"learning_rate": GRID_LRS}
    a = make_study([trial({"learning_rate": 1e-4, "warmup_ratio": 0.0}, 1.0)], grid_spec())
    b = make_study([trial({"learning_rate": 1e-4, "warmup_ratio": 0.0}, 1.0)], other)
    with pytest.raises(ValueError, match="different questions"):
        sa.compute_saved(a, b)


# ------------------------------------------------------------------ the same pruner, other arrival orders

LATE_BLOOMER = {1: 3.0, 2: 1.5, 3: 0.5}  # worst after one epoch, best at the end (a long warmup, say)
EARLY = [{1: 1.0, 2: 0.95, 3: 0.9}, {1: 1.1, 2: 1.05, 3: 1.0}, {1: 1.2, 2: 1.15, 3: 1.1}]  # good at once, then flat


def curve_trial(lr, curve):
    return create_trial(params={"learning_rate": lr}, distributions={"learning_rate": LR}, value=min(curve.values()),
                        intermediate_values=curve, user_attrs={"run_dir": f"runs/{lr}"})


def late_bloomer_grid():
    """Four configurations: three good after one epoch, one (lr 1e-2) that starts worst and ends best."""
    trials = [curve_trial(1e-2, LATE_BLOOMER)] + [curve_trial(lr, c) for lr, c in zip([1e-5, 1e-4, 1e-3], EARLY)]
    return make_study(trials, {"study_name": "g", "scientific": {"learning_rate": [1e-5, 1e-4, 1e-3, 1e-2]}})


def asha():  # as nbkit.core.study.make_pruner builds it for pruner "asha": rungs at epochs 1 and 3
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)


def test_a_replay_keeps_the_late_bloomer_only_when_it_arrives_first():
    grid = late_bloomer_grid()
    late, early = grid.trials[0], grid.trials[1:]
    first = sa.replay_pruning(grid, asha(), [late] + early)
    assert first.trials[0].state == TrialState.COMPLETE and first.trials[0].value == 0.5  # nothing to compare it with
    assert sa.best_trial(first).value == 0.5
    last = sa.replay_pruning(grid, asha(), early + [late])
    assert last.trials[-1].state == TrialState.PRUNED and list(last.trials[-1].intermediate_values) == [1]
    assert [t.state for t in last.trials[1:3]] == [TrialState.PRUNED] * 2  # worse at epoch 1 than the first
    assert sa.best_trial(last).value == 0.9
    assert sa.compute_used(last) == 3 + 1 + 1 + 1  # the first early trial runs to the end, the rest stop at epoch 1
    assert sa.compute_used(grid) == 12  # the grid itself is left as it was


def test_a_replay_never_prunes_a_trial_at_its_last_epoch():
    """As a live study: a rung at a trial's last epoch would drop a result whose compute is spent."""
    trials = [curve_trial(lr, {1: loss}) for lr, loss in zip([1e-5, 1e-4, 1e-3], [1.0, 2.0, 3.0])]
    grid = make_study(trials, {"study_name": "g1", "scientific": {"learning_rate": [1e-5, 1e-4, 1e-3]}})
    # the worse ones arrive after the best: halving would cut them
    replay = sa.replay_pruning(grid, asha(), grid.trials)
    assert [t.state for t in replay.trials] == [TrialState.COMPLETE] * 3
    assert [t.value for t in replay.trials] == [1.0, 2.0, 3.0]


def test_pruning_over_orders_finds_the_late_bloomer_as_often_as_it_arrives_first():
    grid = late_bloomer_grid()
    table = sa.pruning_over_orders(grid, asha, orders=400, seed=3)
    assert len(table) == 400 and list(table["order"]) == list(range(400))
    assert (table["found"] == (table["relative_gap"] == 0)).all()
    assert 0.17 < table["found"].mean() < 0.33  # it survives epoch 1 only as the first of four: 1 order in 4
    assert set(table.loc[~table["found"], "relative_gap"].round(6)) == {round((0.9 - 0.5) / 0.5, 6)}
    assert table["compute_ratio"].between(6 / 12, 1).all()
    assert table.equals(sa.pruning_over_orders(grid, asha, orders=400, seed=3))  # the seed fixes the orders


def test_pruning_over_orders_refuses_nothing_to_replay():
    with pytest.raises(ValueError, match="orders=0"):
        sa.pruning_over_orders(late_bloomer_grid(), asha, orders=0)
    failed = make_study([trial({"learning_rate": 1e-4}, None, state=TrialState.FAIL)], grid_spec())
    with pytest.raises(ValueError, match="no COMPLETE trial"):
        sa.pruning_over_orders(failed, asha)


def test_orders_summary_counts_the_orders_that_found_came_close_and_met_the_target():
    table = pd.DataFrame({"compute_ratio": [0.3, 0.5, 0.35, 0.6], "relative_gap": [0.0, 0.0, 0.015, 0.3]})
    table["found"] = table["relative_gap"] == 0
    s = sa.orders_summary(table, within=0.02, share=0.4)
    assert s["found"] == 2 / 4 and s["within"] == 3 / 4  # orders 0, 1 exact; order 2 within 2%
    assert s["target_met"] == 2 / 4  # orders 0 and 2: close and cheap; order 1 is close but costs 50%
    assert s["median_share"] == table["compute_ratio"].median()
    assert s["share_10"] <= s["median_share"] <= s["share_90"]
    assert sa.orders_summary(table, within=0.5, share=1.0)["target_met"] == 1.0


def test_the_report_reads_in_chinese():
    """In Chinese (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): `study show`'s lines, an edge warning and the
    verdict; the tables' column names and the status values stay English."""
    from nbkit.core.i18n import set_language

    study = random_lr_study(best_lr=1.0, n=40)  # the best at the top of the range: an edge warning
    set_language("zh")
    try:
        (warning,) = sa.edge_warnings(study)
        assert warning.startswith("learning_rate：最佳试验（") and "先向上扩大范围" in warning
        lines = sa.report_lines(study)
        assert any(line.startswith("最佳：试验 ") for line in lines)
        assert f"警告：{warning}" in lines
        assert lines[-1].startswith("足够大吗？")
        assert "run_status" in lines[0]  # the trials table's columns
    finally:
        set_language("en")
    assert sa.edge_warnings(study)[0].startswith("learning_rate: the best trial (")
