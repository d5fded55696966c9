"""The capstone's steps: pick the batch with the memory planner, compare answers before and after,
and check that the exported configs are accepted by their tools (run sizes: nbkit.profiles).

Each step is one short function so the notebook reads as the method of chapters 1 to 6:
LR range test (lr_finder) -> batch (memory planner) -> epochs (validation curve, early stopping)
-> rank (chapter 5) -> train -> before/after -> exports.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from nbkit.config import TrainConfig
from nbkit.evaluate import answers_table


def pick_batch(cfg: TrainConfig, memory_gb: float, effective_batch: int) -> dict:
    """Chapter 3's planner: the largest per-device batch whose planned memory fits in memory_gb,
    then the power-of-two micro-batch and accumulation that reach effective_batch within it."""
    from nbkit.memory import ModelShape, largest_batch, plan_for_config, plan_for_effective_batch, plan_kwargs

    shape = ModelShape.from_registry(cfg.model)
    fits = largest_batch(shape, memory_gb * 1e9, **plan_kwargs(cfg))
    if fits == 0:
        raise ValueError(f"memory_gb={memory_gb}: not even one row of {cfg.model} fits; the plan for one row is "
                         f"{plan_for_config(cfg.replace(per_device_train_batch_size=1), shape).total / 1e9:.2f} GB")
    choice = plan_for_effective_batch(shape, memory_gb * 1e9, effective_batch, **plan_kwargs(cfg))
    chosen = cfg.replace(per_device_train_batch_size=choice["per_device_train_batch_size"],
                         gradient_accumulation_steps=choice["gradient_accumulation_steps"])
    return dict(largest_fitting_batch=fits, plan=plan_for_config(chosen, shape), **choice)


def before_and_after(run, examples: list[dict], n: int = 8, max_new_tokens: int = 16) -> pd.DataFrame:
    """Greedy answers of the base (LoRA adapters switched off) and of the fine-tuned model, side by side."""
    model, tokenizer = run.model, run.tokenizer
    if not hasattr(model, "disable_adapter"):
        raise ValueError("before_and_after needs a LoRA run (finetuning_type='lora'): the base is the model "
                         "with its adapters switched off")
    with model.disable_adapter():
        before = answers_table(model, tokenizer, examples, n, max_new_tokens)
    after = answers_table(model, tokenizer, examples, n, max_new_tokens)
    return pd.DataFrame({"question": before["question"], "reference": before["reference"],
                         "base answer": before["answer"], "fine-tuned answer": after["answer"],
                         "base correct": before["correct"], "fine-tuned correct": after["correct"]})


def exports_accepted(paths: dict) -> dict:
    """Load each exported file with its own tool: TRL builds SFTConfig + LoraConfig from the script,
    transformers builds TrainingArguments from the JSON, and the LLaMA-Factory YAML parses to a
    mapping with the keys llamafactory-cli needs. Returns {format: what was built}."""
    from transformers import TrainingArguments

    namespace = {"__name__": "nbkit_exported"}  # not "__main__": builds the configs, does not train
    exec(compile(Path(paths["trl"]).read_text(), str(paths["trl"]), "exec"), namespace)
    args = TrainingArguments(**json.loads(Path(paths["training_args"]).read_text()))
    lf = yaml.safe_load(Path(paths["llamafactory"]).read_text())
    needed = {"model_name_or_path", "stage", "finetuning_type", "dataset", "template", "output_dir"}
    if not needed <= set(lf):
        raise ValueError(f"{paths['llamafactory']}: missing LLaMA-Factory keys {sorted(needed - set(lf))}")
    return {"trl": (type(namespace["training_args"]).__name__, type(namespace["peft_config"]).__name__),
            "training_args": type(args).__name__, "llamafactory": f"{len(lf)} keys, stage={lf['stage']}"}
