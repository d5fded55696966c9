"""nbkit.labs.ch08_studies: the chapter's question as a grid study and an ASHA study per seed, run by
run_seed_studies, and the tables its checks read (slots_table, asha_table, order_table, importance_table),
on real tiny studies (2 warmups x 2 LRs, 3 epochs, two seeds: seconds) or, where a table must be seen to
fail, on a study built by hand. Each table's numbers are recomputed here from the trials themselves."""
from types import SimpleNamespace

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from nbkit.core.runs import load_run
from nbkit.core.study import SPEC_ATTR, StudySpec
from nbkit.labs.ch08_studies import (asha_table, cited_runs, export_llamafactory, importance_table, order_table,
                                     question_specs, run_seed_studies, slots_table, spec_yaml, storage_url,
                                     write_best_config)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process trials: 2 threads on busy cores spin
SEEDS = (0, 1)
# the notebook's parameters, shrunk: 1e-6 barely learns, so the LR matters and ASHA has something to cut
P = SimpleNamespace(model="tiny", dataset="arithmetic", max_samples=80, num_train_epochs=3, batch_size=16,
                    lr_scheduler_type="linear", warmup_ratios=[0.0, 0.1], learning_rates=[1e-6, 3e-3],
                    reduction_factor=2)
N_TRIALS = len(P.warmup_ratios) * len(P.learning_rates)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ch08")


@pytest.fixture(scope="module")
def studies(runs_dir, one_torch_thread):
    return run_seed_studies(P, runs_dir, SEEDS, workers=1)  # one worker: in this process


def finished(study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_the_question_is_one_grid_asked_twice_with_and_without_asha(tmp_path):
    specs = question_specs(P, tmp_path, seed=7)
    grid, asha = specs["grid"], specs["asha"]
    for spec in (grid, asha):
        spec.check()
        assert spec.sampler == "grid" and spec.trial_count() == N_TRIALS
        assert spec.base["seed"] == 7 and "_s7" in spec.study_name
        assert spec.storage == storage_url(tmp_path) and spec.storage.endswith(f"{tmp_path}/studies.db")
    assert (grid.scientific, grid.nuisance, grid.fixed) == (asha.scientific, asha.nuisance, asha.fixed)
    assert grid.pruner == "none" and asha.pruner == "asha"
    assert asha.pruner_settings == {"reduction_factor": P.reduction_factor}
    assert grid.study_name != asha.study_name and grid.output_dir != asha.output_dir
    assert question_specs(P, tmp_path, seed=8)["grid"].study_name != grid.study_name  # a study per seed


def test_spec_yaml_is_the_question_without_where_it_is_stored(tmp_path):
    spec = question_specs(P, tmp_path, seed=7)["asha"]
    written = yaml.safe_load(spec_yaml(spec))
    assert "storage" not in written and "output_dir" not in written
    assert {k: spec.to_dict()[k] for k in written} == written
    assert StudySpec.from_dict(written).grid_points() == spec.grid_points()  # `study run` reads the same question


def test_every_study_ends_with_its_trials_each_with_its_run_in_the_store(studies):
    slots = slots_table(studies)
    assert sorted(zip(slots["seed"], slots["study"])) == sorted((s, k) for s in SEEDS for k in ("grid", "asha"))
    assert slots["holds"].all()
    assert (slots["n_trials"] == N_TRIALS).all() and (slots["trials"] == N_TRIALS).all()
    assert (slots["complete"] + slots["pruned"] == N_TRIALS).all() and (slots["other"] == 0).all()
    assert (slots.loc[slots["study"] == "grid", "pruned"] == 0).all()
    for _, row in slots.iterrows():
        study = studies[row["seed"]][row["study"]]
        assert row["pruned"] == len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))


def by_hand(tmp_path, run_dirs, n_trials=2) -> optuna.Study:
    """A study as run_seed_studies leaves one, but its trials' run folders are `run_dirs`."""
    tmp_path.mkdir(exist_ok=True)
    study = optuna.create_study(study_name="by_hand", storage=f"sqlite:///{tmp_path}/by_hand.db")
    study.set_user_attr(SPEC_ATTR, {"n_trials": n_trials, "base": {"num_train_epochs": 3}})
    for i, run_dir in enumerate(run_dirs):
        study.add_trial(create_trial(params={"learning_rate": 1e-3 * (i + 1)},
                                     distributions={"learning_rate": FloatDistribution(1e-4, 1e-1)}, value=1.0,
                                     intermediate_values={1: 1.2, 2: 1.1, 3: 1.0}, user_attrs={"run_dir": run_dir}))
    return study


def test_slots_do_not_hold_when_a_run_folder_is_missing_or_a_trial_is_short(studies, tmp_path):
    real = [t.user_attrs["run_dir"] for t in finished(studies[SEEDS[0]]["grid"])][:2]
    assert slots_table({0: {"grid": by_hand(tmp_path / "a", real)}})["holds"].all()
    for folders, n_trials in (([real[0], str(tmp_path / "gone")], 2), (real, 3)):
        assert not slots_table({0: {"grid": by_hand(tmp_path / str(n_trials), folders, n_trials)}})["holds"].any()


