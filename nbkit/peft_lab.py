"""Parameter-efficient fine-tuning, measured: chapter 5's tools.

    METHODS, method_config(base, "qlora-4bit")     full / freeze / LoRA / QLoRA 8-bit / QLoRA 4-bit
    training_memory(cfg)                            weights + gradients + optimizer state, measured
    seconds_per_step(run), forgetting(run, ...)     cost and damage of a finished run
    lora_update_norm(model)                         ||scaling * B @ A|| summed over the adapted layers
    quantization_error(model, bits)                 how far the quantised base's weights are from fp32
    save_adapter(run), reload_validation_loss(...)  the adapter as an artifact, reloaded by plain PEFT

Everything is real: PEFT adapters, bitsandbytes NF4 / int8 weights (both work on the CPU), tensors
measured as allocated. Nothing is simulated or estimated here (the planner is nbkit.memory's job).
"""
from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch

from nbkit.config import TrainConfig
from nbkit.evaluate import heldout_text_loss
from nbkit.models import count_parameters, load_base_model, load_model, memory_footprint
from nbkit.train import build_optimizer, optimizer_state_bytes, quiet_loading

# The chapter's methods, as TrainConfig fields (LLaMA-Factory's names). QLoRA = LoRA on a base
# quantised by bitsandbytes: 8-bit (LLM.int8) or 4-bit NF4 with double quantisation.
METHODS = {
    "full": dict(finetuning_type="full"),
    "freeze": dict(finetuning_type="freeze"),
    "lora": dict(finetuning_type="lora"),
    "qlora-8bit": dict(finetuning_type="lora", quantization_bit=8),
    "qlora-4bit": dict(finetuning_type="lora", quantization_bit=4),
}
ADAPTER_DIR = "adapter"  # save_adapter's folder inside the run folder
MEMORY_PROBE_TOKENS = 16  # one short row is enough: weights, gradients and optimizer state do not depend on it


def method_config(base: TrainConfig, method: str) -> TrainConfig:
    """base with one of METHODS applied (LoRA fields of base are kept; quantization_bit is set)."""
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not allowed; allowed: {', '.join(METHODS)}")
    fields = {"quantization_bit": None, **METHODS[method]}
    return base.replace(**fields)


def method_of(config: dict) -> str:
    """The METHODS name of a run's config dict."""
    if config["finetuning_type"] != "lora":
        return config["finetuning_type"]
    bits = config.get("quantization_bit")
    return f"qlora-{bits}bit" if bits else "lora"


def _grad_bytes(model) -> int:
    return sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)


def training_memory(cfg: TrainConfig) -> dict:
    """Bytes of the weights (as stored: 4-bit, 8-bit or fp32), of the gradients and of the
    optimizer state, measured on the tensors of a fresh model after ONE real training step
    (gradients exist after backward; the optimizer creates its state at its first step).
    Activations are left out: they depend on batch and length, not on the method."""
    torch.manual_seed(cfg.seed)
    with quiet_loading(cfg.disable_tqdm):
        model, _ = load_model(cfg)
    optimizer = build_optimizer(cfg, model)
    tokens = torch.arange(2, 2 + MEMORY_PROBE_TOKENS).unsqueeze(0)
    model(input_ids=tokens).logits.float().pow(2).mean().backward()
    gradients = _grad_bytes(model)
    optimizer.step()
    out = dict(count_parameters(model), weights_bytes=memory_footprint(model), gradient_bytes=gradients,
               optimizer_bytes=optimizer_state_bytes(optimizer))
    out["total_bytes"] = out["weights_bytes"] + out["gradient_bytes"] + out["optimizer_bytes"]
    return out


def preview(cfg: TrainConfig) -> str:
    """One line for the panel, before training: what trains and what it costs in memory."""
    m = training_memory(cfg)
    share = m["trainable_params"] / m["total_params"]
    return (f"{m['trainable_params']:,} of {m['total_params']:,} parameters train ({share:.1%}); "
            f"weights {m['weights_bytes'] / 1e6:.2f} MB + gradients {m['gradient_bytes'] / 1e6:.2f} MB + "
            f"optimizer state {m['optimizer_bytes'] / 1e6:.2f} MB = {m['total_bytes'] / 1e6:.2f} MB")


def seconds_per_step(run) -> float:
    """Median wall seconds of one optimizer step (forward, backward, optimizer), from the step log."""
    steps = run.steps
    return float((steps["tokens"] / steps["tokens_per_second"]).median())


