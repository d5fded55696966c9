"""Studies (nbkit.core.study): real Optuna, real SQLite and PostgreSQL, real worker processes, Ray and
papermill, on tiny seconds-long runs. Every bad spec is refused before a trial runs or the storage
changes; every trial runs exactly once; a killed worker's trial is retried; pruned runs keep curves."""
import getpass
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from nbkit.core.runs import as_runs, load_run
from nbkit.core.study import StudyError, StudySpec, load_study, prepare_study, pruning_note, run_study
from nbkit.interfaces.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process trials: 2 threads on busy cores spin
TINY = dict(model="tiny", dataset="arithmetic", max_samples=80, predict_with_generate=False,
            num_train_epochs=1)  # a run of about a second


def spec_dict(tmp_path, **kw) -> dict:
    d = dict(study_name="lr", base=dict(TINY), scientific={"learning_rate": [1e-3, 3e-3]}, sampler="grid",
             storage=f"sqlite:///{tmp_path}/studies.db", output_dir=str(tmp_path / "runs"),
             heartbeat_interval=1, grace_period=3)
    d.update(kw)
    return d


def run_folders(tmp_path) -> list[Path]:
    return sorted(p.parent for p in (tmp_path / "runs").rglob("summary.json"))


def ended(study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def assert_each_trial_once(study, tmp_path, n_trials):
    """n_trials trials, all COMPLETE or PRUNED, each with its own run folder, and no other folder."""
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == n_trials, [(t.number, t.state) for t in trials]
    assert len(ended(study)) == n_trials
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(run_dirs)) == n_trials
    assert sorted(map(str, run_folders(tmp_path))) == sorted(run_dirs)
    for t in trials:
        run = load_run(t.user_attrs["run_dir"])
        assert run.status == t.user_attrs["run_status"] == "completed"
        assert all(run.config[k] == v for k, v in t.params.items())
        assert t.value == pytest.approx(run.epochs.loc[run.epochs.epoch >= 1, "eval_loss"].min())


# ---------------------------------------------------------------- bad specs, refused up front

BAD_SPECS = [
    ({"scientific": {"lr": [1e-3]}}, ["scientific.lr", "not a TrainConfig field", "show-config"]),
    ({"nuisance": {"warmup_ratio": []}}, ["nuisance.warmup_ratio", "empty"]),
    ({"sampler": "random", "n_trials": 2, "scientific": {"learning_rate": {"low": 1e-3, "high": 1e-3}}},
     ["scientific.learning_rate", "empty or inverted", "low < high"]),
    ({"sampler": "random", "n_trials": 2, "scientific": {"learning_rate": {"low": 1e-2, "high": 1e-4}}},
     ["scientific.learning_rate", "empty or inverted"]),
    ({"scientific": {"learning_rate": [1e-3, -1.0]}}, ["scientific.learning_rate", "-1.0", "refused", "> 0"]),
    ({"sampler": "random", "n_trials": 2, "scientific": {"warmup_ratio": {"low": 0.0, "high": 1.5}}},
     ["scientific.warmup_ratio", "1.5", "[0, 1)"]),
    ({"scientific": {"lr_scheduler_type": ["cosine", "cosinus"]}}, ["lr_scheduler_type", "cosinus", "allowed"]),
    ({"scientific": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}}, ["grid sampler needs a list"]),
    ({"fixed": {"learning_rate": 1e-3}}, ["'learning_rate' is both scientific and fixed"]),
    ({"sampler": "random"}, ["n_trials=None", "whole number >= 1"]),
    ({"sampler": "annealing"}, ["sampler='annealing'", "'grid', 'random', 'qmc', 'tpe'"]),
    ({"pruner": "asha", "pruner_settings": {"eta": 3}}, ["pruner_settings", "allowed settings", "reduction_factor"]),
    ({"sampler": "random", "n_trials": 7, "scientific": {"warmup_ratio": [0.0, 0.1]},
      "nuisance": {"learning_rate": [1e-3, 3e-3, 1e-2]}},
     ["n_trials=7", "4 trials for each of the 2 combinations of warmup_ratio", "3 distinct", "n_trials <= 6"]),
    ({"sampler": "tpe", "n_trials": 4, "scientific": {"per_device_train_batch_size": {"low": 2, "high": 4}}},
     ["n_trials=4", "3 distinct configuration", "n_trials <= 3"]),
    ({"storage": "postgresql+asyncpg://nbkit@localhost:5432/studies"},
     ["driver 'asyncpg' is not installed", "pip install asyncpg", "postgresql+psycopg2://"]),
]


