"""Chapter 2's lab (the optimizer): what each optimizer keeps between steps, measured.

    measure_optimizer_state(TrainConfig(optim="adamw_torch"), load_model(TrainConfig())[0])
"""
from __future__ import annotations

import torch

from nbkit.core.config import TrainConfig
from nbkit.core.memory import optimizer_state_bytes
from nbkit.core.models import count_parameters
from nbkit.core.train import build_optimizer


def measure_optimizer_state(cfg: TrainConfig, model) -> dict:
    """Build cfg.optim's optimizer for `model`, take ONE real step (optimizers create their
    state lazily, at the first step), and measure the state: {"optim", "state_bytes",
    "trainable_params", "bytes_per_param"}. The step changes the model's weights: pass a model
    you can spare (a fresh load_model)."""
    optimizer = build_optimizer(cfg, model)
    device = next(model.parameters()).device
    tokens = torch.arange(1, 9, device=device).unsqueeze(0)  # any short input gives real gradients
    model(input_ids=tokens).logits.float().pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    n = count_parameters(model)["trainable_params"]
    state = optimizer_state_bytes(optimizer)
    return {"optim": cfg.optim, "state_bytes": state, "trainable_params": n, "bytes_per_param": state / n}
