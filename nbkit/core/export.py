"""Carry a TrainConfig to the tools used at work.

    llamafactory    a LLaMA-Factory SFT YAML            (llamafactory-cli train FILE)
    trl             a TRL script: SFTConfig + PEFT LoraConfig (python FILE train.jsonl)
    training_args   HF TrainingArguments kwargs as JSON (or Python with style="python")
    lora            PEFT LoraConfig kwargs as JSON (or Python)

    TrainingArguments(**training_args_kwargs(cfg))      # the same run in HF Trainer
    SFTConfig(**sft_config_kwargs(cfg))                  # ... in TRL
    get_peft_model(model, lora_config(cfg))              # ... in PEFT (nbkit.core.peft_mapping)
    Path("sft.yaml").write_text(llamafactory_yaml(cfg))  # ... in LLaMA-Factory

`write_exports(cfg, folder)` writes the first three side by side and `write_dataset(cfg, folder)`
nbkit's own train/validation split beside them, for TRL (prompt-completion JSONL) and for LLaMA-Factory
(its JSONL and the dataset_info.json entries the YAML names), as the capstone does; then both tools
train on the same rows as they are. `python -m nbkit export --format F` prints one.

HF TrainingArguments and LLaMA-Factory (whose training arguments subclass HF's) share most keys,
with the same name and value: `shared_args` builds them once, and each tool's function adds only
its differences. A config a tool cannot express raises ConfigError naming the field, the value
and what is allowed.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from nbkit.core.config import DATASET_NAMES, ConfigError, TrainConfig
from nbkit.core.data import load_split
from nbkit.core.i18n import _
from nbkit.core.peft_mapping import lora_args, lora_config_kwargs
from nbkit.core.peft_mapping import lora_config  # noqa: F401  (export.lora_config, as before it moved)

EXPORT_FORMATS = ("llamafactory", "trl", "training_args", "lora")
EXPORT_FILES = {"llamafactory": "llamafactory_sft.yaml", "trl": "trl_sft.py", "training_args": "training_args.json"}
DATA_FILES = ("train.jsonl", "validation.jsonl")  # write_dataset: nbkit's own split, in TRL's format
# ... and in LLaMA-Factory's: rows {"messages": [...]} (its "sharegpt" format with OpenAI role names; its
# converters read one list of turns, not TRL's prompt and completion columns), registered in
# dataset_info.json under these names, which the YAML's dataset and eval_dataset give.
LLAMAFACTORY_DATA_FILES = ("llamafactory_train.jsonl", "llamafactory_validation.jsonl")
LLAMAFACTORY_DATASETS = ("nbkit_train", "nbkit_validation")
DATASET_INFO = "dataset_info.json"  # LLaMA-Factory's fixed name for it, looked up in dataset_dir

# What other tools load for a registry model (nbkit.core.models loads them its own way).
MODEL_SOURCES = {
    "tiny": str(Path(__file__).resolve().parents[2] / "data" / "tiny"),
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


# ---------------------------------------------------------------------- the keys HF and LLaMA-Factory share


def shared_args(cfg: TrainConfig) -> dict:
    """Keys HF TrainingArguments and LLaMA-Factory both take, with the same name and value,
    in TrainingArguments' order. Conditional keys are left out when unset."""
    args = {
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "lr_scheduler_kwargs": dict(cfg.lr_scheduler_kwargs),
        # One key that HF, TRL and LLaMA-Factory read alike on every transformers 5: warmup_steps, whole
        # steps when set, else our warmup_ratio as a float below 1 ("an integer (exact steps) or a float
        # in [0, 1) (ratio of total steps)", TrainingArguments.warmup_steps since 5.0; get_warmup_steps
        # takes ceil(total * ratio), as nbkit.core.train.warmup_steps_for does). warmup_ratio is
        # deprecated since 5.0 (5.0-5.6 still copy it into warmup_steps) and gone by 5.25, where
        # HfArgumentParser, so LLaMA-Factory's parser, refuses it as an unused key. No warmup is the
        # int 0, which transformers 4.x (whole warmup_steps only) accepts too.
        "warmup_steps": cfg.warmup_steps or cfg.warmup_ratio or 0,
        "optim": cfg.optim,
        "adam_beta1": cfg.adam_beta1,
        "adam_beta2": cfg.adam_beta2,
        "adam_epsilon": cfg.adam_epsilon,
        "weight_decay": cfg.weight_decay,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "per_device_eval_batch_size": cfg.per_device_eval_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "num_train_epochs": float(cfg.num_train_epochs),
        "max_steps": cfg.max_steps,
        "max_grad_norm": cfg.max_grad_norm or 0.0,  # HF: 0 = no clipping
        "seed": cfg.seed,
        "full_determinism": cfg.full_determinism,
        "dataloader_num_workers": cfg.dataloader_num_workers,
        "bf16": cfg.bf16,
        "fp16": cfg.fp16,
        "logging_steps": cfg.logging_steps,
        "disable_tqdm": cfg.disable_tqdm,
        "report_to": "none",
    }
    if cfg.optim == "sgd":  # HF builds SGD without momentum unless optim_args names it
        args["optim_args"] = f"momentum={cfg.sgd_momentum}"
    if cfg.run_name is not None:
        args["run_name"] = cfg.run_name
    args["eval_strategy"] = "epoch" if cfg.eval_steps is None else "steps"
    if cfg.eval_steps is not None:
        args["eval_steps"] = cfg.eval_steps
    # No checkpoints, as in our runs, unless the best one must be reloaded at the end.
    args["save_strategy"] = args["eval_strategy"] if cfg.load_best_model_at_end else "no"
    if cfg.load_best_model_at_end and cfg.eval_steps is not None:
        args["save_steps"] = cfg.eval_steps
    args["load_best_model_at_end"] = cfg.load_best_model_at_end
    args["metric_for_best_model"] = "eval_loss"  # what early stopping and load_best_model_at_end compare
    args["greater_is_better"] = False
    return args


