"""`python -m nbkit study show --plots` on a study of every shape `study run` accepts (issue 27): tuning
only (a real tiny study), scientific only, scientific + nuisance, a `seed` knob, a list of strings, int
ranges, pruned trials and a dead worker, every trial failed or diverged, no trial yet. Each study but
the real one is built by hand in a SQLite file (its spec checked by StudySpec and stored as `study run`
stores it), with losses chosen so the answer is known; the test reads what the command prints and the
figures it writes. No traceback, whatever the shape: what cannot be computed says why."""
import math

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from nbkit.core.study import SPEC_ATTR, StudySpec, run_study, spec_record
from nbkit.interfaces.cli import main
from nbkit.views.study_plots import FIGURES

optuna.logging.set_verbosity(optuna.logging.WARNING)
ALL_FIGURES = [name for name, _ in FIGURES]


def record_of(tmp_path, **spec) -> dict:
    """The spec as `study run` checks and stores it."""
    spec = StudySpec.from_dict({"study_name": "s", "storage": f"sqlite:///{tmp_path}/studies.db", **spec})
    spec.check()
    return spec_record(spec)


def distributions(record) -> dict:
    """What nbkit.core.study.suggest asks Optuna for: a list is categorical, a range int or float."""
    out = {}
    for knob, domain in {**record["scientific"], **record["nuisance"]}.items():
        if isinstance(domain, list):
            out[knob] = CategoricalDistribution(domain)
        elif isinstance(domain["low"], int):
            out[knob] = IntDistribution(domain["low"], domain["high"], log=domain["log"])
        else:
            out[knob] = FloatDistribution(domain["low"], domain["high"], log=domain["log"])
    return out


def trial(record, params, value=None, state=TrialState.COMPLETE, epochs=3, status="completed", **attrs):
    """A finished trial whose validation loss falls to `value` over `epochs` epochs."""
    last = value if value is not None and math.isfinite(value) else 2.0
    user_attrs = {"run_dir": f"runs/{sorted(params.items())}", **({"run_status": status} if status else {})}
    return create_trial(params=params, distributions=distributions(record), value=value, state=state,
                        intermediate_values={e: last + 0.1 * (epochs - e) for e in range(1, epochs + 1)},
                        user_attrs={**user_attrs, **attrs.pop("user_attrs", {})}, **attrs)


def stored(tmp_path, record, trials, waiting: int = 0) -> str:
    storage = f"sqlite:///{tmp_path}/studies.db"
    study = optuna.create_study(study_name=record["study_name"], storage=storage, direction="minimize")
    study.set_user_attr(SPEC_ATTR, record)
    for t in trials:
        study.add_trial(t)
    for _ in range(waiting):
        study.enqueue_trial({})
    return storage


