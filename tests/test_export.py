"""Exports to the tools people use at work: TrainingArguments / SFTConfig kwargs, PEFT's LoraConfig,
the LLaMA-Factory YAML (parsed by LLaMA-Factory's own argument parser, its data files read by its own
reader), the TRL script (built and run with the installed TRL), and write_exports / write_dataset as
the capstone uses them; the CLI in test_cli.py, PEFT's LoraConfig on a model in test_peft_mapping.py."""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig
from transformers import (BitsAndBytesConfig, TrainingArguments,
                          get_scheduler)
from trl import SFTConfig

from nbkit.core.config import ConfigError, TrainConfig
from nbkit.core.data import load_split
from nbkit.core.export import (EXPORT_FILES, LLAMAFACTORY_DATASETS, LLAMAFACTORY_SECTIONS, export_text,
                               llamafactory_dict, llamafactory_yaml, prompt_completion, sft_config_kwargs,
                               shared_args, training_args_kwargs, trl_script, write_dataset, write_exports)
from nbkit.core.train import warmup_steps_for

LORA = dict(finetuning_type="lora")

REPO_ROOT = Path(__file__).resolve().parent.parent


def exported_objects(cfg: TrainConfig) -> dict:
    """Run the TRL script's module level (not its __main__ part): the objects it builds."""
    namespace = {"__name__": "exported_trl_script"}
    exec(compile(trl_script(cfg), "trl_sft.py", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("changes", [
    dict(finetuning_type="lora", lora_rank=16, lora_alpha=8, lora_target="q_proj,v_proj", lora_dropout=0.05),
    dict(finetuning_type="lora", quantization_bit=4, model="smollm2-135m"),  # bf16=True needs a GPU to build
    dict(finetuning_type="lora", quantization_bit=8, use_rslora=True),
    dict(finetuning_type="full", learning_rate=3e-5, gradient_accumulation_steps=4, warmup_ratio=0.1),
    dict(finetuning_type="freeze", freeze_trainable_layers=3, early_stopping_patience=2),
], ids=["lora", "qlora4", "qlora8-rslora", "full", "freeze"])
def test_trl_script_builds_the_same_config_in_trl_and_peft(changes, tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), **changes)
    ns = exported_objects(cfg)
    args = ns["training_args"]
    assert isinstance(args, SFTConfig)
    assert (args.learning_rate, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (
        cfg.learning_rate, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps)
    assert args.max_length == cfg.max_seq_length and args.completion_only_loss and not args.packing
    assert args.max_grad_norm == cfg.max_grad_norm and args.seed == cfg.seed and args.bf16 == cfg.bf16
    assert args.get_warmup_steps(1000) == round(1000 * cfg.warmup_ratio)
    assert ns["EARLY_STOPPING_PATIENCE"] == cfg.early_stopping_patience
    if cfg.finetuning_type == "lora":
        lora = ns["peft_config"]
        assert isinstance(lora, LoraConfig)
        assert (lora.r, lora.lora_alpha, lora.use_rslora) == (cfg.lora_rank, cfg.resolved_lora_alpha, cfg.use_rslora)
        assert lora.lora_dropout == cfg.lora_dropout
    else:
        assert ns["peft_config"] is None
    assert ns["FREEZE_TRAINABLE_LAYERS"] == (cfg.freeze_trainable_layers if cfg.finetuning_type == "freeze" else None)
    quant = ns["quantization_config"]
    if cfg.quantization_bit is None:
        assert quant is None
    else:
        assert isinstance(quant, BitsAndBytesConfig)
        assert (quant.load_in_4bit, quant.load_in_8bit) == (cfg.quantization_bit == 4, cfg.quantization_bit == 8)


def test_trl_marks_the_same_answer_tokens_as_nbkit(tmp_path):
    """The exported data and settings make TRL compute its loss on the answer, as nbkit does.
    One honest difference, seen here: TRL also counts the chat template's text after the end
    token (a newline for the tiny model), which nbkit leaves out; nothing else may differ."""
    from datasets import load_dataset
    from trl import SFTTrainer

    from nbkit.core.models import load_model
    from nbkit.core.train import build_datasets

    cfg = TrainConfig(max_samples=40, output_dir=str(tmp_path / "out"))
    model, tokenizer = load_model(cfg)
    _, val_features, _ = build_datasets(cfg, tokenizer)
    files = write_dataset(cfg, tmp_path / "data")
    data = load_dataset("json", data_files={"train": str(files["train"]), "test": str(files["validation"])})
    trainer = SFTTrainer(model=model, args=exported_objects(cfg)["training_args"], train_dataset=data["train"],
                         eval_dataset=data["test"], processing_class=tokenizer)
    assert len(trainer.eval_dataset) == len(val_features) > 0

    def answer(ids, labels):
        return tokenizer.decode([i for i, label in zip(ids, labels) if label != -100])

    for trl_row, ours in zip(trainer.eval_dataset, val_features):
        ours_answer = answer(ours["input_ids"], ours["labels"])
        trl_answer = answer(trl_row["input_ids"], trl_row["labels"])
        assert trl_answer.startswith(ours_answer) and trl_answer[len(ours_answer):].strip() == "", (
            f"TRL trains on {trl_answer!r}, nbkit on {ours_answer!r}")


def test_exported_trl_script_trains_the_tiny_model_from_the_shell(tmp_path):
    cfg = TrainConfig(finetuning_type="lora", max_samples=48, max_steps=2, per_device_train_batch_size=8,
                      logging_steps=1, output_dir=str(tmp_path / "trl_out"), disable_tqdm=True)
    written = write_exports(cfg, tmp_path)
    data = write_dataset(cfg, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, str(written["trl"]), str(data["train"]), str(data["validation"])],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = tmp_path / "trl_out"
    assert (saved / "adapter_config.json").is_file() and (saved / "adapter_model.safetensors").is_file()
    assert json.loads((saved / "adapter_config.json").read_text())["r"] == cfg.lora_rank


def test_write_exports_writes_three_files_each_readable_by_its_tool(tmp_path):
    cfg = TrainConfig(finetuning_type="lora", lora_rank=4, output_dir=str(tmp_path / "runs"))
    written = write_exports(cfg, tmp_path / "exports")
    assert {fmt: path.name for fmt, path in written.items()} == EXPORT_FILES
    loaded = yaml.safe_load(written["llamafactory"].read_text())
    assert loaded == llamafactory_dict(cfg, data_dir=tmp_path / "exports")
    assert (loaded["dataset"], loaded["eval_dataset"]) == LLAMAFACTORY_DATASETS  # what write_dataset writes there
    assert loaded["dataset_dir"] == str((tmp_path / "exports").resolve())
    assert "val_size" not in loaded and "max_samples" not in loaded  # the files are nbkit's capped split
    assert TrainingArguments(**json.loads(written["training_args"].read_text())).learning_rate == cfg.learning_rate
    compile(written["trl"].read_text(), "trl_sft.py", "exec")  # valid Python


def test_write_dataset_is_nbkits_own_split_in_prompt_completion_form(tmp_path):
    cfg = TrainConfig(dataset="reviews", output_dir=str(tmp_path))
    files = write_dataset(cfg, tmp_path)
    for name, examples in zip(("train", "validation"), load_split(cfg)):
        rows = [json.loads(line) for line in files[name].read_text().splitlines()]
        assert rows == [prompt_completion(e) for e in examples]
        assert all(r["completion"][0]["role"] == "assistant" and r["prompt"][-1]["role"] == "user" for r in rows)
        lf_rows = [json.loads(line) for line in files["llamafactory_" + name].read_text().splitlines()]
        assert lf_rows == [{"messages": e["messages"]} for e in examples]
    info = json.loads(files["dataset_info"].read_text())
    assert files["dataset_info"] == tmp_path / "dataset_info.json" and list(info) == list(LLAMAFACTORY_DATASETS)
    assert [info[name]["file_name"] for name in LLAMAFACTORY_DATASETS] == [
        files["llamafactory_train"].name, files["llamafactory_validation"].name]


def test_unknown_export_format_names_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"format='axolotl'.*llamafactory, trl"):
        export_text(TrainConfig(), "axolotl")


# ---------------------------------------------------------------- HF TrainingArguments

TRAINING_ARGS_CONFIGS = {
    "defaults": dict(),
    "cosine_warmup": dict(lr_scheduler_type="cosine", warmup_ratio=0.1, weight_decay=0.01),
    "restarts": dict(lr_scheduler_type="cosine_with_restarts", lr_scheduler_kwargs={"num_cycles": 2}),
    "polynomial": dict(lr_scheduler_type="polynomial", lr_scheduler_kwargs={"power": 2.0}, warmup_steps=5),
    "plateau": dict(lr_scheduler_type="reduce_lr_on_plateau", lr_scheduler_kwargs={"factor": 0.5, "patience": 0}),
    "sgd": dict(optim="sgd", sgd_momentum=0.8),
    "lion": dict(optim="lion_8bit", learning_rate=1e-4),
    "best_by_epoch": dict(load_best_model_at_end=True, early_stopping_patience=2),
    "best_by_steps": dict(load_best_model_at_end=True, eval_steps=20),
    "no_clip": dict(max_grad_norm=None, max_steps=100, gradient_accumulation_steps=4),
    "lora": dict(lora_rank=4, run_name="lora-r4", **LORA),
}


@pytest.mark.parametrize("values", TRAINING_ARGS_CONFIGS.values(), ids=TRAINING_ARGS_CONFIGS.keys())
def test_training_arguments_accept_the_export(values, tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), **values)
    args = TrainingArguments(**training_args_kwargs(cfg))
    assert args.learning_rate == cfg.learning_rate
    assert args.lr_scheduler_type.value == cfg.lr_scheduler_type
    assert args.optim.value == cfg.optim
    assert args.per_device_train_batch_size == cfg.per_device_train_batch_size
    assert args.gradient_accumulation_steps == cfg.gradient_accumulation_steps
    assert args.max_steps == cfg.max_steps
    assert args.max_grad_norm == (cfg.max_grad_norm or 0.0)
    assert args.load_best_model_at_end == cfg.load_best_model_at_end
    # The scheduler HF would build accepts the kwargs we pass through.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(200),
                  num_training_steps=200, scheduler_specific_kwargs=args.lr_scheduler_kwargs)