def test_cited_runs_are_every_finished_trials_run_folder(studies):
    cited = cited_runs(studies)
    assert len(cited) == len(set(cited)) == len(SEEDS) * 2 * N_TRIALS
    assert sorted(cited) == sorted(t.user_attrs["run_dir"] for pair in studies.values() for study in pair.values()
                                   for t in finished(study))
    assert all(load_run(folder).status in ("completed", "pruned") for folder in cited)


def epochs_trained(study) -> int:
    return sum(max(t.intermediate_values) for t in study.trials)


def test_asha_table_compares_each_seeds_grid_and_asha_study(studies):
    versus = asha_table(studies)
    assert list(versus["seed"]) == list(SEEDS)
    for _, row in versus.iterrows():
        grid, asha = studies[row["seed"]]["grid"], studies[row["seed"]]["asha"]
        assert row["grid_epochs"] == epochs_trained(grid) == N_TRIALS * P.num_train_epochs
        assert row["asha_epochs"] == epochs_trained(asha)
        assert row["share"] == pytest.approx(row["asha_epochs"] / row["grid_epochs"])
        best_grid = min(grid.trials, key=lambda t: t.value)
        assert row["grid_best"] == best_grid.value
        assert row["gap"] == pytest.approx((row["asha_best"] - row["grid_best"]) / row["grid_best"])
        assert all(f"{k}={v:g}" in row["grid_best_params"] for k, v in best_grid.params.items())
        assert row["pruned"] + row["finished"] == N_TRIALS
        # the same fine-tune at the same seed gives the same curve, pruner watching or not
        assert row["matched"] == row["finished"] and row["replay_max_diff"] == 0
        assert "grid vs ASHA" in row["summary"]


def test_order_table_replays_each_grid_through_its_asha_pruner_repeatably(studies):
    orders = order_table(studies, orders=20)
    assert list(orders["seed"]) == list(SEEDS) and (orders["orders"] == 20).all()
    assert ((0 <= orders["found"]) & (orders["found"] <= orders["within"]) & (orders["within"] <= 1)).all()
    assert (orders["target_met"] <= orders["within"]).all()
    assert (orders["median_share"] <= 1).all()  # a replay never trains more than the grid did
    assert orders.equals(order_table(studies, orders=20))  # seeded by the train seed
    loose = order_table(studies, orders=20, within=float("inf"), share=1.0)
    assert (loose["within"] == 1).all() and (loose["target_met"] == 1).all()


def spread(study, knob) -> float:
    """max - min over `knob`'s values of the best loss, the other knob tuned away."""
    best = {}
    for t in study.trials:
        best[t.params[knob]] = min(best.get(t.params[knob], float("inf")), t.value)
    return max(best.values()) - min(best.values())


def test_importance_table_ranks_the_knobs_and_measures_each_ones_spread(studies):
    ranks = importance_table(studies)
    assert list(ranks["seed"]) == list(SEEDS)
    for _, row in ranks.iterrows():
        grid = studies[row["seed"]]["grid"]
        scores = {k: row[f"importance_{k}"] for k in ("learning_rate", "warmup_ratio")}
        assert row["first"] == max(scores, key=scores.get)
        assert row["spread_over_learning_rate"] == pytest.approx(spread(grid, "learning_rate"))
        assert row["spread_over_warmup_ratio"] == pytest.approx(spread(grid, "warmup_ratio"))


def test_a_rerun_resumes_every_study_and_trains_nothing(studies, runs_dir):
    folders = sorted(p.parent for p in runs_dir.rglob("summary.json"))
    again = run_seed_studies(P, runs_dir, SEEDS, workers=1)
    for seed in SEEDS:
        for kind in ("grid", "asha"):
            assert again[seed][kind].trials == studies[seed][kind].trials
    assert sorted(p.parent for p in runs_dir.rglob("summary.json")) == folders


def test_the_best_config_exports_to_llamafactory_through_the_cli(studies, tmp_path):
    grid = studies[SEEDS[0]]["grid"]
    best = min(grid.trials, key=lambda t: t.value)
    exported = export_llamafactory(write_best_config(grid, tmp_path / "best.yaml"), tmp_path / "lf.yaml")
    assert exported["returncode"] == 0, exported["stderr"]
    assert exported["command"].startswith("python -m nbkit export --format llamafactory --config ")
    assert exported["yaml"] == yaml.safe_load((tmp_path / "lf.yaml").read_text())
    assert exported["yaml"]["learning_rate"] == best.params["learning_rate"]
    refused = export_llamafactory(tmp_path / "missing.yaml", tmp_path / "none.yaml")
    assert refused["returncode"] == 2 and refused["yaml"] is None and "missing.yaml" in refused["stderr"]
