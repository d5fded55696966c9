"""TrainConfig: validation messages, string coercion, copies. Its exports to HF / TRL / PEFT /
LLaMA-Factory are tested in test_export.py."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbkit.core.config import (ConfigError, DATASET_NAMES, FIELD_SECTIONS, HF_SCHEDULER_NAMES, MODEL_NAMES,
                               SCHEDULER_NAMES, TrainConfig, check_lora_rank, field_docs)
from nbkit.core.i18n import set_language

LORA = dict(finetuning_type="lora")


# ---------------------------------------------------------------- defaults


def test_defaults_are_valid_and_every_field_has_a_why_comment():
    cfg = TrainConfig()
    documented = [name for _, name, _ in field_docs()]
    assert documented == [f.name for f in dataclasses.fields(cfg)]
    assert all(comment.strip() for _, _, comment in field_docs())


def test_scheduler_names_are_the_installed_transformers_ones():
    """config.py writes the names out (importing transformers' SchedulerType costs seconds): they must be
    the installed transformers' own, in its order, plus our "step", and each one's kwargs checkable."""
    from transformers import SchedulerType
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION

    assert HF_SCHEDULER_NAMES == tuple(s.value for s in SchedulerType)
    assert SCHEDULER_NAMES == HF_SCHEDULER_NAMES + ("step",)
    without_function = {s.value for s in SchedulerType if s not in TYPE_TO_SCHEDULER_FUNCTION}
    assert without_function <= {"reduce_lr_on_plateau"}  # torch's class: config.py reads its signature


def test_checking_a_config_imports_no_heavy_library():
    """TrainConfig is checked before anything trains, so checking it must not wait for torch and friends
    (6 s or more): a fresh Python makes and refuses configs, then lists what got imported."""
    code = ("import sys\n"
            "from nbkit.core.config import ConfigError, TrainConfig\n"
            "TrainConfig(lr_scheduler_type='cosine', warmup_ratio=0.1, finetuning_type='lora', quantization_bit=4)\n"
            "try:\n    TrainConfig(lr_scheduler_type='cosin')\nexcept ConfigError as err:\n    print(err)\n"
            "print([m for m in ('torch', 'transformers', 'peft', 'trl', 'bitsandbytes') if m in sys.modules])\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    refusal, imported = done.stdout.splitlines()
    assert refusal.startswith("lr_scheduler_type='cosin' is not allowed; allowed: 'linear', 'cosine', ")
    assert imported == "[]"


# ---------------------------------------------------------------- bad values
# (field values, field named, bad value as shown, something allowed)

BAD_VALUES = [
    (dict(learning_rate=0), "learning_rate", "0", "> 0"),
    (dict(learning_rate=-1e-3), "learning_rate", "-0.001", "> 0"),
    (dict(learning_rate=float("inf")), "learning_rate", "inf", "finite"),
    (dict(learning_rate=float("nan")), "learning_rate", "nan", "finite"),
    (dict(learning_rate="abc"), "learning_rate", "abc", "a number"),
    (dict(learning_rate=[1e-3]), "learning_rate", "[0.001]", "a number"),
    (dict(per_device_train_batch_size=0), "per_device_train_batch_size", "0", ">= 1"),
    (dict(per_device_eval_batch_size=-4), "per_device_eval_batch_size", "-4", ">= 1"),
    (dict(gradient_accumulation_steps=0), "gradient_accumulation_steps", "0", ">= 1"),
    (dict(per_device_train_batch_size=2.5), "per_device_train_batch_size", "2.5", "whole number"),
    (dict(num_train_epochs=0), "num_train_epochs", "0", ">= 1"),
    (dict(max_steps=0), "max_steps", "0", "-1"),
    (dict(lora_rank=0, **LORA), "lora_rank", "0", ">= 1"),
    (dict(lora_rank="four", **LORA), "lora_rank", "four", "whole number"),
    (dict(use_rslora=True), "use_rslora", "True", "finetuning_type='lora'"),
    (dict(use_dora=True, finetuning_type="freeze"), "use_dora", "True", "finetuning_type='lora'"),
    (dict(quantization_bit=4), "quantization_bit", "4", "finetuning_type='lora'"),
    (dict(quantization_bit=3, **LORA), "quantization_bit", "3", "4 or 8"),
    (dict(lr_scheduler_type="cosin"), "lr_scheduler_type", "cosin", "'cosine'"),
    (dict(optim="adam"), "optim", "adam", "'adamw_torch'"),
    (dict(finetuning_type="qlora"), "finetuning_type", "qlora", "'lora'"),
    (dict(fp16=True, bf16=True), "fp16", "True", "at most one"),
    (dict(warmup_ratio=1.0), "warmup_ratio", "1.0", "[0, 1)"),
    (dict(warmup_ratio=-0.1), "warmup_ratio", "-0.1", "[0, 1)"),
    (dict(warmup_steps=-5), "warmup_steps", "-5", ">= 0"),
    (dict(early_stopping_patience=-1), "early_stopping_patience", "-1", ">= 1"),
    (dict(early_stopping_patience=0), "early_stopping_patience", "0", ">= 1"),
    (dict(early_stopping_patience=0), "early_stopping_patience", "0", "what Keras calls patience=0"),
    (dict(early_stopping_threshold=-0.1), "early_stopping_threshold", "-0.1", ">= 0"),
    (dict(adam_beta1=1.0), "adam_beta1", "1.0", "[0, 1)"),
    (dict(adam_beta2=-0.5), "adam_beta2", "-0.5", "[0, 1)"),
    (dict(sgd_momentum=1.5), "sgd_momentum", "1.5", "[0, 1)"),
    (dict(adam_epsilon=0), "adam_epsilon", "0", "> 0"),
    (dict(weight_decay=-0.01), "weight_decay", "-0.01", ">= 0"),
    (dict(lora_dropout=1.0, **LORA), "lora_dropout", "1.0", "[0, 1)"),
    (dict(lora_dropout=-0.1), "lora_dropout", "-0.1", "[0, 1)"),
    (dict(lora_target="q_proj;v_proj", **LORA), "lora_target", "q_proj;v_proj", "'all'"),
    (dict(lora_alpha=0, **LORA), "lora_alpha", "0", "> 0"),
    (dict(val_size=0), "val_size", "0", "(0, 1)"),
    (dict(val_size=-0.2), "val_size", "-0.2", "(0, 1)"),
    (dict(val_size=2.5), "val_size", "2.5", "whole count"),
    (dict(max_samples=0), "max_samples", "0", ">= 1"),
    (dict(eval_steps=0), "eval_steps", "0", ">= 1"),
    (dict(max_seq_length=0), "max_seq_length", "0", ">= 1"),
    (dict(max_grad_norm=-1.0), "max_grad_norm", "-1.0", "None or 0"),
    (dict(logging_steps=0), "logging_steps", "0", ">= 1"),
    (dict(seed=-1), "seed", "-1", ">= 0"),
    (dict(freeze_trainable_layers=0), "freeze_trainable_layers", "0", ">= 1"),
    (dict(bf16="maybe"), "bf16", "maybe", "true or false"),
    (dict(model="tinny"), "model", "tinny", "'smollm2-135m'"),
    (dict(model="no such model"), "model", "no such model", "'tiny'"),
    (dict(dataset="arithmatic"), "dataset", "arithmatic", "'reviews'"),
    (dict(dataset="missing_file.jsonl"), "dataset", "missing_file.jsonl", "'arithmetic'"),
    (dict(lr_scheduler_kwargs="[1, 2]"), "lr_scheduler_kwargs", "[1, 2]", "mapping"),
    (dict(lr_scheduler_type="cosine", lr_scheduler_kwargs={"num_cycle": 2}), "lr_scheduler_kwargs",
     "num_cycle", "'num_cycles'"),
    (dict(lr_scheduler_type="step", lr_scheduler_kwargs={"gama": 0.5}), "lr_scheduler_kwargs",
     "gama", "'gamma'"),
]


@pytest.mark.parametrize("values, field_name, shown, allowed", BAD_VALUES,
                         ids=[f"{case[1]}={case[2]}" for case in BAD_VALUES])
def test_bad_value_names_field_value_and_what_is_allowed(values, field_name, shown, allowed):
    with pytest.raises(ValueError) as caught:
        TrainConfig(**values)
    message = str(caught.value)
    assert field_name in message
    assert shown in message
    assert allowed in message


def test_config_error_is_a_value_error():
    with pytest.raises(ConfigError):
        TrainConfig(learning_rate=-1)


def test_bad_value_in_replace_is_caught_too():
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig().replace(learning_rate=0)


@pytest.mark.parametrize("name, suggestion", [
    ("tinny", "tiny"), ("smollm2", "smollm2-135m"),
])
def test_unknown_model_suggests_a_registry_name(name, suggestion):
    with pytest.raises(ValueError, match=f"Did you mean '{suggestion}'"):
        TrainConfig(model=name)


@pytest.mark.parametrize("field_name, bad, suggestion", [
    ("dataset", "review", "reviews"),
    ("lr_scheduler_type", "cosine_restarts", "cosine_with_restarts"),
    ("optim", "lion", "lion_8bit"),
    ("finetuning_type", "freez", "freeze"),
])
def test_unknown_choice_suggests_the_closest_name(field_name, bad, suggestion):
    with pytest.raises(ValueError, match=f"Did you mean '{suggestion}'"):
        TrainConfig(**{field_name: bad})


# ---------------------------------------------------------------- unknown field names


@pytest.mark.parametrize("key, suggestion", [
    ("lr", "learning_rate"),                   # alias
    ("batch_size", "per_device_train_batch_size"),
    ("epochs", "num_train_epochs"),
    ("r", "lora_rank"),
    ("rank", "lora_rank"),
    ("cutoff_len", "max_seq_length"),          # LLaMA-Factory's name
    ("learning_rat", "learning_rate"),         # typo, found by difflib
    ("warmup_ration", "warmup_ratio"),
    ("lora_dropuot", "lora_dropout"),
])
def test_unknown_field_suggests_the_right_name(key, suggestion):
    with pytest.raises(ValueError) as caught:
        TrainConfig.from_dict({key: "1"})
    assert repr(key) in str(caught.value)
    assert f"Did you mean '{suggestion}'" in str(caught.value)


def test_unknown_field_in_replace_suggests_the_right_name():
    with pytest.raises(ValueError, match="Did you mean 'num_train_epochs'"):
        TrainConfig().replace(epochs=3)


def test_unknown_field_without_a_close_match_lists_the_fields():
    with pytest.raises(ValueError, match="Fields: model, dataset"):
        TrainConfig.from_dict({"zzzz": 1})


# ---------------------------------------------------------------- strings are converted


@pytest.mark.parametrize("field_name, text, expected", [
    ("learning_rate", "3e-4", 3e-4),           # YAML reads 3e-4 as a string
    ("learning_rate", " 0.01 ", 0.01),
    ("bf16", "true", True),                    # papermill -p bf16 true gives "true"
    ("bf16", "False", False),
    ("load_best_model_at_end", "yes", True),
    ("lora_rank", "4", 4),
    ("num_train_epochs", "3.0", 3),
    ("max_steps", "-1", -1),
    ("max_samples", "none", None),
    ("max_samples", "null", None),
    ("max_samples", "128", 128),
    ("eval_generate_samples", "None", None),
    ("max_grad_norm", "none", None),
    ("warmup_steps", "1e2", 100),
    ("lr_scheduler_kwargs", '{"num_cycles": 2}', {"num_cycles": 2}),
    ("lr_scheduler_kwargs", "{power: 2.0}", {"power": 2.0}),
    ("val_size", "50", 50),
    ("val_size", "0.1", 0.1),
    ("run_name", "null", None),
])
def test_strings_are_converted_to_the_field_type(field_name, text, expected):
    extra = {"lr_scheduler_type": "polynomial"} if "power" in text else {}
    if "num_cycles" in text:
        extra = {"lr_scheduler_type": "cosine_with_restarts"}
    cfg = TrainConfig.from_dict({field_name: text, **extra})
    value = getattr(cfg, field_name)
    assert value == expected
    assert type(value) is type(expected)


def test_whole_numbers_become_floats_and_whole_floats_become_ints():
    cfg = TrainConfig(learning_rate=1, num_train_epochs=3.0, val_size=10.0)
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.num_train_epochs == 3 and isinstance(cfg.num_train_epochs, int)
    assert cfg.val_size == 10 and isinstance(cfg.val_size, int)  # a count, as in LLaMA-Factory


def test_a_bool_is_not_accepted_as_a_number():
    with pytest.raises(ValueError, match="lora_rank=True"):
        TrainConfig(lora_rank=True)


# ---------------------------------------------------------------- models and datasets


def test_hf_ids_local_folders_and_jsonl_files_are_accepted(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"instruction": "1+1", "output": "2"}\n')
    assert TrainConfig(model="HuggingFaceTB/SmolLM2-135M-Instruct").model.startswith("HuggingFaceTB")
    assert TrainConfig(model=str(tmp_path)).model == str(tmp_path)
    assert TrainConfig(dataset=data).dataset == str(data)  # a Path becomes a str
    for name in MODEL_NAMES:
        TrainConfig(model=name)
    for name in DATASET_NAMES:
        TrainConfig(dataset=name)


def test_a_file_that_is_not_jsonl_is_refused(tmp_path):
    data = tmp_path / "mine.csv"
    data.write_text("a,b\n")
    with pytest.raises(ValueError, match="dataset="):
        TrainConfig(dataset=str(data))


def test_check_lora_rank_against_the_hidden_size():
    check_lora_rank(TrainConfig(lora_rank=64, **LORA), hidden_size=64)
    check_lora_rank(TrainConfig(lora_rank=512), hidden_size=64)  # not LoRA: nothing to check
    with pytest.raises(ValueError) as caught:
        check_lora_rank(TrainConfig(lora_rank=128, **LORA), hidden_size=64)
    assert "lora_rank=128" in str(caught.value) and "<= 64" in str(caught.value)


# ---------------------------------------------------------------- lora_alpha


def test_lora_alpha_defaults_to_twice_the_rank_and_follows_replace():
    cfg = TrainConfig(lora_rank=8, **LORA)
    assert cfg.lora_alpha is None and cfg.resolved_lora_alpha == 16
    assert cfg.replace(lora_rank=32).resolved_lora_alpha == 64
    assert cfg.replace(lora_alpha=8).resolved_lora_alpha == 8


# ---------------------------------------------------------------- copies, YAML, diffs


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(learning_rate=3e-4, lr_scheduler_type="cosine_with_restarts",
                      lr_scheduler_kwargs={"num_cycles": 2}, max_samples=100, val_size=20,
                      adam_epsilon=1e-6, **LORA)
    path = tmp_path / "cfg.yaml"
    cfg.to_yaml(path)
    assert TrainConfig.from_yaml(path) == cfg


def test_from_yaml_reads_papermill_style_strings(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("learning_rate: 3e-4\nbf16: 'true'\nmax_samples: none\nfinetuning_type: lora\n")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.learning_rate, cfg.bf16, cfg.max_samples) == (3e-4, True, None)


def test_empty_yaml_gives_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert TrainConfig.from_yaml(path) == TrainConfig()


def test_from_dict_needs_a_mapping():
    with pytest.raises(ValueError, match="mapping"):
        TrainConfig.from_dict(["learning_rate", 3e-4])


def test_replace_returns_a_checked_copy():
    cfg = TrainConfig()
    other = cfg.replace(learning_rate="3e-4")
    assert other.learning_rate == 3e-4 and cfg.learning_rate == 1e-3


def test_changed_fields_diff_and_label():
    cfg = TrainConfig(learning_rate=3e-4, num_train_epochs=8)
    assert cfg.changed_fields() == {"learning_rate": 3e-4, "num_train_epochs": 8}
    assert TrainConfig().changed_fields() == {}
    assert cfg.diff(TrainConfig()) == {"learning_rate": (3e-4, 1e-3), "num_train_epochs": (8, 5)}
    assert cfg.label() == "learning_rate=0.0003, num_train_epochs=8"
    assert TrainConfig().label() == "defaults"


def test_to_dict_is_a_copy():
    cfg = TrainConfig(lr_scheduler_type="cosine", lr_scheduler_kwargs={"num_cycles": 0.5})
    cfg.to_dict()["lr_scheduler_kwargs"]["num_cycles"] = 3
    assert cfg.lr_scheduler_kwargs == {"num_cycles": 0.5}


def test_every_section_header_is_marked_for_the_catalogue():
    """show-config prints each section's header through _(): FIELD_SECTIONS marks them, so they must be the
    headers of TrainConfig's source, in its order."""
    headers = list(dict.fromkeys(section for section, _, _ in field_docs()))
    assert headers == list(FIELD_SECTIONS)


def test_refusals_and_field_docs_in_chinese():
    """In Chinese (nbkit.po) a refusal keeps its field, its value and the allowed values as they are, each
    sentence whole (the did-you-mean one included); show-config's sections and why texts are Chinese too."""
    set_language("zh")
    try:
        with pytest.raises(ConfigError) as caught:
            TrainConfig(learning_rate=0)
        assert str(caught.value) == "learning_rate=0.0 无效；允许的值：> 0 的有限数，例如 3e-4。"
        with pytest.raises(ConfigError) as caught:
            TrainConfig(finetuning_type="qlora")
        assert str(caught.value) == ("finetuning_type='qlora' 不被允许；允许的值：'full', 'freeze', 'lora'。"
                                     "你是不是想写 'lora'？")
        with pytest.raises(ConfigError) as caught:
            TrainConfig(max_samples="many")
        assert str(caught.value) == "max_samples='many' 无效；允许的值：一个整数，或 None。"
        with pytest.raises(ConfigError) as caught:
            TrainConfig.from_dict({"lr": 1e-3})
        assert str(caught.value) == "'lr' 不是 TrainConfig 的字段。你是不是想写 'learning_rate'？"
        docs = {name: (section, why) for section, name, why in field_docs()}
        assert docs["learning_rate"] == ("学习率及其调度",
                                         "微型模型能承受较大的学习率；135M 及以上的模型宜用约 1e-5 到 2e-4")
        assert docs["lr_scheduler_kwargs"][1] == '调度器的额外参数，例如 {"num_cycles": 2}'
        assert TrainConfig().label() == "默认值"
    finally:
        set_language("en")
    assert field_docs()[0] == ("model and data", "model",
                               "our embedded 1M-parameter Llama: a whole run takes seconds on a laptop CPU")