def test_warmup_ratio_becomes_a_fractional_warmup_steps():
    args = TrainingArguments(**training_args_kwargs(TrainConfig(warmup_ratio=0.1)))
    assert args.warmup_steps == 0.1
    assert args.get_warmup_steps(200) == 20


def test_warmup_steps_wins_over_warmup_ratio():
    args = TrainingArguments(**training_args_kwargs(TrainConfig(warmup_ratio=0.1, warmup_steps=7)))
    assert args.get_warmup_steps(200) == 7


def test_evaluation_and_saving_strategies():
    by_epoch = TrainingArguments(**training_args_kwargs(TrainConfig(load_best_model_at_end=True)))
    assert (by_epoch.eval_strategy.value, by_epoch.save_strategy.value) == ("epoch", "epoch")
    assert by_epoch.metric_for_best_model == "eval_loss" and by_epoch.greater_is_better is False
    by_steps = TrainingArguments(**training_args_kwargs(TrainConfig(eval_steps=25)))
    assert (by_steps.eval_strategy.value, by_steps.eval_steps, by_steps.save_strategy.value) == ("steps", 25, "no")


def test_sgd_momentum_reaches_hf_through_optim_args():
    kwargs = training_args_kwargs(TrainConfig(optim="sgd", sgd_momentum=0.8))
    assert kwargs["optim_args"] == "momentum=0.8"