def _require_hf_equivalent(cfg: TrainConfig, tool: str) -> None:
    """Our two additions to the HF names have no equivalent in HF or LLaMA-Factory."""
    if cfg.lr_scheduler_type == "step":
        raise ConfigError(_(
            "lr_scheduler_type='step' (our step decay) has no {tool} equivalent; closest: 'cosine' or "
            "'polynomial', or build torch.optim.lr_scheduler.StepLR and pass Trainer(optimizers=(opt, sched)).")
            .format(tool=tool))
    if cfg.optim == "adam_l2":
        raise ConfigError(_(
            "optim='adam_l2' (Adam with coupled L2 weight decay) has no {tool} equivalent: HF's Adam variants "
            "decouple weight decay; closest: 'adamw_torch', or "
            "Trainer(optimizer_cls_and_kwargs=(torch.optim.Adam, {{'weight_decay': ...}})).").format(tool=tool))


def model_source(model: str) -> str:
    """What other tools load: a registry model's folder or HF id, a local folder as an absolute path."""
    if model in MODEL_SOURCES:
        return MODEL_SOURCES[model]
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser().resolve())
    return model


# ---------------------------------------------------------------------- HF TrainingArguments and TRL


def training_args_kwargs(cfg: TrainConfig) -> dict:
    """Keyword arguments for `transformers.TrainingArguments` (5.x) meaning the same run.

    Not representable there: max_seq_length, val_size, the data and model (the Trainer gets them),
    predict_with_generate (HF: Seq2SeqTrainingArguments / compute_metrics), and early stopping
    (HF: `EarlyStoppingCallback(early_stopping_patience, early_stopping_threshold)`; the
    metric it needs, eval_loss, is set here). HF evaluates on one schedule only, so with
    eval_steps it evaluates every eval_steps steps and not also at epoch ends.
    """
    _require_hf_equivalent(cfg, "TrainingArguments")
    return {"output_dir": cfg.output_dir, **shared_args(cfg)}