@pytest.mark.parametrize("change, words", BAD_SPECS, ids=[w[0] for _, w in BAD_SPECS])
def test_a_bad_spec_is_refused_before_anything_runs(tmp_path, change, words):
    with pytest.raises(StudyError) as err:
        run_study(spec_dict(tmp_path, **change), workers=1)
    for word in words:
        assert word in str(err.value), str(err.value)
    assert not (tmp_path / "studies.db").exists()  # the storage was not even opened
    assert not (tmp_path / "runs").exists()


def test_a_dataset_file_that_cannot_be_read_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"instruction": "Say hi", "output": "hi"}\n{"oops": 1\n')
    (tmp_path / "good.jsonl").write_text('{"instruction": "Say hi", "output": "hi"}\n' * 20)
    good = str(tmp_path / "good.jsonl")
    for change in ({"base": dict(TINY, dataset=str(tmp_path / "bad.jsonl"))},
                   {"scientific": {"dataset": [good, str(tmp_path / "bad.jsonl")]}}):
        with pytest.raises(StudyError, match=r"bad\.jsonl:2"):
            run_study(spec_dict(tmp_path, **change), workers=1)
        assert not (tmp_path / "studies.db").exists() and not (tmp_path / "runs").exists()


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


def configurations(study) -> list[tuple]:
    """Each trial's params, but for heartbeat retries (which repeat a dead worker's trial on purpose)."""
    return [tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)
            if t.params and "failed_trial" not in t.system_attrs]


def assert_no_configuration_twice(study):
    seen = configurations(study)
    assert len(seen) == len(set(seen)), sorted(seen)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_an_unreachable_postgresql_url_is_refused_with_its_url(tmp_path):
    url = f"postgresql+psycopg2://nbkit@localhost:{free_port()}/studies"  # nothing listens there
    with pytest.raises(StudyError) as err:
        run_study(spec_dict(tmp_path, storage=url), workers=1)
    assert url.replace("+psycopg2", "") in str(err.value).replace("+psycopg2", "")
    assert "cannot be reached" in str(err.value)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- two workers, one storage

def test_two_workers_on_one_sqlite_study_run_each_grid_point_once(tmp_path):
    import torch
    grid = {"learning_rate": [1e-3, 3e-3, 1e-2], "warmup_ratio": [0.0, 0.1]}
    torch.set_num_threads(3)  # not what a worker on 2 cores gets: the caller's own count must come back
    study = run_study(spec_dict(tmp_path, scientific=grid), workers=2, progress=False)
    assert torch.get_num_threads() == 3
    assert_each_trial_once(study, tmp_path, 6)
    pids = {load_run(t.user_attrs["run_dir"]).summary["pid"] for t in study.trials}
    # worker 0 is this process; the spawned one joins when torch is imported (seconds-long trials may all be gone)
    assert os.getpid() in pids and len(pids) <= 2, pids
    points = sorted((t.params["learning_rate"], t.params["warmup_ratio"]) for t in study.trials)
    assert points == sorted((lr, w) for lr in grid["learning_rate"] for w in grid["warmup_ratio"])
    spec = study.user_attrs["nbkit_spec"]
    assert spec["scientific"] == grid and spec["n_trials"] == 6 and spec["sampler"] == "grid"
    assert json.loads(json.dumps(spec)) == spec
    # run again: it resumes, nothing is trained twice
    assert run_study(spec_dict(tmp_path, scientific=grid), workers=1, progress=False).trials == study.trials
    assert len(run_folders(tmp_path)) == 6


def _server_binaries() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        pytest.fail("no PostgreSQL server binaries (initdb, pg_ctl): `make postgresql` installs them")
    return Path(candidates[-1]).parent


