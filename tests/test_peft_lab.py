"""Chapter 5's tools: methods, measured memory, LoRA update norm, quantisation error, adapters
saved and reloaded in a fresh process, the facts task, the panel's preview."""
import pytest
import torch
from conftest import tiny_config

from nbkit import train
from nbkit.data import FACT_PHRASINGS, NAMES, THINGS, load_examples, split_examples, task_metric
from nbkit.peft_lab import (METHODS, lora_update_norm, method_config, method_of, preview, quantization_error,
                            reload_in_fresh_process, save_adapter, seconds_per_step, training_memory)
from nbkit.train import validation_loss
from nbkit.ui import panel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_method_config_sets_each_method_and_refuses_unknown_names(tmp_path):
    base = tiny_config(tmp_path, finetuning_type="lora", quantization_bit=4)
    assert method_config(base, "full").finetuning_type == "full"
    assert method_config(base, "full").quantization_bit is None  # QLoRA's bits do not leak into full
    assert method_config(base, "qlora-8bit").quantization_bit == 8
    for name in METHODS:
        assert method_of(method_config(base, name).to_dict()) == name
    with pytest.raises(ValueError, match="method: 'qlora'.*allowed: full"):
        method_config(base, "qlora")


def test_training_memory_counts_what_trains(tmp_path):
    full = training_memory(tiny_config(tmp_path))
    lora = training_memory(tiny_config(tmp_path, finetuning_type="lora"))
    nf4 = training_memory(tiny_config(tmp_path, finetuning_type="lora", quantization_bit=4))
    # fp32 AdamW: a gradient (4 bytes) and two moments (8 bytes) per trainable parameter
    assert full["gradient_bytes"] == 4 * full["trainable_params"]
    assert abs(full["optimizer_bytes"] - 8 * full["trainable_params"]) < 1000  # + Adam's step counters
    assert lora["trainable_params"] < 0.1 * full["trainable_params"]
    assert lora["gradient_bytes"] == 4 * lora["trainable_params"]
    assert nf4["weights_bytes"] < 0.5 * lora["weights_bytes"]
    assert nf4["total_bytes"] == nf4["weights_bytes"] + nf4["gradient_bytes"] + nf4["optimizer_bytes"]


def test_quantization_error_is_small_at_8_bits_larger_at_4(tmp_path):
    cfg = tiny_config(tmp_path)
    int8, nf4 = quantization_error(cfg, 8), quantization_error(cfg, 4)
    assert 0 < int8["relative_error"] < nf4["relative_error"] < 0.5
    assert nf4["model_bytes_quantised"] < int8["model_bytes_quantised"] < int8["model_bytes_fp32"]
    with pytest.raises(ValueError, match="bits: 2"):
        quantization_error(cfg, 2)


def test_lora_update_norm_is_zero_before_training_and_follows_alpha(tmp_path):
    cfg = tiny_config(tmp_path, finetuning_type="lora", max_steps=3, learning_rate=1e-2)
    from nbkit.models import load_model

    fresh, _ = load_model(cfg)
    assert lora_update_norm(fresh) == 0.0  # PEFT starts B at zero: the adapted model is the base
    run = train(cfg)
    norm = lora_update_norm(run.model)
    assert norm > 0
    for module in run.model.modules():  # doubling the scaling doubles the update
        if isinstance(getattr(module, "scaling", None), dict) and "default" in module.scaling:
            module.scaling["default"] *= 2
    assert lora_update_norm(run.model) == pytest.approx(2 * norm)
    with pytest.raises(ValueError, match="no LoRA layers"):
        lora_update_norm(torch.nn.Linear(2, 2))
    assert seconds_per_step(run) > 0


def test_saved_adapter_reloads_in_a_fresh_process_with_the_same_loss(tmp_path):
    run = train(tiny_config(tmp_path, finetuning_type="lora", max_steps=4, learning_rate=1e-2))
    folder = save_adapter(run)
    assert (folder / "adapter_config.json").exists() and (folder / "adapter_model.safetensors").exists()
    in_memory = validation_loss(run)
    reloaded = reload_in_fresh_process(run.path)
    assert reloaded["adapter"] == pytest.approx(in_memory, abs=1e-5)
    assert reloaded["merged"] == pytest.approx(in_memory, abs=1e-4)
    assert in_memory < run.summary["base_eval_loss"]  # the adapter changed the model: the test can fail


def test_facts_task_is_deterministic_and_validation_asks_facts_seen_in_training():
    examples = load_examples("facts", seed=0)
    assert examples == load_examples("facts", seed=0) and examples != load_examples("facts", seed=1)
    assert task_metric("facts") == "exact_match"
    assert len(examples) % len(FACT_PHRASINGS) == 0
    answers = [ex["messages"][1]["content"] for ex in examples]
    assert all(a.isdigit() and 10 <= int(a) <= 99 for a in answers)
    train_rows, val_rows = split_examples(examples, 0.2, seed=42)

    def fact(ex):  # the phrasings differ; the person and the thing name the fact
        words = set(ex["messages"][0]["content"].replace("?", "").replace(".", "").split())
        (name,), (thing,) = words & set(NAMES), words & set(THINGS)
        return name, thing, ex["messages"][1]["content"]
    assert len({fact(ex) for ex in examples}) == len(examples) // len(FACT_PHRASINGS)  # each fact: one answer in every phrasing
    seen = {fact(ex) for ex in train_rows}
    assert sum(fact(ex) in seen for ex in val_rows) >= 0.9 * len(val_rows)


def test_panel_preview_shows_trainable_parameters_before_training(tmp_path):
    cfg = tiny_config(tmp_path, finetuning_type="lora")
    p = panel(cfg, ["lora_rank", "quantization_bit"], preview=preview)
    before = p.preview_html.value
    assert "parameters train" in before and "MB" in before
    p.controls["lora_rank"].value = 32
    assert p.preview_html.value != before  # redrawn on change
    assert "parameters train" not in panel(cfg, ["lora_rank"]).preview_html.value  # no preview asked