def sft_config_kwargs(cfg: TrainConfig) -> dict:
    """Keyword arguments for TRL's `SFTConfig` (TRL 1.x, a subclass of TrainingArguments):
    the TrainingArguments ones plus how TRL cuts, packs and masks the data. Our rows are
    padded, never packed, and the loss counts only the answer, which TRL does for
    prompt-completion data (completion_only_loss)."""
    return {
        **training_args_kwargs(cfg),
        "max_length": cfg.max_seq_length,  # TRL's name for cutoff_len / max_seq_length
        "packing": False,  # one example a row, padded, as in our loader
        "completion_only_loss": True,  # labels masked to the answer, as in nbkit.core.data
        "trust_remote_code": cfg.trust_remote_code,
        # TRL turns checkpointing on by default; our runs keep every activation. Set under its
        # transformers 5 name (gradient_checkpointing is a deprecated alias that warns).
        "activation_checkpointing": False,
    }


# ---------------------------------------------------------------------- LLaMA-Factory

# Where each key goes in the YAML, section by section; a key a config does not set is skipped.
LLAMAFACTORY_SECTIONS = {
    "model": ("model_name_or_path", "trust_remote_code", "quantization_bit", "quantization_method"),
    "method": ("stage", "do_train", "finetuning_type", "freeze_trainable_layers", "lora_rank", "lora_alpha",
               "lora_dropout", "lora_target", "use_rslora", "use_dora"),
    "dataset": ("dataset", "eval_dataset", "dataset_dir", "template", "cutoff_len", "max_samples",
                "dataloader_num_workers"),
    "output": ("output_dir", "logging_steps", "report_to", "run_name", "disable_tqdm"),
    "train": ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "num_train_epochs",
              "max_steps", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "optim",
              "optim_args", "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay", "max_grad_norm", "bf16",
              "fp16", "seed", "full_determinism"),
    "eval": ("val_size", "per_device_eval_batch_size", "eval_strategy", "eval_steps", "save_strategy", "save_steps",
             "load_best_model_at_end", "metric_for_best_model", "greater_is_better", "early_stopping_steps"),
}


def _llamafactory_args(cfg: TrainConfig, data_dir=None) -> dict:
    """Every LLaMA-Factory key for the run: the shared keys (left out where they are at
    LLaMA-Factory's default), plus its own model, method and data keys."""
    _require_hf_equivalent(cfg, "LLaMA-Factory")
    args = shared_args(cfg)
    if not cfg.lr_scheduler_kwargs:  # keys left at their default stay out of the YAML
        del args["lr_scheduler_kwargs"]
    if cfg.max_steps == -1:
        del args["max_steps"]
    # Our output_dir is a store of runs; LLaMA-Factory's is one run's folder.
    args["output_dir"] = str(Path(cfg.output_dir) / (cfg.run_name or "llamafactory_sft"))
    args.update(_llamafactory_model(cfg))
    args.update(_llamafactory_data(cfg, data_dir))
    if cfg.early_stopping_patience is not None:
        args["early_stopping_steps"] = cfg.early_stopping_patience  # counted in evaluations
    return args


def _llamafactory_model(cfg: TrainConfig) -> dict:
    """The model, its quantization and the fine-tuning method."""
    args = {"model_name_or_path": model_source(cfg.model), "trust_remote_code": cfg.trust_remote_code}
    if cfg.quantization_bit is not None:
        args.update(quantization_bit=cfg.quantization_bit, quantization_method="bnb")
    args.update(stage="sft", do_train=True, finetuning_type=cfg.finetuning_type)
    if cfg.finetuning_type == "freeze":
        args["freeze_trainable_layers"] = cfg.freeze_trainable_layers
    if cfg.finetuning_type == "lora":
        args.update(lora_args(cfg))
    return args


