"""Chapter 1's lab (the learning rate): the LR range test and the LR sweep on a seed set, and
what the chapter reads off the sweep. The range test itself is the trainer's tool (nbkit.core.lr_finder).

    tests = range_tests(cfg, ch.seeds, workers=2)                  # section 2: one range test per seed
    df = sweep_with_text_loss(cfg, learning_rates, ch.seeds)      # section 3: the sweep, + forgetting
    facts = lr_sweep_facts(df)                                     # a row per seed: what LR1-LR3 check
"""
from __future__ import annotations

from functools import partial

import pandas as pd

from nbkit.core.config import TrainConfig
from nbkit.core.evaluate import heldout_text_loss
from nbkit.core.lr_finder import LRRangeTest, lr_range_test
from nbkit.core.runs import as_runs
from nbkit.core.sweep import sweep, sweep_from_runs
from nbkit.core.workers import run_side_by_side


def range_tests(cfg: TrainConfig, seeds, workers: int = 1, **kwargs) -> list[LRRangeTest]:
    """lr_range_test(cfg.replace(seed=s), **kwargs) for every seed, in the order of `seeds`: the
    data order differs by seed, and so may the suggestion. workers > 1: the tests run side by side
    in nbkit.core.workers' processes (each one short run of its own); `model`/`tokenizer` need workers=1."""
    configs = [cfg.replace(seed=int(s)) for s in seeds]
    if workers > 1 and ("model" in kwargs or "tokenizer" in kwargs):
        raise ValueError(f"workers={workers}: a model passed in lives in this process; allowed: workers=1 with model=")
    return run_side_by_side(partial(lr_range_test, **kwargs), [(c,) for c in configs], workers,
                            name="range_tests", what="range tests")


def sweep_with_text_loss(cfg: TrainConfig, learning_rates, seeds, reuse=None, workers: int = 1,
                         progress: bool = False) -> pd.DataFrame:
    """The LR sweep of chapter 1 on every seed: nbkit.core.sweep's table for the grid
    {"learning_rate": learning_rates, "seed": seeds}, plus `heldout_text_loss`, each run's loss on
    text like the pretraining corpus (nbkit.core.evaluate: it rises when fine-tuning made the model
    forget). Rows seed by seed. With workers=1 (a real LLM) one seed at a time: that seed's models
    are kept, measured and let go, so memory never holds more than one seed's sweep. With workers > 1
    (the tiny model) every seed in one sweep, so no worker waits between seeds. The runs' curves
    stay in df.attrs["runs"], without their weights. reuse: earlier runs that still hold their model
    (e.g. train(cfg)'s); a run without weights is trained again, as its text loss needs them."""
    # the text loss needs weights: only runs that kept them can be reused
    reuse = [r for r in as_runs(reuse) if r.model is not None] if reuse is not None else None
    runs, text_losses = [], []
    for group in ([list(seeds)] if workers > 1 else [[s] for s in seeds]):
        part = sweep(cfg, {"seed": [int(s) for s in group], "learning_rate": list(learning_rates)}, keep_models=True,
                     reuse=reuse, workers=workers, progress=progress)
        for run in part.attrs["runs"]:
            text_losses.append(heldout_text_loss(run.model, run.tokenizer))
            # a copy without the weights (they go with `part`); a reused Run of the caller keeps its own
            runs.append(run.drop_weights(copy=True))
    df = sweep_from_runs(runs, knobs=["learning_rate", "seed"])
    df["heldout_text_loss"] = text_losses
    return df


def lr_sweep_facts(df: pd.DataFrame) -> pd.DataFrame:
    """What chapter 1 reads off an LR sweep, a row per seed (index: seed): the best LR among the
    runs that did not diverge and its validation loss after its first epoch; the smallest LR and
    the best loss it reached; the largest LR and its status; the LRs from the best one up and the
    best loss of each (above_best_monotonic: each larger LR ended higher)."""
    rows = []
    for seed, group in df.groupby("seed", sort=False):
        group = group.sort_values("learning_rate")
        healthy = group[group["status"] != "diverged"]
        best = healthy.loc[healthy["best_eval_loss"].idxmin()]
        best_epochs = as_runs(df.loc[[best.name]])[0].epochs.set_index("epoch")
        above = healthy[healthy["learning_rate"] >= best["learning_rate"]]
        smallest, largest = group.iloc[0], group.iloc[-1]
        rows.append(dict(seed=seed, best_lr=best["learning_rate"], best_eval_loss=best["best_eval_loss"],
                         best_after_one_epoch=float(best_epochs.loc[1, "eval_loss"]), best_path=best["path"],
                         smallest_lr=smallest["learning_rate"], smallest_best_eval_loss=smallest["best_eval_loss"],
                         smallest_path=smallest["path"], base_eval_loss=smallest["base_eval_loss"],
                         largest_lr=largest["learning_rate"], largest_status=largest["status"],
                         largest_diverged_at_step=largest["diverged_at_step"], largest_path=largest["path"],
                         above_best_lrs=above["learning_rate"].tolist(),
                         above_best_losses=above["best_eval_loss"].tolist(),
                         above_best_monotonic=len(above) > 1 and above["best_eval_loss"].is_monotonic_increasing))
    return pd.DataFrame(rows).set_index("seed")
