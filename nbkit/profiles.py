"""Run sizes: how big a run each (model, device) affords, so every chapter runs on the tiny model,
on SmolLM2-135M on a laptop CPU, or on a bigger model on a GPU by changing one parameter.

    TrainConfig(model=model, ..., **run_size(model, device))

The learning rate and the other knobs are not here: they are what the chapters are about.
"""
from __future__ import annotations

# Rows, sequence length and evaluation size per (model, device). Why these numbers:
#   tiny, cpu           TrainConfig's defaults: a whole run takes seconds
#   smollm2-135m, cpu   LoRA trains about 140 tokens/s on two cores (bench/llm_finetune.py), so an
#                       epoch of 192 rows of ~45 tokens takes about a minute: 240 rows keep runs short
#   any model, cuda     the task at full size, longer rows, bf16 (every recent GPU has it)
RUN_SIZES = {
    ("tiny", "cpu"): dict(max_samples=None, eval_generate_samples=200, max_seq_length=64),
    ("smollm2-135m", "cpu"): dict(max_samples=240, eval_generate_samples=48, max_seq_length=64, max_new_tokens=8),
    ("*", "cuda"): dict(max_samples=None, eval_generate_samples=200, max_seq_length=128, bf16=True),
}


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r} is not allowed; allowed: 'auto', 'cpu', 'cuda'")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_size(model: str, device: str) -> dict:
    """TrainConfig overrides that size a run for this model on this device (RUN_SIZES)."""
    device = resolve_device(device)
    for key in ((model, device), ("*", device)):
        if key in RUN_SIZES:
            return dict(RUN_SIZES[key])
    # an HF model on a CPU: as SmolLM2 (anything bigger will be slow on a CPU anyway)
    return dict(RUN_SIZES[("smollm2-135m", "cpu")])


def sized(cfg, device: str = "auto"):
    """cfg with its model's run size on this device, for the fields cfg leaves at TrainConfig's
    defaults: what a chapter sets on purpose wins. For the tiny model on a CPU it changes nothing."""
    from nbkit.config import TrainConfig

    defaults = TrainConfig()
    size = {k: v for k, v in run_size(cfg.model, device).items() if getattr(cfg, k) == getattr(defaults, k)}
    return cfg.replace(**size) if size else cfg