def _llamafactory_data(cfg: TrainConfig, data_dir=None) -> dict:
    """The data keys. With `data_dir`: nbkit's own split, as write_dataset(cfg, data_dir) writes it
    (already capped and split, so no max_samples or val_size: LLaMA-Factory refuses val_size beside
    an eval_dataset). Without: the dataset by name, split by LLaMA-Factory with val_size."""
    if data_dir is not None:
        args = dict(zip(("dataset", "eval_dataset"), LLAMAFACTORY_DATASETS), dataset_dir=str(Path(data_dir).resolve()))
    elif cfg.dataset in DATASET_NAMES:
        args = {"dataset": cfg.dataset}
    else:  # a .jsonl file: LLaMA-Factory looks datasets up by name in dataset_dir/dataset_info.json
        path = Path(cfg.dataset).resolve()
        args = {"dataset": path.stem, "dataset_dir": str(path.parent)}
    args["template"] = "smollm2" if cfg.model == "smollm2-135m" else "default"
    args["cutoff_len"] = cfg.max_seq_length
    if data_dir is None:
        if cfg.max_samples is not None:
            args["max_samples"] = cfg.max_samples
        args["val_size"] = cfg.val_size
    return args


def llamafactory_sections(cfg: TrainConfig, data_dir=None) -> list:
    """[(section title, {key: value})] in the order the YAML lists them."""
    args = _llamafactory_args(cfg, data_dir)
    sections = [(title, {key: args.pop(key) for key in keys if key in args})
                for title, keys in LLAMAFACTORY_SECTIONS.items()]
    assert not args, f"keys with no LLaMA-Factory section: {sorted(args)}"
    return sections


def llamafactory_dict(cfg: TrainConfig, data_dir=None) -> dict:
    """The same run as LLaMA-Factory SFT arguments, with LLaMA-Factory's own key names; with
    `data_dir`, on the split write_dataset(cfg, data_dir) writes there."""
    merged = {}
    for _title, section in llamafactory_sections(cfg, data_dir):
        merged.update(section)
    return merged