def show(storage, name, plots, capsys) -> str:
    assert main(["study", "show", "--storage", storage, "--study", name, "--plots", str(plots)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return out


def assert_figures(out, plots, not_written=()):
    """Every figure but `not_written` is a PNG in `plots` and named by a "wrote" line; each of those
    has a line saying why it was not written."""
    for name in ALL_FIGURES:
        path = plots / f"{name}.png"
        if name in not_written:
            assert not path.exists()
            assert f"{path} not written: " in out
        else:
            assert path.read_bytes()[:4] == b"\x89PNG" and f"wrote {path}" in out


# ---------------------------------------------------------------- a study of each shape

def test_tuning_only_a_real_tiny_study(tmp_path, capsys, one_torch_thread):
    spec = {"study_name": "tune", "base": {"model": "tiny", "dataset": "arithmetic", "max_samples": 80,
                                           "predict_with_generate": False, "num_train_epochs": 1},
            "nuisance": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
            "sampler": "random", "sampler_seed": 0, "n_trials": 3, "storage": f"sqlite:///{tmp_path}/studies.db",
            "output_dir": str(tmp_path / "runs"), "heartbeat_interval": 1, "grace_period": 3}
    study = run_study(StudySpec.from_dict(spec), workers=1, progress=False)
    best = min(study.trials, key=lambda t: t.value)
    out = show(spec["storage"], "tune", tmp_path / "figs", capsys)
    assert f"best: trial {best.number} (learning_rate=" in out
    assert "isolation: none, the study has no scientific knob: it tunes learning_rate" in out
    assert "importance: learning_rate is the only knob that varies" in out
    assert "big enough? " in out and "the best configuration (learning_rate" in out
    assert "spec is missing" not in out and "no nbkit_spec" not in out
    assert_figures(out, tmp_path / "figs", not_written=["isolation"])
    assert "isolation.png not written: the study has no scientific knob" in out


def test_tuning_only_by_hand_warns_at_the_edge_and_ranks_two_knobs(tmp_path, capsys):
    record = record_of(tmp_path, nuisance={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                                           "weight_decay": {"low": 0.0, "high": 0.1}}, sampler="random", n_trials=6)
    lrs = [1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 5e-3]  # the loss falls with the LR: the best is the largest tried
    trials = [trial(record, {"learning_rate": lr, "weight_decay": 0.01 * i}, 2.0 - i * 0.1)
              for i, lr in enumerate(lrs)]
    out = show(stored(tmp_path, record, trials), "s", tmp_path / "figs", capsys)
    assert "warning: learning_rate: the best trial (0.005) is the largest value tried" in out
    assert "importance: " in out and "few trials: a hint, not a ranking" in out
    assert "isolation: none, the study has no scientific knob: it tunes learning_rate, weight_decay" in out
    assert_figures(out, tmp_path / "figs", not_written=["isolation"])


def test_scientific_only_names_the_winner_by_its_margin(tmp_path, capsys):
    record = record_of(tmp_path, scientific={"warmup_ratio": [0.0, 0.1, 0.3]}, sampler="grid")
    trials = [trial(record, {"warmup_ratio": w}, v) for w, v in ((0.0, 1.3), (0.1, 1.1), (0.3, 1.25))]
    out = show(stored(tmp_path, record, trials), "s", tmp_path / "figs", capsys)
    assert "winner: warmup_ratio: 0.1 won (best validation loss 1.1000), 0.1500 below the runner-up 0.3" in out
    assert "no seed band" in out and "warning: warmup_ratio" not in out
    assert "isolation: the best validation loss per scientific value" in out
    assert_figures(out, tmp_path / "figs")


def test_scientific_and_nuisance_with_pruned_trials_and_a_dead_worker(tmp_path, capsys):
    record = record_of(tmp_path, scientific={"warmup_ratio": [0.0, 0.1]},
                       nuisance={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
                       sampler="random", n_trials=8, pruner="asha")
    trials = [trial(record, {"warmup_ratio": w, "learning_rate": lr}, 1.0 + 1e-3 / lr * 0.1 + w)
              for w in (0.0, 0.1) for lr in (2e-4, 1e-3, 5e-3)]
    trials.append(trial(record, {"warmup_ratio": 0.1, "learning_rate": 1e-4}, None, state=TrialState.PRUNED,
                        epochs=1, status="pruned"))
    trials.append(trial(record, {"warmup_ratio": 0.0, "learning_rate": 5e-4}, None, state=TrialState.FAIL,
                        epochs=1, status=None))  # its worker died: no "error", no "run_status"
    trials.append(trial(record, {"warmup_ratio": 0.0, "learning_rate": 5e-4}, 1.5,
                        system_attrs={"failed_trial": len(trials) - 1}))  # the retry
    out = show(stored(tmp_path, record, trials), "s", tmp_path / "figs", capsys)
    assert "warning: learning_rate: the best trial (0.005) is the largest value tried" in out
    assert "worker died" in out and "retry_of" in out and "pruned" in out
    assert "winner: warmup_ratio: 0 won" in out
    assert_figures(out, tmp_path / "figs")


def test_a_seed_knob_gives_the_margin_a_seed_band(tmp_path, capsys):
    record = record_of(tmp_path, scientific={"warmup_ratio": [0.0, 0.1]}, nuisance={"seed": [0, 1, 2]},
                       sampler="grid")
    losses = {0.1: [1.00, 1.05, 1.10], 0.0: [1.02, 1.08, 1.12]}  # 0.1 wins by 0.02; its seeds span 0.10
    trials = [trial(record, {"warmup_ratio": w, "seed": s}, v) for w, vs in losses.items() for s, v in enumerate(vs)]
    out = show(stored(tmp_path, record, trials), "s", tmp_path / "figs", capsys)
    assert "winner: warmup_ratio: 0.1 won (best validation loss 1.0000), 0.0200 below the runner-up 0" in out
    assert "the seed band is 0.1000 (the best configuration over its 3 runs at different seeds)" in out
    assert "the seed alone could have made this winner" in out
    assert "winner: seed" not in out  # the best seed means nothing
    assert_figures(out, tmp_path / "figs")


def test_a_list_of_strings_and_a_starved_value(tmp_path, capsys):
    record = record_of(tmp_path, scientific={"lr_scheduler_type": ["linear", "cosine", "constant"]},
                       nuisance={"learning_rate": {"low": 1e-4, "high": 1e-3}}, sampler="random", n_trials=6)
    trials = [trial(record, {"lr_scheduler_type": kind, "learning_rate": lr}, v) for kind, lr, v in (
        ("linear", 2e-4, 1.4), ("linear", 5e-4, 1.3), ("linear", 7e-4, 1.35),
        ("cosine", 3e-4, 1.2), ("cosine", 6e-4, 1.25), ("cosine", 4e-4, 1.22))]  # constant never drawn
    out = show(stored(tmp_path, record, trials), "s", tmp_path / "figs", capsys)
    assert ("winner: lr_scheduler_type: cosine won (best validation loss 1.2000), "
            "0.1000 below the runner-up linear") in out
    assert "warning: lr_scheduler_type: starved values: constant got 0 of the 6 trials" in out
    assert_figures(out, tmp_path / "figs")


def test_int_ranges(tmp_path, capsys):
    record = record_of(tmp_path, fixed={"finetuning_type": "lora"},
                       scientific={"lora_rank": {"low": 2, "high": 32, "log": True}},
                       nuisance={"num_train_epochs": {"low": 1, "high": 3},
                                 "per_device_train_batch_size": {"low": 4, "high": 16}},
                       sampler="random", n_trials=6)
    trials = [trial(record, {"lora_rank": r, "num_train_epochs": e, "per_device_train_batch_size": b}, v)
              for r, e, b, v in ((2, 1, 4, 1.5), (4, 2, 8, 1.4), (8, 3, 16, 1.45), (16, 1, 8, 1.3),
                                 (32, 2, 12, 1.1), (6, 3, 4, 1.35))]
    out = show(stored(tmp_path, record, trials), "s", tmp_path / "figs", capsys)
    assert "warning: lora_rank: the best trial (32) sits at the top of the searched range [2, 32]" in out
    assert "warning: num_train_epochs" not in out  # its best, 2, is the middle of 1..3
    assert "isolation: the best validation loss per scientific value" in out
    assert_figures(out, tmp_path / "figs")


def test_every_trial_failed_or_diverged(tmp_path, capsys):
    record = record_of(tmp_path, scientific={"warmup_ratio": [0.0, 0.1]}, sampler="grid")
    trials = [trial(record, {"warmup_ratio": 0.0}, None, state=TrialState.FAIL, status=None,
                    user_attrs={"error": "RuntimeError: out of memory"}),
              trial(record, {"warmup_ratio": 0.1}, math.inf, status="diverged")]
    out = show(stored(tmp_path, record, trials), "s", tmp_path / "figs", capsys)
    assert "best: none yet, no completed trial with a finite validation loss (1 failed, 1 diverged)" in out
    assert "isolation: not computed, no completed trial" in out
    assert "importance: not computed" in out and "big enough? not big enough" in out
    assert_figures(out, tmp_path / "figs", not_written=["importance"])


def test_a_study_with_no_trial_yet(tmp_path, capsys):
    record = record_of(tmp_path, scientific={"warmup_ratio": [0.0, 0.1]}, sampler="grid")
    out = show(stored(tmp_path, record, []), "s", tmp_path / "figs", capsys)
    assert "has no trial yet: nothing to analyse" in out
    assert_figures(out, tmp_path / "figs", not_written=["isolation", "importance"])


def test_a_study_with_no_finished_trial_yet(tmp_path, capsys):
    record = record_of(tmp_path, nuisance={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
                       sampler="random", n_trials=2)
    out = show(stored(tmp_path, record, [], waiting=2), "s", tmp_path / "figs", capsys)
    assert "best: none yet, no completed trial with a finite validation loss (2 waiting)" in out
    assert "importance: not computed" in out
    assert_figures(out, tmp_path / "figs", not_written=["isolation", "importance"])