@pytest.fixture(scope="module")
def postgresql_url():
    """A real PostgreSQL server in a temporary folder, on a free port; as `postgres` when we are root
    (initdb refuses root)."""
    import psycopg2

    bin_dir, port = _server_binaries(), free_port()
    root = Path(tempfile.mkdtemp(prefix="nbkit-pg-"))
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else getpass.getuser()
    if as_root:
        shutil.chown(root, user="postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []

    def server(*args):
        subprocess.run(prefix + [str(bin_dir / args[0]), *args[1:]], check=True, capture_output=True, timeout=120)

    server("initdb", "-D", str(root / "data"), "-U", user, "-A", "trust")
    server("pg_ctl", "start", "-w", "-D", str(root / "data"), "-l", str(root / "server.log"),
           "-o", f"-p {port} -k {root} -c listen_addresses=localhost")
    try:
        connection = psycopg2.connect(host="localhost", port=port, user=user, dbname="postgres")
        connection.autocommit = True
        connection.cursor().execute("CREATE DATABASE studies")
        connection.close()
        yield f"postgresql+psycopg2://{user}@localhost:{port}/studies"
    finally:
        server("pg_ctl", "stop", "-m", "fast", "-D", str(root / "data"))
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_on_one_postgresql_study_run_n_trials_exactly(tmp_path, postgresql_url):
    postgresql_url = postgresql_url.replace("+psycopg2", "")  # postgresql:// as most guides write it: no driver named
    spec = spec_dict(tmp_path, study_name="lr_pg", storage=postgresql_url, sampler="qmc", sampler_seed=0,
                     n_trials=4, scientific={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
    study = run_study(spec, workers=2, progress=False)
    assert_each_trial_once(study, tmp_path, 4)
    assert len({t.params["learning_rate"] for t in study.trials}) == 4
    assert load_study(postgresql_url, "lr_pg").user_attrs["nbkit_spec"]["n_trials"] == 4


# ---------------------------------------------------------------- a worker killed mid-trial

def test_a_killed_workers_trial_is_retried_and_the_study_still_ends_with_n_trials(tmp_path):
    spec = spec_dict(tmp_path, study_name="killed", sampler="random", sampler_seed=1, n_trials=2,
                     base=dict(TINY, max_samples=240, num_train_epochs=4),  # long enough to kill it mid-run
                     scientific={"learning_rate": {"low": 1e-3, "high": 3e-3}})
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([sys.executable, "-m", "nbkit", "study", "run", "killed.yaml", "--workers", "1"],
                                  cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        killed_dir = _wait_for_a_run_mid_training(tmp_path, worker)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)

    study = run_study(spec, workers=1, progress=False)  # resumes: the dead worker's trial comes back
    assert len(ended(study)) == 2
    assert all(t.state == TrialState.COMPLETE for t in ended(study))
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert len(failed) == 1 and failed[0].user_attrs["run_dir"] == str(killed_dir)
    retry = [t for t in ended(study) if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params
    killed = load_run(killed_dir)
    assert killed.status == "incomplete" and len(killed.epochs) >= 2  # kept, marked as not finished
    assert len(run_folders(tmp_path)) == 3  # the two trials' runs and the killed one: none lost
    assert len(study.trials) == 3
    assert_no_configuration_twice(study)  # the resumed worker drew afresh, not the killed trial's params again


def _wait_for_a_run_mid_training(tmp_path, worker) -> Path:
    """The first run's folder, once it has evaluated epoch 1 and is still running."""
    deadline = time.time() + 120
    while time.time() < deadline:
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        for folder in run_folders(tmp_path):
            epochs, summary = folder / "epochs.csv", json.loads((folder / "summary.json").read_text())
            if summary["status"] == "running" and epochs.exists() and len(epochs.read_text().splitlines()) >= 3:
                return folder
        time.sleep(0.05)
    pytest.fail("no run reached epoch 1 within 2 minutes")


# ---------------------------------------------------------------- pruning

def test_pruned_trials_end_their_runs_as_pruned_with_their_curves(tmp_path):
    good, barely = [1e-3, 3e-3], [1e-6, 2e-6, 3e-6, 5e-6]  # the tiny LRs barely learn
    spec = spec_dict(tmp_path, base=dict(TINY, num_train_epochs=3), pruner="asha",
                     pruner_settings={"reduction_factor": 2}, scientific={"learning_rate": good + barely})
    queue = sorted(prepare_study(StudySpec.from_dict(spec)).trials, key=lambda t: t.number)
    arrival = [t.system_attrs["fixed_params"]["learning_rate"] for t in queue]  # one worker: trials in this order
    late = {lr for i, lr in enumerate(arrival) if lr in barely and set(good) <= set(arrival[:i])}
    assert late, f"the shuffled queue {arrival} puts no barely-learning LR after both good ones: nothing to test"
    study = run_study(spec, workers=1, progress=False)
    assert len(ended(study)) == len(study.trials) == 6
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    # halving at epoch 1 (reduction factor 2): an LR that barely learns, judged after both good ones, is
    # below the rung's cut (ASHA judges a trial only against those before it: the first ones always go on)
    assert late <= {t.params["learning_rate"] for t in pruned}
    for trial in study.trials:
        run = load_run(trial.user_attrs["run_dir"])
        assert run.status == trial.user_attrs["run_status"]
        curve = dict(zip(run.epochs.epoch, run.epochs.eval_loss))
        assert trial.intermediate_values == {e: pytest.approx(v) for e, v in curve.items() if e >= 1}
        if trial.state == TrialState.PRUNED:
            assert run.status == "pruned" and run.epochs.epoch.max() < 3 and 0 in curve
            assert run.summary["best_eval_loss"] is not None
        else:
            assert run.status == "completed" and run.epochs.epoch.max() == 3
            assert trial.value == pytest.approx(min(v for e, v in curve.items() if e >= 1))


def test_a_trial_that_trains_its_last_epoch_is_complete_whatever_the_rungs(tmp_path, capsys):
    """ASHA's rung at epoch 1 is here also the last epoch: halving would cut the worse half of the trials
    after their compute was spent. They end COMPLETE, with their values, and the study says before it
    runs that this pruner can stop nothing."""
    spec = spec_dict(tmp_path, base=dict(TINY, num_train_epochs=1), pruner="asha",
                     pruner_settings={"reduction_factor": 2},
                     scientific={"learning_rate": [1e-3, 3e-3, 1e-6, 2e-6, 3e-6]})
    assert "can stop nothing" in pruning_note(StudySpec.from_dict(spec))
    study = run_study(spec, workers=1)
    out = capsys.readouterr().out
    assert out.index("can stop nothing") < out.index("trial 0 ")
    assert len(study.trials) == 5 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(load_run(t.user_attrs["run_dir"]).status == "completed" for t in study.trials)


def test_the_pruning_note_reads_the_first_rung_against_the_epochs(tmp_path):
    def note(epochs, pruner, settings=None):
        return pruning_note(StudySpec.from_dict(spec_dict(tmp_path, base=dict(TINY, num_train_epochs=epochs),
                                                          pruner=pruner, pruner_settings=settings or {})))
    assert note(3, "asha") is None and note(3, "none") is None and note(1, "none") is None
    assert "first rung is at epoch 4" in note(3, "asha", {"min_early_stopping_rate": 1})  # 1 * 4**1
    assert note(4, "hyperband", {"min_resource": 2}) is None
    assert "first rung is at epoch 3" in note(3, "hyperband", {"min_resource": 3})


# ---------------------------------------------------------------- papermill and Ray

def write_notebook(path: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('learning_rate: float = 1e-3\noutput_dir: str = "runs"\n'
                                       'max_samples: int = 80\nnum_train_epochs: int = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from nbkit import TrainConfig, train\n"
        "run = train(TrainConfig(model='tiny', max_samples=max_samples, num_train_epochs=num_train_epochs,\n"
        "                        learning_rate=learning_rate, output_dir=output_dir, predict_with_generate=False,\n"
        "                        disable_tqdm=True))")]
    nbformat.write(nb, path)
    return path


def test_the_papermill_backend_keeps_one_output_notebook_per_trial(tmp_path):
    notebook = write_notebook(tmp_path / "tiny.ipynb")
    spec = spec_dict(tmp_path, notebook=str(notebook), base=dict(TINY, num_train_epochs=2))
    study = run_study(spec, workers=1, backend="papermill", progress=False)
    assert len(ended(study)) == len(study.trials) == 2
    labels = {1e-3: "learning_rate=0.001", 3e-3: "learning_rate=0.003"}
    for trial in study.trials:
        name = f"trial-{trial.number:03d}_{labels[trial.params['learning_rate']]}"
        path = Path(trial.user_attrs["notebook"])
        assert path == tmp_path / "runs" / name.split("_")[0] / f"{name}.ipynb" and path.exists()
        cells = json.loads(path.read_text())["cells"]
        injected = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
        assert f"learning_rate = {trial.params['learning_rate']}" in "".join(injected[0]["source"])
        run = load_run(trial.user_attrs["run_dir"])
        assert Path(trial.user_attrs["run_dir"]).parent == path.parent  # the run beside its notebook
        assert run.config["learning_rate"] == trial.params["learning_rate"] and run.config["num_train_epochs"] == 2
        assert sorted(trial.intermediate_values) == [1, 2] and trial.user_attrs["run_status"] == "completed"
    assert len(list((tmp_path / "runs").rglob("*.ipynb"))) == 2


def test_a_papermill_study_refuses_a_notebook_without_the_knob(tmp_path):
    notebook = write_notebook(tmp_path / "tiny.ipynb")
    with pytest.raises(StudyError, match="no parameter 'warmup_ratio'"):
        run_study(spec_dict(tmp_path, notebook=str(notebook), scientific={"warmup_ratio": [0.0, 0.1]}),
                  workers=1, backend="papermill")


def test_the_ray_backend_completes_a_study_and_prints_every_trial_line(tmp_path):
    """Ray folds log lines that differ only in numbers (two of four trial lines went missing), and its log
    monitor dropped a task's last line at shutdown (one in CI): the lines are now printed from the storage."""
    grid = {"learning_rate": [1e-3, 3e-3], "warmup_ratio": [0.0, 0.1]}
    spec = spec_dict(tmp_path, study_name="lr_ray", scientific=grid)
    (tmp_path / "ray.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(REPO_ROOT), RAY_AUTH_MODE="disabled")
    done = subprocess.run([sys.executable, "-m", "nbkit", "study", "run", "ray.yaml", "--backend", "ray", "--workers",
                           "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = {int(n) for n in re.findall(r"trial (\d+) COMPLETE", done.stdout)}
    assert printed == {0, 1, 2, 3}, done.stdout
    assert_each_trial_once(load_study(spec["storage"], "lr_ray"), tmp_path, 4)


# ---------------------------------------------------------------- what a user meets around a study

def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by a container's init, is not)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def start_cli_study(tmp_path, name, workers=2, n_trials=4):
    spec = spec_dict(tmp_path, study_name=name, sampler="random", sampler_seed=3, n_trials=n_trials,
                     base=dict(TINY, max_samples=240, num_train_epochs=6),  # long enough to stop it mid-run
                     scientific={"learning_rate": {"low": 1e-3, "high": 3e-3}})
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    log = open(tmp_path / f"{name}.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "nbkit", "study", "run", f"{name}.yaml",
                                "--workers", str(workers)],
                               cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)  # its own group, as a terminal's job
    return spec, process


def wait_for_two_workers(tmp_path, process) -> list[int]:
    deadline = time.time() + 180
    while time.time() < deadline:
        assert process.poll() is None
        pids = {json.loads((f / "summary.json").read_text()).get("pid") for f in run_folders(tmp_path)}
        if len(pids) >= 2 and children_of(process.pid):
            return children_of(process.pid)
        time.sleep(0.1)
    pytest.fail("the two workers did not both start a trial within 3 minutes")


def test_ctrl_c_prints_one_line_and_the_study_resumes_where_it_stopped(tmp_path):
    spec, process = start_cli_study(tmp_path, "stopped", n_trials=2)
    wait_for_two_workers(tmp_path, process)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the job
    assert process.wait(timeout=120) == 130
    out = (tmp_path / "stopped.log").read_text()
    assert "Traceback" not in out and out.count("interrupted:") == 1, out
    assert "run the same command again to resume" in out
    study = load_study(spec["storage"], "stopped")
    stopped = [t for t in study.trials if t.state == TrialState.FAIL and t.user_attrs.get("error") == "interrupted"]
    assert len(stopped) == 2  # both workers' trials, each queued again with its params
    queued = {t.system_attrs["failed_trial"]: t.system_attrs["fixed_params"] for t in study.trials
              if t.state == TrialState.WAITING and "failed_trial" in t.system_attrs}
    assert queued == {t.number: t.params for t in stopped}
    study = run_study(spec, workers=1, progress=False)
    assert len(ended(study)) == 2
    assert_no_configuration_twice(study)
    rerun = {tuple(sorted(t.params.items())) for t in ended(study) if "failed_trial" in t.system_attrs}
    assert rerun == {tuple(sorted(t.params.items())) for t in stopped}


def test_spawned_workers_end_when_the_main_process_is_killed(tmp_path):
    spec, process = start_cli_study(tmp_path, "orphans", n_trials=12)  # minutes of trials left for a survivor
    children = wait_for_two_workers(tmp_path, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.time() + 15
    while any(alive(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in children), children


def test_progress_counts_the_trials_and_estimates_the_time_left_in_a_widget_or_lines(capsys):
    """Two trials of 10 s ended, one running, three queued, two workers: (3 + 1/2) x 10 s / 2 = 17.5 s left."""
    import datetime

    from optuna.distributions import FloatDistribution
    from optuna.trial import FrozenTrial

    from nbkit.core.study import StudyProgress, quiet_create_study

    study = quiet_create_study()
    start = datetime.datetime(2026, 1, 1)
    for number, state in enumerate((TrialState.COMPLETE, TrialState.PRUNED)):
        study.add_trial(FrozenTrial(
            number=number, state=state, value=1.0 if state == TrialState.COMPLETE else None, values=None,
            datetime_start=start, datetime_complete=start + datetime.timedelta(seconds=10),
            params={"learning_rate": 1e-3}, distributions={"learning_rate": FloatDistribution(1e-4, 1e-2)},
            user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=number))
    for _ in range(4):
        study.enqueue_trial({})
    study.ask()  # one of them now RUNNING
    widget = StudyProgress(study, n_trials=6, workers=2, every=3600, mode="widget")
    widget.close()
    bar, text = widget.widget
    assert bar.value == 2 and bar.max == 6
    assert text.value == "2 of 6 ended (1 pruned, 0 failed), 1 running, 3 left; about 18 s left"
    lines = StudyProgress(study, n_trials=6, workers=2, every=3600, mode="lines")
    lines.close()
    assert capsys.readouterr().out.splitlines()[-1] == "progress: " + text.value


def test_a_worker_waiting_for_a_silent_trial_says_for_how_long(tmp_path):
    from nbkit.core.study_workers import _waiting_lines

    spec = StudySpec.from_dict(spec_dict(tmp_path, heartbeat_interval=1, grace_period=30))
    study = prepare_study(spec)
    trial_id = study._pop_waiting_trial_id()
    study._storage.record_heartbeat(trial_id)  # a worker took it, beat once, and went silent
    assert _waiting_lines(study, spec, set()) == []  # one beat ago: alive
    time.sleep(3.5)  # past 2 heartbeat intervals even on a clock of whole seconds (SQLite's CURRENT_TIMESTAMP)
    told = set()
    lines = _waiting_lines(study, spec, told)
    assert len(lines) == 1 and lines[0].startswith("waiting for trial 0: its worker has sent no heartbeat for")
    assert "grace_period=30 s" in lines[0]
    left = int(re.search(r"about (\d+) s more", lines[0]).group(1))
    assert 25 <= left <= 27
    assert _waiting_lines(study, spec, told) == []  # said once


# ---------------------------------------------------------------- the command line

def test_study_run_from_the_command_line_then_resumed(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec_dict(tmp_path, study_name="cli")))
    assert main(["study", "run", str(tmp_path / "s.yaml"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "trial 0 COMPLETE" in out and "trial 1 COMPLETE" in out
    assert "study cli: 2 COMPLETE" in out and "best: trial" in out
    progress = [line for line in out.splitlines() if line.startswith("progress: ")]  # piped: a line per change
    assert progress and progress[-1].startswith("progress: 2 of 2 ended (0 pruned, 0 failed), 0 running, 0 left")
    study = load_study(f"sqlite:///{tmp_path}/studies.db", "cli")
    assert main(["study", "run", str(tmp_path / "s.yaml"), "--workers", "1"]) == 0  # resumed: nothing to do
    assert "trial 0" not in capsys.readouterr().out
    assert load_study(f"sqlite:///{tmp_path}/studies.db", "cli").trials == study.trials


def test_study_run_with_a_bad_spec_prints_one_line_and_exits_2(tmp_path):
    bad = spec_dict(tmp_path, study_name="bad", nuisance={"lora_rnk": [4, 8]})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    done = subprocess.run([sys.executable, "-m", "nbkit", "study", "run", "bad.yaml"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "nuisance.lora_rnk" in lines[0] and "show-config" in lines[0], done.stderr
    assert not (tmp_path / "studies.db").exists()


def test_study_show_prints_the_trials_and_writes_the_figures(tmp_path, capsys):
    spec = spec_dict(tmp_path, study_name="shown", scientific={"learning_rate": [1e-3, 3e-3, 1e-2]},
                     nuisance={"warmup_ratio": [0.0, 0.1]})
    study = run_study(spec, workers=1, progress=False)
    storage = f"sqlite:///{tmp_path}/studies.db"
    assert main(["study", "show", "--storage", storage, "--study", "shown", "--plots", str(tmp_path / "fig")]) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[0].splitlines()
    assert table[0].split()[:4] == ["number", "state", "run_status", "value"]
    assert [int(line.split()[0]) for line in table[1:]] == [t.number for t in study.trials]
    assert "isolation:" in out and "importance:" in out and "big enough?" in out
    best = min(study.trials, key=lambda t: t.value)  # a list is choices, not a range: its winner, never a warning
    assert "warning: learning_rate" not in out
    assert ("value listed: nothing past it was tried" in out) == (best.params["learning_rate"] in (1e-3, 1e-2))
    written = sorted(p.name for p in (tmp_path / "fig").glob("*.png"))
    assert written and all(f"wrote {tmp_path / 'fig' / name}" in out for name in written)
    assert main(["study", "show", "--storage", storage]) == 0  # no --study: the names stored
    assert capsys.readouterr().out.split() == ["shown"]


def test_study_show_refuses_a_missing_file_and_an_unknown_study(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path}/nothing_here.db"
    assert main(["study", "show", "--storage", missing, "--study", "x"]) == 2
    assert "no such file" in capsys.readouterr().err and not (tmp_path / "nothing_here.db").exists()
    run_study(spec_dict(tmp_path, study_name="there"), workers=1, progress=False)
    assert main(["study", "show", "--storage", f"sqlite:///{tmp_path}/studies.db", "--study", "elsewhere"]) == 2
    err = capsys.readouterr().err
    assert "'elsewhere' is not in" in err and "there" in err


def test_a_sweep_reads_as_a_study_for_the_analysis(tmp_path):
    """study_from_runs: a chapter's sweep table becomes an Optuna study the analysis and figures take."""
    from nbkit import TrainConfig
    from nbkit.core import study_analysis
    from nbkit.core.study import best_value, study_from_runs
    from nbkit.core.sweep import sweep

    cfg = TrainConfig(**TINY, output_dir=str(tmp_path / "runs"), disable_tqdm=True)
    df = sweep(cfg, {"learning_rate": [1e-3, 3e-3, 1.0], "warmup_ratio": [0.0, 0.2]}, progress=False)
    study = study_from_runs(df, scientific="warmup_ratio", nuisance="learning_rate")
    assert len(study.trials) == len(df) == 6
    for trial, run in zip(study.trials, df.attrs["runs"]):
        assert trial.params == {"warmup_ratio": run.config["warmup_ratio"],
                                "learning_rate": run.config["learning_rate"]}
        assert trial.user_attrs["run_dir"] == str(run.path.resolve())
        assert trial.value == (float("inf") if run.status == "diverged" else best_value(run))
    table = study_analysis.isolation(study)
    for warmup, row in table.set_index("warmup_ratio").iterrows():  # the best over the LRs, per warmup
        usable = df[(df.warmup_ratio == warmup) & (df.status != "diverged")]
        assert row["best_value"] == pytest.approx(min(best_value(r) for r in as_runs(usable)))
    with pytest.raises(StudyError, match="knob 'lora_rnk' is not in the config"):
        study_from_runs(df, scientific="lora_rnk")