def llamafactory_yaml(cfg: TrainConfig, data_dir=None) -> str:
    """A LLaMA-Factory training YAML: `llamafactory-cli train this.yaml`; `data_dir` as in
    llamafactory_dict."""
    lines = [
        "# LLaMA-Factory SFT config written by nbkit from a TrainConfig.",
        "# Run it with: llamafactory-cli train THIS_FILE.yaml",
        "# Data: nbkit's own train/validation split, in dataset_dir with its dataset_info.json entries."
        if data_dir is not None else
        "# The dataset must have an entry in dataset_info.json (in dataset_dir, default ./data).",
        "# Not carried over (LLaMA-Factory has no equivalent): predict_with_generate, max_new_tokens,",
        "# eval_generate_samples, early_stopping_threshold.",
    ]
    if 0 < shared_args(cfg)["warmup_steps"] < 1:
        lines += ["# warmup_steps below 1 is a fraction of all steps (transformers 5); on transformers 4.x,",
                  "# which takes whole warmup_steps only, write it as warmup_ratio."]
    for title, section in llamafactory_sections(cfg, data_dir):
        lines += ["", f"### {title}", yaml.safe_dump(section, sort_keys=False).rstrip()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- rendering


def export_text(cfg: TrainConfig, fmt: str, style: str = "json") -> str:
    """The config in format `fmt` (one of EXPORT_FORMATS); `style` is json or python for the
    two kwargs formats."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(_("format={fmt!r} is not allowed; allowed: {allowed}").format(
            fmt=fmt, allowed=", ".join(EXPORT_FORMATS)))
    if fmt == "llamafactory":
        return llamafactory_yaml(cfg)
    if fmt == "trl":
        return trl_script(cfg)
    if fmt == "training_args":
        kwargs, call, module = training_args_kwargs(cfg), "TrainingArguments", "transformers"
    else:
        kwargs, call, module = lora_config_kwargs(cfg), "LoraConfig", "peft"
    if style == "python":
        return "\n".join([f"from {module} import {call}", "", python_call(call, kwargs)]) + "\n"
    return json.dumps(kwargs, indent=2) + "\n"


def python_call(name: str, kwargs: dict, indent: str = "") -> str:
    """Code for `name(**kwargs)`, one argument a line (values as Python literals)."""
    lines = [f"{name}("] + [f"{indent}    {key}={value!r}," for key, value in kwargs.items()]
    return "\n".join(lines + [f"{indent})"])


def _bnb_call(bits: int | None, bf16: bool) -> str:
    """The BitsAndBytesConfig nbkit.core.models uses for QLoRA, as code."""
    if bits is None:
        return "None  # no quantisation: the base trains or stays frozen in full precision"
    if bits == 4:  # the QLoRA paper's recipe, as in nbkit.core.models._quantization_config
        compute = "bfloat16" if bf16 else "float32"
        return ('BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", '
                f'bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.{compute})')
    return "BitsAndBytesConfig(load_in_8bit=True)"


def trl_script(cfg: TrainConfig) -> str:
    """A runnable TRL script for the same run. Importing it builds `training_args` (SFTConfig),
    `peft_config` (LoraConfig or None) and `quantization_config`; running it trains.
    Data: JSONL rows {"prompt": [{"role": "user", ...}], "completion": [{"role": "assistant", ...}]},
    TRL's conversational prompt-completion format, so the loss counts only the answer."""
    peft_config = python_call("LoraConfig", lora_config_kwargs(cfg)) if cfg.finetuning_type == "lora" else \
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

MODEL = {model_source(cfg.model)!r}
VAL_SIZE = {cfg.val_size!r}  # held out for eval_loss, as in nbkit (a fraction, or a count of rows)
FREEZE_TRAINABLE_LAYERS = {freeze!r}  # finetuning_type="freeze": only the last N decoder layers train
EARLY_STOPPING_PATIENCE = {patience!r}  # None = off; else stop at the Nth evaluation without improvement
EARLY_STOPPING_THRESHOLD = {cfg.early_stopping_threshold!r}

training_args = {python_call("SFTConfig", sft_config_kwargs(cfg))}

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
    The YAML trains on the split write_dataset(cfg, folder) writes beside it. Returns {format: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt, name in EXPORT_FILES.items():
        path = folder / name
        path.write_text(llamafactory_yaml(cfg, data_dir=folder) if fmt == "llamafactory" else export_text(cfg, fmt))
        written[fmt] = path
    return written


def prompt_completion(example: dict) -> dict:
    """nbkit's {"messages": [...]} as TRL's conversational prompt-completion row: the last
    assistant message is the completion (the part the loss counts), the rest the prompt."""
    messages = example["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


# LLaMA-Factory's dataset_info.json entry for a file of {"messages": [{"role": ..., "content": ...}]} rows.
LLAMAFACTORY_MESSAGES_FORMAT = {
    "formatting": "sharegpt",
    "columns": {"messages": "messages"},
    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
             "system_tag": "system"},
}


def write_dataset(cfg: TrainConfig, folder) -> dict:
    """The train and validation rows nbkit uses for `cfg` (same cap, seed and split), as JSONL for
    the TRL script (train, validation) and for LLaMA-Factory (llamafactory_train,
    llamafactory_validation, registered in dataset_info), so that the files write_exports(cfg,
    folder) writes train on them as they are. Returns {name: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, dataset_info = {}, {}
    for name, trl_file, lf_name, lf_file, rows in zip(("train", "validation"), DATA_FILES, LLAMAFACTORY_DATASETS,
                                                      LLAMAFACTORY_DATA_FILES, load_split(cfg)):
        written[name] = folder / trl_file
        written[name].write_text("".join(json.dumps(prompt_completion(row)) + "\n" for row in rows))
        written["llamafactory_" + name] = folder / lf_file
        written["llamafactory_" + name].write_text("".join(json.dumps({"messages": row["messages"]}) + "\n"
                                                           for row in rows))
        dataset_info[lf_name] = {"file_name": lf_file, **LLAMAFACTORY_MESSAGES_FORMAT}  # relative to dataset_dir
    written["dataset_info"] = folder / DATASET_INFO
    written["dataset_info"].write_text(json.dumps(dataset_info, indent=2) + "\n")
    return written