@pytest.mark.parametrize("values, field_name, closest", [
    (dict(lr_scheduler_type="step", lr_scheduler_kwargs={"step_size": 1, "gamma": 0.5}), "lr_scheduler_type",
     "StepLR"),
    (dict(optim="adam_l2", weight_decay=0.01), "optim", "adamw_torch"),
])
def test_our_additions_have_no_hf_equivalent(values, field_name, closest):
    cfg = TrainConfig(**values)  # valid for nbkit's own loop
    for export in (training_args_kwargs, sft_config_kwargs, llamafactory_dict, llamafactory_yaml):
        with pytest.raises(ValueError) as caught:
            export(cfg)
        assert field_name in str(caught.value) and closest in str(caught.value)


# ---------------------------------------------------------------- LLaMA-Factory

# LLaMA-Factory itself (the llamafactory wheel, installed with --no-deps by the Makefile) is the judge
# of its YAML: its own argument parser with this lab's transformers, as `llamafactory-cli train` runs it.


@pytest.fixture
def llamafactory(monkeypatch):
    """LLaMA-Factory's hparams package, imported as llamafactory-cli would with its version check off
    (it pins transformers <= 5.6, datasets <= 4.0, trl <= 0.24; this lab runs newer ones) and its
    logging left at WARN (at INFO it turns transformers' logging to INFO for the whole session)."""
    monkeypatch.setenv("DISABLE_VERSION_CHECK", "1")
    monkeypatch.setenv("LLAMAFACTORY_VERBOSITY", "WARN")
    import llamafactory.hparams

    return llamafactory.hparams


