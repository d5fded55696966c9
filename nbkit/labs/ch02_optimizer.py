"""Chapter 2's lab (the optimizer): what weight decay does in a sweep, and what each optimizer keeps
between steps, measured.

    decay_effect(grid, relative=True)        # section 3: each decay against none, at the same LR and seed
    with_weight_norms(sweep(..., keep_models=True))   # section 5: + each run's final weight norm
    measure_optimizer_state(TrainConfig(optim="adamw_torch"), load_model(TrainConfig())[0])   # section 6
"""
from __future__ import annotations

import pandas as pd
import torch

from nbkit.core.config import TrainConfig
from nbkit.core.i18n import _
from nbkit.core.memory import optimizer_state_bytes
from nbkit.core.models import count_parameters, weight_norm
from nbkit.core.runs import as_runs
from nbkit.core.sweep import best_rows
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


def decay_effect(df: pd.DataFrame, metric: str = "best_eval_loss", relative: bool = False) -> pd.DataFrame:
    """What weight decay does in a sweep over learning_rate x weight_decay (and seed, if it has that
    column): per seed and weight decay > 0 (the rows) and learning rate (the columns), the metric minus
    the same seed's metric at weight decay 0 and the same LR; relative=True: the ratio to it, minus 1
    (0.5: 50% higher). Used by chapter 2 to read a heat map by numbers, not colours."""
    missing = [c for c in ("learning_rate", "weight_decay", metric) if c not in df]
    if missing:
        raise ValueError(_("decay_effect: {missing} are not columns of the sweep table; allowed: {columns}").format(
            missing=missing, columns=", ".join(df.columns)))
    if not (df["weight_decay"] == 0).any():
        raise ValueError(_("decay_effect: the sweep has no run at weight_decay 0 to measure the decay against"))
    table = df.assign(seed=df["seed"] if "seed" in df else 0).pivot_table(
        index=["seed", "weight_decay"], columns="learning_rate", values=metric, aggfunc="first")
    none = table.xs(0.0, level="weight_decay")
    decayed = table.drop(index=0.0, level="weight_decay")
    reference = none.reindex(decayed.index.get_level_values("seed")).set_axis(decayed.index)
    return decayed / reference - 1 if relative else decayed - reference


def with_weight_norms(df: pd.DataFrame) -> pd.DataFrame:
    """A sweep table made with keep_models=True, plus a weight_norm column (nbkit.core.models.weight_norm of
    each run's final weights: what weight decay shrinks); the models are then dropped from the runs, so
    a sweep per seed holds only one seed's weights at a time (a real LLM's are ~0.5 GB a run)."""
    runs = as_runs(df)
    if any(r.model is None for r in runs):
        raise ValueError(_("with_weight_norms: the table's runs have no weights; make it with sweep(..., "
                           "keep_models=True)"))
    norms = [weight_norm(r.model) for r in runs]
    for r in runs:
        r.drop_weights()
    return df.assign(weight_norm=norms)


# ---------------------------------------------------------------- per-seed evidence for the checks

def best_settings(comparison: pd.DataFrame) -> pd.DataFrame:
    """Each optimizer's best run at each seed: the row of a sweep table (columns optim, seed,
    learning_rate, best_eval_loss) with the lowest best_eval_loss per optimizer and seed."""
    return best_rows(comparison, ["optim", "seed"])


def by_optimizer(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """One column of a table with a row per optimizer and seed (best_settings, or a sweep at one LR),
    as a row per seed (index) and a column per optimizer."""
    return table.pivot(index="seed", columns="optim", values=column)


def seed_band(losses: pd.DataFrame) -> float:
    """How far the seed alone moves a loss: per column (an optimizer, say) the largest minus the
    smallest over the seeds (the rows), averaged over the columns."""
    return (losses.max() - losses.min()).mean()


def no_decay_band(grid: pd.DataFrame) -> pd.Series:
    """Per learning rate of a learning_rate x weight_decay x seed sweep: how far the seed alone moves
    best_eval_loss without decay (the largest minus the smallest over the seeds at weight_decay 0)."""
    none = grid[grid["weight_decay"] == 0].pivot(index="seed", columns="learning_rate", values="best_eval_loss")
    return none.max() - none.min()


def decay_at_lr(effect: pd.DataFrame, learning_rate: float) -> pd.DataFrame:
    """decay_effect at one learning rate: a row per seed (index), a column per weight decay > 0."""
    return effect[learning_rate].unstack("weight_decay")


def decay_safety(shift: pd.DataFrame, band: pd.Series) -> pd.DataFrame:
    """decay_effect as a loss difference against the seed band of each LR (no_decay_band), a row per
    seed (index): inside_band (every decay moves the loss, either way, by less than its LR's band) and
    largest_shift (the largest such move over every decay and LR)."""
    moved = shift.abs()
    return pd.DataFrame({"inside_band": (moved < band).groupby(level="seed").all().all(axis=1),
                         "largest_shift": moved.groupby(level="seed").max().max(axis=1)})


def betas_table(betas: pd.DataFrame, beta1: float, beta2: float) -> pd.DataFrame:
    """The betas sweeps (adam_beta1 and adam_beta2 columns, a row per run) read per seed (index):
    default_loss (best_eval_loss at the default pair beta1, beta2), best_loss, best_beta1, best_beta2
    (the best pair tried), base_loss (the base model's loss), and shortfall: the share of what the best
    pair removed from the base model's loss that the default pair misses."""
    is_default = (betas["adam_beta1"] == beta1) & (betas["adam_beta2"] == beta2)
    default = betas[is_default].drop_duplicates("seed").set_index("seed")
    top = best_rows(betas, "seed").set_index("seed").sort_index()
    gain = default["base_eval_loss"] - top["best_eval_loss"]
    return pd.DataFrame({"default_loss": default["best_eval_loss"], "best_loss": top["best_eval_loss"],
                         "best_beta1": top["adam_beta1"], "best_beta2": top["adam_beta2"],
                         "base_loss": default["base_eval_loss"],
                         "shortfall": (default["best_eval_loss"] - top["best_eval_loss"]) / gain})


def decay_table(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The weight-decay sweeps of each seed (with_weight_norms tables) as one table, plus
    final_train_loss (each run's last epoch's training loss) and gap (final_eval_loss minus it: how far
    validation is behind training)."""
    decay = pd.concat(parts, ignore_index=True)
    decay["final_train_loss"] = [r.epochs["train_loss"].iloc[-1] for part in parts for r in as_runs(part)]
    decay["gap"] = decay["final_eval_loss"] - decay["final_train_loss"]
    return decay


def by_decay(decay: pd.DataFrame, column: str) -> pd.DataFrame:
    """One column of decay_table as a row per seed (index) and a column per weight decay."""
    return decay.pivot(index="seed", columns="weight_decay", values=column)


def typical_decay_table(decay: pd.DataFrame, typical: list[float]) -> pd.DataFrame:
    """What the `typical` weight decays (the article's range) do against none, a row per seed (index):
    norm_change (the largest relative change of the final weight norm) and loss_shift (the largest move
    of the validation minimum, either way)."""
    norms, minimum = by_decay(decay, "weight_norm"), by_decay(decay, "best_eval_loss")
    return pd.DataFrame({"norm_change": (norms[typical].div(norms[0.0], axis=0) - 1).abs().max(axis=1),
                         "loss_shift": minimum[typical].sub(minimum[0.0], axis=0).abs().max(axis=1)})
