"""nbkit.core.study_spec: every bad spec is refused before a trial runs or the storage changes, and the
pruning note says before the study runs when its pruner can stop nothing."""
import pytest

from nbkit.core.i18n import set_language
from nbkit.core.study import StudyError, StudySpec, pruning_note, run_study
from study_helpers import TINY, spec_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process trials: 2 threads on busy cores spin


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


def test_the_pruning_note_reads_the_first_rung_against_the_epochs(tmp_path):
    def note(epochs, pruner, settings=None):
        return pruning_note(StudySpec.from_dict(spec_dict(tmp_path, base=dict(TINY, num_train_epochs=epochs),
                                                          pruner=pruner, pruner_settings=settings or {})))
    assert note(3, "asha") is None and note(3, "none") is None and note(1, "none") is None
    assert "first rung is at epoch 4" in note(3, "asha", {"min_early_stopping_rate": 1})  # 1 * 4**1
    assert note(4, "hyperband", {"min_resource": 2}) is None
    assert "first rung is at epoch 3" in note(3, "hyperband", {"min_resource": 3})


def test_refusals_and_the_pruning_note_in_chinese(tmp_path):
    """In Chinese (nbkit.po): field names, values and the allowed values stay as they are; a message put
    together from two cases (balanced knobs or none) is a whole sentence in each."""
    def refusal(**change):
        with pytest.raises(StudyError) as err:
            StudySpec.from_dict(spec_dict(tmp_path, **change)).check()
        return str(err.value)
    set_language("zh")
    try:
        assert refusal(sampler="annealing") == ("sampler='annealing' 不被允许；"
                                                "允许的值：'grid', 'random', 'qmc', 'tpe'。")
        assert refusal(scientific={"lr": [1e-3]}) == ("scientific.lr：'lr' 不是 TrainConfig 的字段；"
                                                      "`python -m nbkit show-config` 会列出所有字段")
        assert refusal(sampler="random", n_trials=7, scientific={"warmup_ratio": [0.0, 0.1]},
                       nuisance={"learning_rate": [1e-3, 3e-3, 1e-2]}).startswith(
            "n_trials=7 要求 warmup_ratio 的 2 种组合各有 4 个试验，但其他旋钮只有 3 种不同的配置")
        note = pruning_note(StudySpec.from_dict(spec_dict(tmp_path, base=dict(TINY, num_train_epochs=3), pruner="asha",
                                                          pruner_settings={"min_early_stopping_rate": 1})))
        assert note.startswith("pruner='asha' 在这里什么也停不了：它的第一个梯级在第 4 个轮次，而试验最多训练 3 个轮次")
    finally:
        set_language("en")
    assert not (tmp_path / "studies.db").exists()
