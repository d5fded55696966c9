"""nbkit.labs.ch07_capstone: the settings of the method that depend on the model
(notebooks/sizes/07_capstone.toml, read through the chapter's parameters) and its small steps."""
from types import SimpleNamespace

import pytest

from nbkit.core.config import TrainConfig
from nbkit.core.data import load_split
from nbkit.core.evaluate import answers_table
from nbkit.core.lr_finder import LRRangeTest
from nbkit.core.models import load_base_model
from nbkit.core.train import train
from nbkit.interfaces.profiles import chapter_parameters, chapter_sizes, notebook_defaults
from nbkit.labs.ch07_capstone import (METHOD_REASONS, before_and_after, check_method, chosen_learning_rate,
                                      why_these_settings)

METHOD = ("finetuning_type", "lr_test_steps", "max_epochs", "early_stopping_patience")


def settings(model, device="cpu", **given):
    """The capstone's method settings for `model`, as its set-up reads them (-p values in `given`)."""
    p = chapter_parameters("07_capstone", dict(notebook_defaults("07_capstone"), model=model, device=device, **given))
    check_method(p)
    return {name: getattr(p, name) for name in METHOD}


def own(model):
    return chapter_sizes("07_capstone")[(model, "*")]


def test_zero_means_the_models_own_setting_and_a_value_set_wins():
    assert settings("tiny") == own("tiny")
    assert settings("smollm2-135m") == own("smollm2-135m")
    assert settings("tiny", lr_test_steps=30) == dict(own("tiny"), lr_test_steps=30)
    assert settings("tiny", early_stopping_patience=1)["early_stopping_patience"] == 1
    assert settings("smollm2-135m", max_epochs=2)["max_epochs"] == 2


def test_the_method_fine_tunes_by_the_models_own_rule_unless_told():
    assert settings("smollm2-135m")["finetuning_type"] == "lora"
    assert settings("tiny")["finetuning_type"] == "full"
    assert settings("tiny", finetuning_type="lora")["finetuning_type"] == "lora"
    with pytest.raises(ValueError, match=r"finetuning_type='qlora' is not allowed: 'lora', 'full', or '' for the "
                                         r"model's own"):
        settings("tiny", finetuning_type="qlora")


def test_another_model_gets_smollm2s_settings_on_any_device():
    assert settings("Qwen/Qwen2.5-0.5B-Instruct") == own("smollm2-135m")
    assert settings("Qwen/Qwen2.5-0.5B-Instruct", device="cuda") == own("smollm2-135m")
    assert why_these_settings("Qwen/Qwen2.5-0.5B-Instruct") == why_these_settings("smollm2-135m")


def test_every_model_with_settings_says_why():
    for model, _ in chapter_sizes("07_capstone"):
        assert why_these_settings(model).startswith(f"{model}: ") and len(METHOD_REASONS[model]) > 40


@pytest.mark.parametrize("name, value", [("lr_test_steps", -1), ("max_epochs", 2.5), ("early_stopping_patience", "3")])
def test_a_bad_setting_is_named_with_what_is_allowed(name, value):
    p = SimpleNamespace(**dict(own("tiny"), **{name: value}))
    with pytest.raises(ValueError, match=rf"{name}={value!r} is not allowed: a whole number, 0 for the model's own"):
        check_method(p)


def test_the_chosen_lr_is_the_suggestion_to_two_significant_digits():
    finder = LRRangeTest(lrs=[1e-3], losses=[1.0], smoothed=[1.0], suggestion=0.002063, min_loss_lr=0.5,
                         stopped_early=False, stop_reason="", steps=1, seconds=0.0)
    assert chosen_learning_rate(finder) == 2.1e-3


def test_the_reasons_speak_chinese():
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): METHOD_REASONS are marked N_() and translated
    when shown."""
    from nbkit.core.i18n import set_language

    set_language("zh")
    try:
        assert why_these_settings("tiny").startswith("tiny: 微型模型从没见过加法")
        assert why_these_settings("smollm2-135m").startswith("smollm2-135m: SmolLM2 已经会算加法")
    finally:
        set_language("en")
    assert why_these_settings("tiny").startswith("tiny: the tiny model has never seen a sum")


@pytest.mark.parametrize("finetuning_type, learning_rate", [("lora", 5e-3), ("full", 1e-3)])
def test_before_and_after_puts_the_base_models_answers_beside_the_fine_tuned_ones(tmp_path, finetuning_type,
                                                                                  learning_rate):
    cfg = TrainConfig(model="tiny", dataset="arithmetic", max_samples=240, num_train_epochs=3,
                      learning_rate=learning_rate, finetuning_type=finetuning_type, predict_with_generate=False,
                      disable_tqdm=True, output_dir=str(tmp_path / "runs"))
    run = train(cfg)
    examples = load_split(cfg)[1]
    table = before_and_after(run, examples, n=4)
    base = answers_table(load_base_model(cfg), run.tokenizer, examples, 4)  # the base, loaded afresh
    tuned = answers_table(run.model, run.tokenizer, examples, 4)
    assert base["answer"].tolist() != tuned["answer"].tolist()  # else the table could not tell them apart
    assert table["question"].tolist() == base["question"].tolist()
    assert table["base_answer"].tolist() == base["answer"].tolist()  # LoRA: the adapters switched off
    assert table["fine_tuned_answer"].tolist() == tuned["answer"].tolist()
    assert table["base_correct"].tolist() == base["correct"].tolist()
    assert table["fine_tuned_correct"].tolist() == tuned["correct"].tolist()
