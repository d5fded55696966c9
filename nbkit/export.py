"""Carry a TrainConfig to the tools used at work.

    llamafactory    a LLaMA-Factory SFT YAML            (llamafactory-cli train FILE)
    trl             a TRL script: SFTConfig + PEFT LoraConfig (python FILE train.jsonl)
    training_args   HF TrainingArguments kwargs as JSON (or Python with style="python")
    lora            PEFT LoraConfig kwargs as JSON (or Python)

`write_exports(cfg, folder)` writes the first three side by side (the capstone does);
`python -m nbkit export --format F` prints one. The key names and value spellings live in
TrainConfig's to_*() methods; this module only renders them.
"""
from __future__ import annotations

import json
from pathlib import Path

from nbkit.config import ConfigError, TrainConfig, _model_source

EXPORT_FORMATS = ("llamafactory", "trl", "training_args", "lora")
EXPORT_FILES = {"llamafactory": "llamafactory_sft.yaml", "trl": "trl_sft.py", "training_args": "training_args.json"}
DATA_FILES = ("train.jsonl", "validation.jsonl")  # write_dataset: nbkit's own split, in TRL's format


def export_text(cfg: TrainConfig, fmt: str, style: str = "json") -> str:
    """The config in format `fmt` (one of EXPORT_FORMATS); `style` is json or python for the
    two kwargs formats."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"format={fmt!r} is not allowed; allowed: {', '.join(EXPORT_FORMATS)}")
    if fmt == "llamafactory":
        return cfg.to_llamafactory_yaml()
    if fmt == "trl":
        return trl_script(cfg)
    if fmt == "training_args":
        kwargs, call, module = cfg.to_training_args_kwargs(), "TrainingArguments", "transformers"
    else:
        kwargs, call, module = cfg.to_lora_config_kwargs(), "LoraConfig", "peft"
    if style == "python":
        return "\n".join([f"from {module} import {call}", "", python_call(call, kwargs)]) + "\n"
    return json.dumps(kwargs, indent=2) + "\n"


def python_call(name: str, kwargs: dict, indent: str = "") -> str:
    """Code for `name(**kwargs)`, one argument a line (values as Python literals)."""
    lines = [f"{name}("] + [f"{indent}    {key}={value!r}," for key, value in kwargs.items()]
    return "\n".join(lines + [f"{indent})"])


def _bnb_call(bits: int | None, bf16: bool) -> str:
    """The BitsAndBytesConfig nbkit.models uses for QLoRA, as code."""
    if bits is None:
        return "None  # no quantisation: the base trains or stays frozen in full precision"
    if bits == 4:  # the QLoRA paper's recipe, as in nbkit.models._quantization_config
        compute = "bfloat16" if bf16 else "float32"
        return ('BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", '
                f'bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.{compute})')
    return "BitsAndBytesConfig(load_in_8bit=True)"


def trl_script(cfg: TrainConfig) -> str:
    """A runnable TRL script for the same run. Importing it builds `training_args` (SFTConfig),
    `peft_config` (LoraConfig or None) and `quantization_config`; running it trains.
    Data: JSONL rows {"prompt": [{"role": "user", ...}], "completion": [{"role": "assistant", ...}]},
    TRL's conversational prompt-completion format, so the loss counts only the answer."""
    peft_config = python_call("LoraConfig", cfg.to_lora_config_kwargs()) if cfg.finetuning_type == "lora" else \
        "None  # finetuning_type=" + repr(cfg.finetuning_type)
    freeze = cfg.freeze_trainable_layers if cfg.finetuning_type == "freeze" else None
    patience = cfg.early_stopping_patience
    return f'''"""TRL supervised fine-tuning, written by nbkit from a TrainConfig: the same run in TRL.

Run:   python {EXPORT_FILES["trl"]} {DATA_FILES[0]} [{DATA_FILES[1]}]   (without the second file: VAL_SIZE of the first)
Rows:  {{"prompt": [{{"role": "user", "content": "..."}}], "completion": [{{"role": "assistant", "content": "..."}}]}}
nbkit settings with no TRL equivalent: predict_with_generate, max_new_tokens, eval_generate_samples.
"""
import torch
from peft import LoraConfig
from transformers import BitsAndBytesConfig
from trl import SFTConfig

MODEL = {_model_source(cfg.model)!r}
VAL_SIZE = {cfg.val_size!r}  # held out for eval_loss, as in nbkit (a fraction, or a count of rows)
FREEZE_TRAINABLE_LAYERS = {freeze!r}  # finetuning_type="freeze": only the last N decoder layers train
EARLY_STOPPING_PATIENCE = {patience!r}  # None = off; else stop at the Nth evaluation without improvement
EARLY_STOPPING_THRESHOLD = {cfg.early_stopping_threshold!r}

training_args = {python_call("SFTConfig", cfg.to_sft_config_kwargs())}

peft_config = {peft_config}

quantization_config = {_bnb_call(cfg.quantization_bit, cfg.bf16)}


def main(train_file, eval_file=None):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, EarlyStoppingCallback
    from trl import SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(MODEL, quantization_config=quantization_config,
                                                 trust_remote_code=training_args.trust_remote_code)
    if FREEZE_TRAINABLE_LAYERS:
        model.requires_grad_(False)
        for layer in model.model.layers[-FREEZE_TRAINABLE_LAYERS:]:
            layer.requires_grad_(True)
    if eval_file:  # nbkit's own split (write_dataset), so both tools see the same rows
        split = load_dataset("json", data_files={{"train": train_file, "test": eval_file}})
    else:
        split = load_dataset("json", data_files=train_file)["train"].train_test_split(
            test_size=VAL_SIZE, seed=training_args.seed)
    callbacks = []
    if EARLY_STOPPING_PATIENCE is not None:
        callbacks.append(EarlyStoppingCallback(EARLY_STOPPING_PATIENCE, EARLY_STOPPING_THRESHOLD))
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=split["train"],
                         eval_dataset=split["test"], peft_config=peft_config, callbacks=callbacks)
    trainer.train()
    trainer.save_model()


if __name__ == "__main__":
    import sys

    main(*sys.argv[1:3])
'''


def write_exports(cfg: TrainConfig, folder) -> dict:
    """Write the LLaMA-Factory YAML, the TRL script and the TrainingArguments JSON into `folder`.
    Returns {format: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt, name in EXPORT_FILES.items():
        path = folder / name
        path.write_text(export_text(cfg, fmt))
        written[fmt] = path
    return written


def prompt_completion(example: dict) -> dict:
    """nbkit's {"messages": [...]} as TRL's conversational prompt-completion row: the last
    assistant message is the completion (the part the loss counts), the rest the prompt."""
    messages = example["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def write_dataset(cfg: TrainConfig, folder) -> dict:
    """The train and validation rows nbkit uses for `cfg` (same cap, seed and split), as JSONL
    for the TRL script. Returns {"train": path, "validation": path}."""
    from nbkit.train import load_split

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, file_name, rows in zip(("train", "validation"), DATA_FILES, load_split(cfg)):
        path = folder / file_name
        path.write_text("".join(json.dumps(prompt_completion(row)) + "\n" for row in rows))
        written[name] = path
    return written