def llamafactory_keys(hparams) -> set:
    """Every key LLaMA-Factory's train parser accepts: the fields of its argument dataclasses."""
    classes = (hparams.ModelArguments, hparams.DataArguments, hparams.TrainingArguments,
               hparams.FinetuningArguments, hparams.GeneratingArguments)
    return {field.name for cls in classes for field in dataclasses.fields(cls) if field.init}


def parse_like_llamafactory_cli(yaml_path, monkeypatch, hparams):
    """`llamafactory-cli train YAML` as far as its parser: read the file from the command line
    (OmegaConf, not PyYAML) and check the arguments. Returns (model, data, training, finetuning) args."""
    monkeypatch.setattr(sys, "argv", ["llamafactory-cli", str(yaml_path)])
    model_args, data_args, training_args, finetuning_args, _ = hparams.get_train_args()
    return model_args, data_args, training_args, finetuning_args


LORA_KEYS = {"lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_rslora", "use_dora"}

LLAMAFACTORY_CONFIGS = {
    "full": dict(),
    "freeze": dict(finetuning_type="freeze", freeze_trainable_layers=1),
    "lora": dict(lora_rank=16, lora_alpha=8, learning_rate=3e-4, warmup_ratio=0.05, **LORA),
    "qlora": dict(quantization_bit=4, use_rslora=True, adam_epsilon=1e-6, **LORA),
    "everything": dict(model="smollm2-135m", max_samples=500, max_steps=50, warmup_steps=3, optim="sgd",
                       lr_scheduler_type="cosine", lr_scheduler_kwargs={"num_cycles": 0.5}, eval_steps=10,
                       load_best_model_at_end=True, early_stopping_patience=3, max_grad_norm=None,
                       run_name="demo", bf16=True),
}


@pytest.mark.parametrize("values", LLAMAFACTORY_CONFIGS.values(), ids=LLAMAFACTORY_CONFIGS.keys())
def test_llamafactory_yaml_round_trips_with_its_keys(values, llamafactory):
    cfg = TrainConfig(**values)
    loaded = yaml.safe_load(llamafactory_yaml(cfg))
    assert loaded == llamafactory_dict(cfg)
    assert set(loaded) <= llamafactory_keys(llamafactory), set(loaded) - llamafactory_keys(llamafactory)
    for key in ("learning_rate", "adam_epsilon", "adam_beta2", "weight_decay", "num_train_epochs"):
        assert isinstance(loaded[key], float), key  # 3e-4 would come back as a string
    assert loaded["learning_rate"] == cfg.learning_rate
    assert loaded["finetuning_type"] == cfg.finetuning_type
    assert loaded["cutoff_len"] == cfg.max_seq_length
    assert (LORA_KEYS <= set(loaded)) == (cfg.finetuning_type == "lora")
    assert ("freeze_trainable_layers" in loaded) == (cfg.finetuning_type == "freeze")
    assert loaded["stage"] == "sft" and loaded["do_train"] is True


def test_every_key_written_has_a_yaml_section_and_is_a_llamafactory_key(llamafactory):
    placed = list(itertools.chain(*LLAMAFACTORY_SECTIONS.values()))
    assert len(placed) == len(set(placed))  # each key in one section only
    assert set(placed) <= llamafactory_keys(llamafactory), set(placed) - llamafactory_keys(llamafactory)


@pytest.mark.parametrize("values", LLAMAFACTORY_CONFIGS.values(), ids=LLAMAFACTORY_CONFIGS.keys())
def test_shared_keys_have_the_same_value_in_hf_and_llamafactory(values):
    cfg = TrainConfig(**values)
    hf, lf = training_args_kwargs(cfg), llamafactory_dict(cfg)
    shared = shared_args(cfg)
    assert hf == {"output_dir": cfg.output_dir, **shared}
    assert list(hf)[1:] == list(shared)  # TrainingArguments' order, as the JSON export writes it
    dropped_at_default = {"lr_scheduler_kwargs", "max_steps"}  # LLaMA-Factory's only differences
    for key, value in shared.items():
        if key not in dropped_at_default:
            assert lf[key] == value, key
    assert lf["warmup_steps"] == (cfg.warmup_steps or cfg.warmup_ratio)
    assert lf.get("lr_scheduler_kwargs", {}) == shared["lr_scheduler_kwargs"]
    assert lf.get("max_steps", -1) == shared["max_steps"]


