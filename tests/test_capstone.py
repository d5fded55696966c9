"""nbkit.capstone: the settings of the method that depend on the model."""
import pytest

from nbkit.capstone import METHOD_SETTINGS, chosen_learning_rate, method_settings, why_these_settings
from nbkit.lr_finder import LRRangeTest


def own(model):
    """The model's three numbers in METHOD_SETTINGS, without the reason."""
    return {k: v for k, v in METHOD_SETTINGS[model].items() if k != "why"}


def test_zero_means_the_models_own_setting_and_a_value_set_wins():
    assert method_settings("tiny") == own("tiny")
    assert method_settings("smollm2-135m") == own("smollm2-135m")
    assert method_settings("tiny", lr_test_steps=30) == dict(own("tiny"), lr_test_steps=30)
    assert method_settings("tiny", early_stopping_patience=1)["early_stopping_patience"] == 1
    assert method_settings("smollm2-135m", max_epochs=2)["max_epochs"] == 2


def test_the_method_fine_tunes_by_the_models_own_rule_unless_told():
    assert method_settings("smollm2-135m")["finetuning_type"] == "lora"
    assert method_settings("tiny")["finetuning_type"] == "full"
    assert method_settings("tiny", finetuning_type="lora")["finetuning_type"] == "lora"
    with pytest.raises(ValueError, match=r"finetuning_type='qlora' is not allowed: 'lora', 'full', or '' for the "
                                         r"model's own \('full'\)"):
        method_settings("tiny", finetuning_type="qlora")


def test_another_model_gets_smollm2s_settings():
    assert method_settings("Qwen/Qwen2.5-0.5B-Instruct") == own("smollm2-135m")
    assert why_these_settings("Qwen/Qwen2.5-0.5B-Instruct") == why_these_settings("smollm2-135m")


def test_every_models_settings_say_why():
    for model in METHOD_SETTINGS:
        assert why_these_settings(model).startswith(f"{model}: ") and len(METHOD_SETTINGS[model]["why"]) > 40


@pytest.mark.parametrize("name, value", [("lr_test_steps", -1), ("max_epochs", 2.5), ("early_stopping_patience", "3")])
def test_a_bad_setting_is_named_with_what_is_allowed(name, value):
    with pytest.raises(ValueError, match=rf"{name}={value!r} is not allowed: a whole number, 0 for the model's own"):
        method_settings("tiny", **{name: value})


def test_the_chosen_lr_is_the_suggestion_to_two_significant_digits():
    finder = LRRangeTest(lrs=[1e-3], losses=[1.0], smoothed=[1.0], suggestion=0.002063, min_loss_lr=0.5,
                         stopped_early=False, stop_reason="", steps=1, seconds=0.0)
    assert chosen_learning_rate(finder) == 2.1e-3
