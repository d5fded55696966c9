"""Exports to the tools people use at work: the TRL script (built and run with the installed TRL),
and write_exports / write_dataset as the capstone uses them. The LLaMA-Factory YAML and the
TrainingArguments kwargs are tested key by key in test_config.py; the CLI in test_cli.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from peft import LoraConfig
from transformers import BitsAndBytesConfig, TrainingArguments
from trl import SFTConfig

from nbkit.config import ConfigError, TrainConfig
from nbkit.export import EXPORT_FILES, export_text, prompt_completion, trl_script, write_dataset, write_exports

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

    from nbkit.models import load_model
    from nbkit.train import build_datasets

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
    assert yaml.safe_load(written["llamafactory"].read_text()) == cfg.to_llamafactory_dict()
    assert TrainingArguments(**json.loads(written["training_args"].read_text())).learning_rate == cfg.learning_rate
    compile(written["trl"].read_text(), "trl_sft.py", "exec")  # valid Python


def test_write_dataset_is_nbkits_own_split_in_prompt_completion_form(tmp_path):
    from nbkit.train import load_split

    cfg = TrainConfig(dataset="reviews", output_dir=str(tmp_path))
    files = write_dataset(cfg, tmp_path)
    for path, examples in zip(files.values(), load_split(cfg)):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert rows == [prompt_completion(e) for e in examples]
        assert all(r["completion"][0]["role"] == "assistant" and r["prompt"][-1]["role"] == "user" for r in rows)


def test_unknown_export_format_names_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"format='axolotl'.*llamafactory, trl"):
        export_text(TrainConfig(), "axolotl")