def test_sft_config_kwargs_are_the_training_args_plus_trl_keys():
    cfg = TrainConfig(max_seq_length=128, trust_remote_code=True)
    kwargs = sft_config_kwargs(cfg)
    assert list(kwargs)[:len(training_args_kwargs(cfg))] == list(training_args_kwargs(cfg))
    assert (kwargs["max_length"], kwargs["packing"], kwargs["completion_only_loss"]) == (128, False, True)
    assert kwargs["trust_remote_code"] is True and kwargs["activation_checkpointing"] is False


def test_llamafactory_lora_values():
    loaded = yaml.safe_load(llamafactory_yaml(TrainConfig(lora_rank=16, quantization_bit=4, **LORA)))
    assert (loaded["lora_rank"], loaded["lora_alpha"], loaded["lora_target"]) == (16, 32, "all")
    assert (loaded["quantization_bit"], loaded["quantization_method"]) == (4, "bnb")


def test_llamafactory_models_and_templates():
    tiny = llamafactory_dict(TrainConfig())
    assert tiny["model_name_or_path"].endswith("data/tiny") and tiny["model_name_or_path"].startswith("/")
    smol = llamafactory_dict(TrainConfig(model="smollm2-135m"))
    assert (smol["model_name_or_path"], smol["template"]) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2")
    hub = llamafactory_dict(TrainConfig(model="Qwen/Qwen2.5-0.5B-Instruct"))
    assert hub["model_name_or_path"] == "Qwen/Qwen2.5-0.5B-Instruct"


def test_llamafactory_warmup_schedule_and_early_stopping():
    # warmup_ratio is gone from transformers 5 (this lab's), so LLaMA-Factory's parser refuses it there:
    # the ratio goes as a float warmup_steps below 1, the form transformers 5 reads as a ratio.
    by_ratio = llamafactory_dict(TrainConfig(warmup_ratio=0.1))
    assert by_ratio["warmup_steps"] == 0.1 and "warmup_ratio" not in by_ratio
    assert "warmup_steps below 1 is a fraction" in llamafactory_yaml(TrainConfig(warmup_ratio=0.1))
    by_steps = llamafactory_dict(TrainConfig(warmup_ratio=0.1, warmup_steps=4, early_stopping_patience=2))
    assert by_steps["warmup_steps"] == 4 and "warmup_ratio" not in by_steps
    assert by_steps["early_stopping_steps"] == 2
    none = llamafactory_dict(TrainConfig())
    assert none["warmup_steps"] == 0 and isinstance(none["warmup_steps"], int)  # transformers 4.x takes it too


def test_llamafactory_jsonl_dataset(tmp_path):
    data = tmp_path / "my_task.jsonl"
    data.write_text('{"instruction": "1+1", "output": "2"}\n')
    loaded = llamafactory_dict(TrainConfig(dataset=str(data)))
    assert (loaded["dataset"], loaded["dataset_dir"]) == ("my_task", str(tmp_path.resolve()))


# The YAML as write_exports writes it beside write_dataset's split, for the configs people run:
# LLaMA-Factory's parser must accept it and read back the same run.
LLAMAFACTORY_PARSED = {
    "full": dict(learning_rate=3e-5, gradient_accumulation_steps=4, warmup_ratio=0.1, num_train_epochs=2),
    "lora": dict(lora_rank=16, lora_alpha=8, learning_rate=3e-4, warmup_ratio=0.05, lora_target="q_proj,v_proj",
                 **LORA),
    "qlora4": dict(quantization_bit=4, use_rslora=True, per_device_train_batch_size=4, **LORA),
    "eval_steps": dict(eval_steps=10, load_best_model_at_end=True, early_stopping_patience=3, warmup_steps=3,
                       max_steps=50, lr_scheduler_type="cosine", lr_scheduler_kwargs={"num_cycles": 0.5}, **LORA),
    "freeze_sgd": dict(finetuning_type="freeze", freeze_trainable_layers=1, optim="sgd", max_grad_norm=None),
}


