"""A TrainConfig's LoRA settings in PEFT's terms: what nbkit.core.models wraps the model with and what
nbkit.core.export writes for other tools, from one place.

    lora_args(cfg)            the LoRA keys under our (LLaMA-Factory's) names, lora_alpha resolved
    lora_config_kwargs(cfg)   the same as keyword arguments of `peft.LoraConfig`
    lora_config(cfg)          a `peft.LoraConfig`: get_peft_model(model, lora_config(cfg))

peft is imported only by lora_config: the CLI imports nbkit.core.export, and through it this module,
and must answer without importing peft (or torch, which peft imports).
"""
from __future__ import annotations

from nbkit.core.config import ConfigError, TrainConfig
from nbkit.core.i18n import _

PEFT_NAMES = {"lora_rank": "r", "lora_target": "target_modules"}  # where PEFT's names differ


def lora_args(cfg: TrainConfig) -> dict:
    """The LoRA keys under LLaMA-Factory's names (our field names), lora_alpha resolved."""
    if cfg.finetuning_type != "lora":
        raise ConfigError(_("finetuning_type={finetuning_type!r} has no LoRA config; allowed: finetuning_type='lora'.")
                          .format(finetuning_type=cfg.finetuning_type))
    return {
        "lora_rank": cfg.lora_rank,
        "lora_alpha": cfg.resolved_lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "lora_target": cfg.lora_target,
        "use_rslora": cfg.use_rslora,
        "use_dora": cfg.use_dora,
    }


def lora_config_kwargs(cfg: TrainConfig) -> dict:
    """Keyword arguments for `peft.LoraConfig`, with lora_alpha resolved."""
    kwargs = {PEFT_NAMES.get(key, key): value for key, value in lora_args(cfg).items()}
    if cfg.lora_target == "all":
        kwargs["target_modules"] = "all-linear"  # PEFT's name for every linear layer except the output head
    else:
        kwargs["target_modules"] = [name.strip() for name in cfg.lora_target.split(",")]
    kwargs["task_type"] = "CAUSAL_LM"
    return kwargs


def lora_config(cfg: TrainConfig):
    """A `peft.LoraConfig` for this config (quantization is set on the model, not here)."""
    from peft import LoraConfig

    return LoraConfig(**lora_config_kwargs(cfg))
