"""Chapter 0's lab (the quickstart): what one fine-tune changed, read off its summary and its curves,
on every seed of the chapter.

    seed_runs = sweep(cfg, {"seed": ch.seeds}, reuse=[run])
    quickstart_table(seed_runs)        # a row per seed: accuracy and losses before and after fine-tuning

Every evidence table has a row per seed (index: seed) and named columns; a chapter check compares them.
"""
from __future__ import annotations

import pandas as pd

from nbkit.core.runs import as_runs


def questions_scored(run) -> int:
    """How many validation questions the run's exact-match accuracy was scored on: at most
    eval_generate_samples of them (generation is slow), never more than there are."""
    cap, held_out = run.config.get("eval_generate_samples"), run.summary["num_val_examples"]
    return min(cap or held_out, held_out)


def quickstart_table(runs) -> pd.DataFrame:
    """A row per run (Runs or a sweep table, as as_runs takes them; index: its seed): exact-match accuracy
    of the base model and after fine-tuning (base_eval_accuracy, final_eval_accuracy) and on how many
    questions (questions_scored), the validation loss before and after (base_eval_loss, final_eval_loss),
    and the training loss of the first and of the last epoch (first_epoch_train_loss, final_train_loss;
    epoch 0, the base model, has none)."""
    rows = []
    for run in as_runs(runs):
        s, train_losses = run.summary, run.epochs["train_loss"].dropna()
        rows.append(dict(seed=run.config["seed"], base_eval_accuracy=s["base_eval_accuracy"],
                         final_eval_accuracy=s["final_eval_accuracy"], questions_scored=questions_scored(run),
                         base_eval_loss=s["base_eval_loss"], final_eval_loss=s["final_eval_loss"],
                         first_epoch_train_loss=train_losses.iloc[0], final_train_loss=train_losses.iloc[-1]))
    return pd.DataFrame(rows).set_index("seed")