@pytest.mark.parametrize("values", LLAMAFACTORY_PARSED.values(), ids=LLAMAFACTORY_PARSED.keys())
def test_llamafactory_parser_accepts_the_exported_yaml(values, llamafactory, monkeypatch, tmp_path):
    cfg = TrainConfig(max_samples=40, output_dir=str(tmp_path / "runs"), **values)
    yaml_path = write_exports(cfg, tmp_path / "exports")["llamafactory"]
    write_dataset(cfg, tmp_path / "exports")
    model, data, train, method = parse_like_llamafactory_cli(yaml_path, monkeypatch, llamafactory)

    assert model.model_name_or_path == str(REPO_ROOT / "data" / "tiny")  # a local folder: no hub
    assert model.quantization_bit == cfg.quantization_bit
    assert (data.dataset, data.eval_dataset) == ([LLAMAFACTORY_DATASETS[0]], [LLAMAFACTORY_DATASETS[1]])
    assert data.dataset_dir == str((tmp_path / "exports").resolve()) and data.cutoff_len == cfg.max_seq_length
    assert (train.learning_rate, train.per_device_train_batch_size, train.gradient_accumulation_steps) == (
        cfg.learning_rate, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps)
    assert (train.num_train_epochs, train.max_steps) == (cfg.num_train_epochs, cfg.max_steps)
    assert (train.lr_scheduler_type.value, train.optim.value) == (cfg.lr_scheduler_type, cfg.optim)
    assert (train.weight_decay, train.max_grad_norm, train.seed) == (cfg.weight_decay, cfg.max_grad_norm or 0.0,
                                                                     cfg.seed)
    for total in (7, 40, 1000):  # the same warmup as nbkit's own loop, at any run length
        assert train.get_warmup_steps(total) == warmup_steps_for(cfg, total), total
    assert train.eval_strategy.value == ("epoch" if cfg.eval_steps is None else "steps")
    assert train.load_best_model_at_end == cfg.load_best_model_at_end
    assert method.stage == "sft" and method.finetuning_type == cfg.finetuning_type
    assert method.early_stopping_steps == cfg.early_stopping_patience
    if cfg.finetuning_type == "lora":
        assert (method.lora_rank, method.lora_alpha, method.use_rslora) == (
            cfg.lora_rank, cfg.resolved_lora_alpha, cfg.use_rslora)
        assert method.lora_target == [name.strip() for name in cfg.lora_target.split(",")]
    if cfg.finetuning_type == "freeze":
        assert method.freeze_trainable_layers == cfg.freeze_trainable_layers


def test_llamafactory_parser_refuses_warmup_ratio_under_this_transformers(llamafactory, monkeypatch, tmp_path):
    """Why the YAML says warmup_steps: the key the issue saw refused is still refused, so the test
    above would catch it coming back."""
    cfg = TrainConfig(warmup_ratio=0.1, output_dir=str(tmp_path / "runs"))
    args = llamafactory_dict(cfg, data_dir=tmp_path)
    args["warmup_ratio"] = args.pop("warmup_steps")
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(args))
    with pytest.raises(ValueError, match="warmup_ratio"):
        parse_like_llamafactory_cli(tmp_path / "old.yaml", monkeypatch, llamafactory)


def test_llamafactory_reads_the_written_split_as_nbkits_rows(llamafactory, monkeypatch, tmp_path):
    """The YAML's dataset and eval_dataset, looked up in its dataset_dir's dataset_info.json and
    converted by LLaMA-Factory's own reader, are nbkit's train and validation rows, turn for turn.
    LLaMA-Factory's data package __init__ imports its multimodal plugin, which imports torchaudio (not
    installed: PyPI's build does not load with a CPU torch); the dataset_info.json reader and the
    format converters it uses need neither, so they are imported from that folder directly."""
    from datasets import load_dataset

    cfg = TrainConfig(dataset="reviews", max_samples=30, output_dir=str(tmp_path / "runs"), **LORA)
    yaml_path = write_exports(cfg, tmp_path / "exports")["llamafactory"]
    write_dataset(cfg, tmp_path / "exports")
    _, data_args, training_args, _ = parse_like_llamafactory_cli(yaml_path, monkeypatch, llamafactory)

    data_package = types.ModuleType("llamafactory.data")
    data_package.__path__ = [str(Path(llamafactory.__file__).parent.parent / "data")]
    monkeypatch.setitem(sys.modules, "llamafactory.data", data_package)
    from llamafactory.data.converter import align_dataset
    from llamafactory.data.parser import get_dataset_list

    for names, examples in zip((data_args.dataset, data_args.eval_dataset), load_split(cfg)):
        [attr] = get_dataset_list(names, data_args.dataset_dir)
        assert attr.load_from == "file" and attr.formatting == "sharegpt"
        rows = load_dataset("json", data_files=str(Path(data_args.dataset_dir) / attr.dataset_name), split="train",
                            cache_dir=str(tmp_path / "hf_cache"))
        aligned = align_dataset(rows, attr, data_args, training_args)
        assert len(aligned) == len(examples) > 0
        for row, example in zip(aligned, examples):
            assert row["_prompt"] + row["_response"] == example["messages"]  # invalid rows come back empty