def forgetting(run, base_heldout_loss: float) -> dict:
    """Loss on held-out pretraining-style text of the fine-tuned model (run.model) against the
    base's: a rise means the model forgot some of what it was pretrained on."""
    if run.model is None:
        raise ValueError(f"{run.name}: run.model is None: keep the model (sweep(..., keep_models=True))")
    after = heldout_text_loss(run.model, run.tokenizer)
    return {"heldout_loss_before": base_heldout_loss, "heldout_loss_after": after,
            "forgetting": after - base_heldout_loss}


def lora_update_norm(model) -> float:
    """Frobenius norm of the whole LoRA update: every adapted layer's delta W = scaling * B @ A,
    with PEFT's scaling (lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora)."""
    squares = 0.0
    for module in model.modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            delta = module.scaling["default"] * (b.detach().double() @ a.detach().double())
            squares += float(delta.pow(2).sum())
    if squares == 0.0 and not any(hasattr(m, "lora_A") for m in model.modules()):
        raise ValueError("lora_update_norm: the model has no LoRA layers (finetuning_type='lora' makes them)")
    return squares ** 0.5


def _linear_weights(model) -> dict:
    """{name: fp32 weight} of every linear layer inside the decoder (what quantisation touches)."""
    from peft.utils.integrations import dequantize_bnb_weight

    out = {}
    for name, module in model.named_modules():
        if ".layers." not in f".{name}" or not hasattr(module, "weight") or module.weight.ndim != 2:
            continue
        weight = module.weight
        state = getattr(weight, "quant_state", None)
        if weight.__class__.__name__ in ("Params4bit", "Int8Params"):
            weight = dequantize_bnb_weight(weight, state=state if state is not None else module.state)
        out[name] = weight.detach().float()
    return out


def quantization_error(cfg: TrainConfig, bits: int) -> dict:
    """How far the base's decoder weights move when bitsandbytes quantises them: the relative error
    ||W_q - W|| / ||W|| over all linear layers, and the stored bytes of the model, fp32 vs quantised."""
    if bits not in (4, 8):
        raise ValueError(f"bits: {bits!r} is not allowed; allowed: 4 (NF4) or 8 (int8)")
    plain_cfg = cfg.replace(finetuning_type="lora", quantization_bit=None)
    with quiet_loading(cfg.disable_tqdm):
        plain = load_base_model(plain_cfg)
        quantised = load_base_model(plain_cfg.replace(quantization_bit=bits))
    exact, approx = _linear_weights(plain), _linear_weights(quantised)
    diff = sum(float((approx[n] - w).pow(2).sum()) for n, w in exact.items())
    norm = sum(float(w.pow(2).sum()) for w in exact.values())
    return {"bits": bits, "relative_error": (diff / norm) ** 0.5, "layers": len(exact),
            "model_bytes_fp32": memory_footprint(plain), "model_bytes_quantised": memory_footprint(quantised)}


def save_adapter(run, folder: str | Path | None = None) -> Path:
    """Save run.model with save_pretrained into <run folder>/adapter (a LoRA run saves only its
    adapter: adapter_config.json + adapter_model.safetensors; full and freeze save the whole model)."""
    if run.model is None:
        raise ValueError(f"{run.name}: run.model is None: keep the model (sweep(..., keep_models=True))")
    folder = Path(folder) if folder is not None else Path(run.path) / ADAPTER_DIR
    run.model.save_pretrained(folder)
    return folder


def adapter_validation_loss(run_path: str | Path, merge: bool = False) -> float:
    """The validation loss of a saved LoRA adapter, loaded the plain way: the base with
    transformers, the adapter with peft.PeftModel.from_pretrained (merged into the base with
    merge_and_unload if asked), evaluated on the run's own validation split."""
    from peft import PeftModel
    from torch.utils.data import DataLoader

    from nbkit.data import collate
    from nbkit.evaluate import evaluate_loss
    from nbkit.models import load_tokenizer
    from nbkit.runs import load_run
    from nbkit.train import build_datasets

    run = load_run(run_path)
    cfg = TrainConfig.from_dict(run.config)
    with quiet_loading(True):
        model = PeftModel.from_pretrained(load_base_model(cfg), str(Path(run_path) / ADAPTER_DIR))
    if merge:
        model = model.merge_and_unload()
    tokenizer = load_tokenizer(cfg)
    _, val_features, _ = build_datasets(cfg, tokenizer)
    loader = DataLoader(val_features, batch_size=cfg.per_device_eval_batch_size,
                        collate_fn=partial(collate, pad_token_id=tokenizer.pad_token_id))
    return evaluate_loss(model, loader, torch.device("cpu"))


