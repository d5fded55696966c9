"""nbkit.core.peft_mapping: a TrainConfig's LoRA settings in PEFT's terms, from one place. The LoraConfig
lands on the layers named (all linear ones by default), with its rank, alpha (2 x rank unless set), dropout,
rsLoRA and DoRA; a config that is not LoRA has no LoRA config; and the mapping itself imports no peft."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from nbkit.core.config import ConfigError, TrainConfig
from nbkit.core.peft_mapping import lora_args, lora_config, lora_config_kwargs

LORA = dict(finetuning_type="lora")


def tiny_llama():
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def lora_layers(model):
    return {name.split(".")[-1]: module for name, module in model.named_modules() if hasattr(module, "lora_A")}


def test_lora_config_on_all_linear_layers():
    cfg = TrainConfig(lora_rank=4, lora_dropout=0.05, **LORA)
    model = get_peft_model(tiny_llama(), lora_config(cfg))
    layers = lora_layers(model)
    assert set(layers) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    q_proj = layers["q_proj"]
    assert q_proj.r["default"] == 4
    assert q_proj.scaling["default"] == 8 / 4  # alpha defaults to 2 x rank
    assert q_proj.lora_dropout["default"].p == 0.05
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 64)


def test_lora_config_on_named_layers():
    cfg = TrainConfig(lora_target="q_proj, v_proj", **LORA)
    model = get_peft_model(tiny_llama(), lora_config(cfg))
    assert set(lora_layers(model)) == {"q_proj", "v_proj"}


def test_rslora_and_dora_flags_land():
    cfg = TrainConfig(lora_rank=4, lora_alpha=8, use_rslora=True, use_dora=True, **LORA)
    model = get_peft_model(tiny_llama(), lora_config(cfg))
    q_proj = lora_layers(model)["q_proj"]
    assert q_proj.scaling["default"] == pytest.approx(8 / math.sqrt(4))  # rsLoRA: alpha / sqrt(r)
    assert "default" in q_proj.lora_magnitude_vector  # DoRA's magnitude


def test_no_lora_config_without_lora():
    for export in (lora_config, lora_config_kwargs):
        with pytest.raises(ConfigError, match="finetuning_type='full'.*allowed: finetuning_type='lora'"):
            export(TrainConfig())


def test_our_names_become_peft_names_with_alpha_resolved_and_the_targets_split():
    cfg = TrainConfig(lora_rank=16, lora_target="q_proj, v_proj", **LORA)
    assert lora_args(cfg)["lora_alpha"] == 32  # 2 x rank, written out: the other tools get the number
    kwargs = lora_config_kwargs(cfg)
    assert kwargs["r"] == 16 and kwargs["lora_alpha"] == 32 and kwargs["task_type"] == "CAUSAL_LM"
    assert kwargs["target_modules"] == ["q_proj", "v_proj"]
    assert "lora_rank" not in kwargs and "lora_target" not in kwargs
    assert lora_config_kwargs(TrainConfig(**LORA))["target_modules"] == "all-linear"
    assert lora_config_kwargs(TrainConfig(lora_rank=4, lora_alpha=4, **LORA))["lora_alpha"] == 4  # a value set wins


def test_the_mapping_imports_no_peft_until_a_lora_config_is_built():
    """The CLI imports nbkit.core.export, and through it this module: it must answer without peft (or torch)."""
    code = ("import sys; from nbkit.core.config import TrainConfig; from nbkit.core import peft_mapping; "
            "peft_mapping.lora_config_kwargs(TrainConfig(finetuning_type='lora')); "
            "print(sorted(m for m in ('peft', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]"]
