"""nbkit.core.study_queue: a study created or resumed once, its queue of slots filled before any worker
starts (shuffled by the study's seed, each scientific value its share) and each slot's params drawn once:
a resumed or extended study never runs a configuration twice and keeps its search space, sampler and pruner."""
import pytest

from nbkit.core.study import StudyError, StudySpec, load_study, prepare_study, run_study
from study_helpers import assert_no_configuration_twice, configurations, ended, spec_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process trials: 2 threads on busy cores spin


def test_a_study_name_with_another_search_space_is_refused_and_left_as_it_was(tmp_path):
    first = prepare_study(StudySpec.from_dict(spec_dict(tmp_path)))
    before = [(t.number, t.state, t.params, t.system_attrs) for t in first.get_trials()]
    attrs = dict(first.user_attrs)
    other = spec_dict(tmp_path, scientific={"learning_rate": [1e-3, 1e-2]})
    with pytest.raises(StudyError) as err:
        run_study(other, workers=1)
    message = str(err.value)
    assert "'lr' already exists" in message and "0.003" in message and "0.01" in message
    again = load_study(f"sqlite:///{tmp_path}/studies.db", "lr")
    assert [(t.number, t.state, t.params, t.system_attrs) for t in again.get_trials()] == before
    assert again.user_attrs == attrs
    assert len(before) == 2 and not (tmp_path / "runs").exists()


def test_a_grid_queue_is_shuffled_by_the_study_seed(tmp_path):
    """An asynchronous pruner judges a trial against those before it: the queue must not hand out the
    grid in its own order (every small LR first), and the same study must get the same order again."""
    grid = {"learning_rate": [1e-4, 3e-4, 1e-3, 3e-3], "warmup_ratio": [0.0, 0.1, 0.2]}
    points = [(lr, w) for lr in grid["learning_rate"] for w in grid["warmup_ratio"]]

    def queue(folder, **kw):
        study = prepare_study(StudySpec.from_dict(spec_dict(tmp_path / folder, scientific=grid, **kw)))
        return [(t.system_attrs["fixed_params"]["learning_rate"], t.system_attrs["fixed_params"]["warmup_ratio"])
                for t in sorted(study.trials, key=lambda t: t.number)]

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir(), (tmp_path / "d").mkdir()
    first = queue("a")
    assert sorted(first) == sorted(points) and first != points
    assert queue("b") == first  # the same study name: the same order, on any machine, on a resume
    assert queue("c", sampler_seed=1) != queue("d", sampler_seed=2)


def test_a_resumed_study_keeps_its_sampler_and_pruner(tmp_path):
    lr = {"scientific": {"learning_rate": {"low": 1e-3, "high": 3e-3}}}
    prepare_study(StudySpec.from_dict(spec_dict(tmp_path, sampler="random", sampler_seed=1, n_trials=2, **lr)))
    for change, words in (({"sampler": "tpe"}, ["sampler='tpe'", "run with sampler='random'"]),
                          ({"sampler_seed": 2}, ["sampler_seed=2", "run with sampler_seed=1"]),
                          ({"pruner": "asha"}, ["pruner='asha'", "run with pruner='none'"])):
        with pytest.raises(StudyError) as err:
            prepare_study(StudySpec.from_dict(spec_dict(tmp_path, **{"sampler": "random", "sampler_seed": 1,
                                                                     "n_trials": 2, **lr, **change})))
        assert all(word in str(err.value) for word in words) and "a new study_name" in str(err.value)
    stored = load_study(f"sqlite:///{tmp_path}/studies.db", "lr").user_attrs["nbkit_spec"]
    assert stored["sampler"] == "random" and stored["pruner"] == "none"  # the stored spec was not overwritten
    # more trials: fine
    prepare_study(StudySpec.from_dict(spec_dict(tmp_path, sampler="random", sampler_seed=1, n_trials=4, **lr)))


def test_a_sampled_study_gives_each_scientific_value_its_share_of_the_trials(tmp_path):
    warmups = [0.0, 0.1, 0.3]
    for sampler, n_trials in (("random", 6), ("qmc", 7), ("tpe", 9)):
        spec = spec_dict(tmp_path, study_name=sampler, sampler=sampler, sampler_seed=3, n_trials=n_trials,
                         scientific={"warmup_ratio": warmups},
                         nuisance={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
        study = prepare_study(StudySpec.from_dict(spec))
        shares = [sum(t.system_attrs["fixed_params"]["warmup_ratio"] == w for t in study.trials) for w in warmups]
        assert sum(shares) == n_trials and max(shares) - min(shares) <= 1, (sampler, shares)
        study = prepare_study(StudySpec.from_dict(dict(spec, n_trials=n_trials + 3)))  # extended: still even
        shares = [sum(t.system_attrs["fixed_params"]["warmup_ratio"] == w for t in study.trials) for w in warmups]
        assert sum(shares) == n_trials + 3 and max(shares) - min(shares) <= 1, (sampler, shares)


@pytest.mark.parametrize("sampler", ["random", "tpe", "qmc"])
def test_an_extended_seeded_study_never_runs_a_configuration_twice_and_repeats_its_history(tmp_path, sampler):
    """A sampler seeded once per process drew, on a resume, the points it had already run. Here the space
    holds 6 configurations: n_trials 3, then 6, must run all six, once each, and give the same trials as
    one study of 6 (the same seed and the same history give the same draws)."""
    grid = dict(scientific={"warmup_ratio": [0.0, 0.1]}, nuisance={"learning_rate": [1e-3, 3e-3, 1e-2]})
    spec = spec_dict(tmp_path, study_name="grown", sampler=sampler, sampler_seed=5, n_trials=3, **grid)
    run_study(spec, workers=1, progress=False)
    grown = run_study(dict(spec, n_trials=6), workers=1, progress=False)
    assert len(ended(grown)) == 6
    assert_no_configuration_twice(grown)
    at_once = run_study(dict(spec, study_name="at_once", n_trials=6), workers=1, progress=False)
    assert configurations(at_once) == configurations(grown)


def test_two_workers_extending_a_seeded_study_draw_no_configuration_twice(tmp_path):
    spec = spec_dict(tmp_path, study_name="two", sampler="random", sampler_seed=0, n_trials=2,
                     scientific={"warmup_ratio": [0.0, 0.1]}, nuisance={"learning_rate": [1e-3, 3e-3]})
    run_study(spec, workers=2, progress=False)
    study = run_study(dict(spec, n_trials=4), workers=2, progress=False)
    assert len(ended(study)) == 4
    assert_no_configuration_twice(study)