def reload_in_fresh_process(run_path: str | Path) -> dict:
    """adapter_validation_loss in a new Python process (nothing shared with this one): the loss
    of the adapter as loaded, and merged into the base."""
    code = ("import json, sys; from nbkit.peft_lab import adapter_validation_loss as f; "
            "print(json.dumps({'adapter': f(sys.argv[1]), 'merged': f(sys.argv[1], merge=True)}))")
    out = subprocess.run([sys.executable, "-c", code, str(run_path)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- tables and figures of the chapter

def base_heldout_loss(cfg: TrainConfig) -> float:
    """heldout_text_loss of the base model as cfg loads it (quantised if cfg.quantization_bit is set)."""
    from nbkit.models import load_tokenizer

    with quiet_loading(cfg.disable_tqdm):
        model = load_base_model(cfg)
    return heldout_text_loss(model, load_tokenizer(cfg))


def best_run(table):
    """The Run of a sweep table's row with the lowest best_eval_loss (the method's own good LR)."""
    return table.attrs["runs"][int(table["best_eval_loss"].idxmin())]


def method_row(run, heldout_before: float) -> dict:
    """One row of the methods table: what trains, what it costs, how good it gets, what it forgets."""
    cfg = TrainConfig.from_dict(run.config)
    memory = training_memory(cfg)
    accuracy = run.epochs["eval_accuracy"].max() if "eval_accuracy" in run.epochs else float("nan")
    return dict(method=method_of(run.config), learning_rate=cfg.learning_rate,
                trainable_params=memory["trainable_params"],
                trainable_share=memory["trainable_params"] / memory["total_params"],
                weights_MB=memory["weights_bytes"] / 1e6, gradients_MB=memory["gradient_bytes"] / 1e6,
                optimizer_MB=memory["optimizer_bytes"] / 1e6, memory_MB=memory["total_bytes"] / 1e6,
                seconds_per_step=seconds_per_step(run), best_eval_loss=run.best_eval_loss,
                best_accuracy=float(accuracy), **forgetting(run, heldout_before), path=str(run.path))


def compare_methods(tables: dict, heldout_before: float):
    """A row per method (indexed by its name), each at its own best LR: the chapter's PE1 table."""
    import pandas as pd

    return pd.DataFrame([method_row(best_run(t), heldout_before) for t in tables.values()]).set_index("method")


def plot_methods(table):
    """Four panels, a bar per method: trainable parameters, memory (weights + gradients + optimizer
    state, stacked), best validation loss, forgetting (rise of the held-out pretraining-text loss)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    names = list(table.index)
    axes[0].bar(names, table["trainable_params"])
    axes[0].set_yscale("log")
    axes[0].set_title("trainable parameters")
    bottom = 0
    for column, label in (("weights_MB", "weights"), ("gradients_MB", "gradients"), ("optimizer_MB", "optimizer state")):
        axes[1].bar(names, table[column], bottom=bottom, label=label)
        bottom = bottom + table[column]
    axes[1].set_title("memory, MB (measured)")
    axes[1].legend(fontsize=8)
    axes[2].bar(names, table["best_eval_loss"])
    axes[2].set_title("best validation loss")
    axes[3].bar(names, table["forgetting"])
    axes[3].axhline(0, color="black", lw=0.8)
    axes[3].set_title("forgetting: held-out text loss rise")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def plot_ranks(tables: dict):
    """Per task, how far each rank's best validation loss is above the best rank's (column
    `above_best`), against rank on a log axis; and the trainable parameters against rank."""
    import matplotlib.pyplot as plt

    fig, (ax, ax_params) = plt.subplots(1, 2, figsize=(11, 3.8))
    for task, table in tables.items():
        ax.plot(table["lora_rank"], 100 * table["above_best"], marker="o", label=task)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("lora_rank (lora_alpha = 2 x rank)")
    ax.set_ylabel("best validation loss above the best rank's, %")
    ax.axhline(5, color="gray", lw=0.8, ls="--")
    ax.legend()
    first = next(iter(tables.values()))
    ax_params.plot(first["lora_rank"], first["trainable_params"], marker="o")
    ax_params.set_xscale("log", base=2)
    ax_params.set_yscale("log")
    ax_params.set_xlabel("lora_rank")
    ax_params.set_title("trainable parameters")
    fig.tight_layout()
    return fig


def plot_update_norms(table):
    """LoRA update norm against rank, standard alpha/r scaling vs rsLoRA's alpha/sqrt(r)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for rslora, rows in table.groupby("use_rslora"):
        ax.plot(rows["lora_rank"], rows["update_norm"], marker="o",
                label="rsLoRA: alpha / sqrt(r)" if rslora else "standard: alpha / r")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("lora_rank (lora_alpha fixed)")
    ax.set_ylabel("||scaling * B @ A|| after training")
    ax.legend()
    fig.tight_layout()
    return fig
