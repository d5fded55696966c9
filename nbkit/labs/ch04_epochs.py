"""Chapter 4's lab (epochs and early stopping): what the epoch curves of a run say about under- and
over-fitting, and what early stopping, reduce-on-plateau and LoRA do to those curves, as tables.

    fits = curve_table(longs)                          # section 1: a row per seed's long run (EP1, EP3)
    minimum_spread(fits)                               # how far the seed alone moves the validation minimum
    stops = stopping_table(stopped_runs, long_runs, returned)  # section 3: a row per early-stopped run
    plain = patience_table(stops)                      # its runs without a threshold, by seed and patience (EP2)
    per_patience(plain, "compute_saved")               # {seed: {patience: value}}: a check's numbers
    worse_with_more_patience(plain)                    # a row per seed: did more patience return a worse model?
    long_returns(long_runs, long_returned)             # a row per seed: the long run returns its last weights
    threshold_table(stops, patience)                   # a row per seed: with a threshold against without
    plateau_table(curve_table(long_runs + plateau_runs))   # section 4: a row per seed, constant vs plateau (EP4)
    lora_vs_full(fits, curve_table(best_per_seed(lora)))   # section 5: a row per seed, LoRA vs full (EP5)

Every per-seed evidence table has a row per seed (index: seed) and named columns; a chapter check
compares them. The runs' tables (curve_table, stopping_table, patience_table) have a row per run and a
seed column: nbkit.interfaces.chapter.per_seed turns a verdict per row into one per seed.
"""
from __future__ import annotations

import pandas as pd

from nbkit.core.i18n import _
from nbkit.core.runs import as_runs
from nbkit.core.sweep import best_rows

RETURNED_RTOL = 1e-5  # re-evaluating the same weights repeats the loss to float noise, far below any epoch's change


def _at(epochs: pd.DataFrame, column: str, epoch) -> float:
    """epochs[column] at that epoch (NaN when the run has no such column, e.g. no accuracy)."""
    return float(epochs.loc[epoch, column]) if column in epochs else float("nan")


def _relative(new: float, old: float) -> float:
    """new / old - 1 (NaN when old is 0: nothing to compare against)."""
    return new / old - 1 if old else float("nan")


def curve_facts(run) -> dict:
    """What one run's epoch curves say about under- and over-fitting, as numbers (chapter 4):
    best_epoch        the epoch of the lowest validation loss (the first if tied: where the curve
                      doctor puts it), last_epoch the last one evaluated
    eval_loss_*       validation loss after epoch 1, at the best epoch, at the last
    train_loss_*      training loss (mean over the epoch's steps) after epoch 1, at the best, at the last
    accuracy_*        greedy exact-match accuracy after epoch 1, at the best, at the last
    train_min_epoch   the epoch with the lowest training loss, train_loss_min that loss, and
                      eval_loss_at_train_min the validation loss there
    loss_rise         eval_loss_last / eval_loss_best - 1: how far the validation loss climbed
    error_rise        the same for the error rate (1 - accuracy): what greedy accuracy sees of it
    last_over_best    eval_loss_last / eval_loss_best
    with the run's seed, finetuning_type, learning_rate and lr_scheduler_type, and its folder."""
    ep = run.epochs.set_index("epoch")
    if "eval_loss" not in ep or ep["eval_loss"].notna().sum() < 2:
        raise ValueError(_("curve_facts: run {path} has no validation loss after an epoch of training")
                         .format(path=run.path))
    trained = ep.loc[ep.index > 0]
    best, first, last = ep["eval_loss"].idxmin(), trained.index.min(), trained.index.max()
    train_min = trained["train_loss"].idxmin()
    facts = {k: run.config.get(k) for k in ("seed", "finetuning_type", "learning_rate", "lr_scheduler_type")}
    facts.update(best_epoch=int(best), last_epoch=int(last), train_min_epoch=int(train_min))
    for name, epoch in (("epoch_1", first), ("best", best), ("last", last)):
        facts[f"eval_loss_{name}"] = _at(ep, "eval_loss", epoch)
        facts[f"train_loss_{name}"] = _at(ep, "train_loss", epoch)
        facts[f"accuracy_{name}"] = _at(ep, "eval_accuracy", epoch)
    facts["train_loss_min"] = _at(ep, "train_loss", train_min)
    facts["eval_loss_at_train_min"] = _at(ep, "eval_loss", train_min)
    facts["loss_rise"] = _relative(facts["eval_loss_last"], facts["eval_loss_best"])
    facts["error_rise"] = _relative(1 - facts["accuracy_last"], 1 - facts["accuracy_best"])
    facts["last_over_best"] = facts["eval_loss_last"] / facts["eval_loss_best"]
    facts["path"] = str(run.path)
    return facts


def curve_table(runs) -> pd.DataFrame:
    """curve_facts of each run (Run objects or a sweep table, as nbkit.core.runs.as_runs takes them),
    a row per run in their order."""
    return pd.DataFrame([curve_facts(r) for r in as_runs(runs)])


def best_per_seed(df: pd.DataFrame, metric: str = "best_eval_loss") -> pd.DataFrame:
    """Per seed, the row of a sweep table (with a seed column) where `metric` is lowest: each seed's
    own best setting of the swept knob (its own best LR, say), in seed order (sweep.best_rows)."""
    return best_rows(df, "seed", metric).sort_values("seed")


def stopping_table(stopped, long_runs, returned=None) -> pd.DataFrame:
    """A row per early-stopped run (Run objects), read beside the long run of its seed: the same config
    without early stopping. Columns: seed, patience, threshold, status, stopped_at_epoch, best_epoch
    (the trainer's: with a threshold, only gains larger than it count), best_eval_loss, returned_eval_loss
    (`returned`: the loss of each run's returned model re-evaluated from scratch, e.g.
    nbkit.core.train.validation_loss(run); NaN if not given), the long run's best and final eval loss and
    its last epoch, compute_saved (the share of the long run's steps it did not take) and follows_long
    (its validation losses equal the long run's at every epoch it ran: same seed, same curve)."""
    longs = {r.config["seed"]: r for r in long_runs}
    returned = list(returned) if returned is not None else [float("nan")] * len(stopped)
    if len(returned) != len(stopped):
        raise ValueError(_("stopping_table: {returned} returned losses for {stopped} runs")
                         .format(returned=len(returned), stopped=len(stopped)))
    rows = []
    for run, loss in zip(stopped, returned):
        seed = run.config["seed"]
        if seed not in longs:
            raise ValueError(_("stopping_table: no long run with seed {seed}; long runs have seeds {seeds}")
                             .format(seed=seed, seeds=sorted(longs)))
        long, s = longs[seed], run.summary
        mine = run.epochs.set_index("epoch")["eval_loss"]
        theirs = long.epochs.set_index("epoch")["eval_loss"].reindex(mine.index)
        rows.append(dict(seed=seed, patience=run.config["early_stopping_patience"],
                         threshold=run.config["early_stopping_threshold"], status=run.status,
                         stopped_at_epoch=s["epochs_completed"], best_epoch=run.best_epoch,
                         best_eval_loss=run.best_eval_loss, returned_eval_loss=loss,
                         long_best_eval_loss=long.best_eval_loss, long_final_eval_loss=long.summary["final_eval_loss"],
                         long_last_epoch=long.summary["epochs_completed"],
                         compute_saved=1 - s["steps_completed"] / long.summary["steps_completed"],
                         follows_long=bool(((mine - theirs).abs() <= 1e-6 * theirs.abs()).all())))
    return pd.DataFrame(rows)


def minimum_spread(curves: pd.DataFrame) -> float:
    """How far the seed alone moves the validation minimum: the largest minus the smallest eval_loss_best
    of a curve_table of one setting (a row per seed). A gain smaller than this is within seed noise."""
    return curves["eval_loss_best"].max() - curves["eval_loss_best"].min()


def patience_table(stops: pd.DataFrame) -> pd.DataFrame:
    """The rows of a stopping_table without a threshold, by seed then patience, plus what the chapter
    reads off each:
    more_epochs    it stopped later than the same seed's next smaller patience (the smallest: True)
    returned_best  its returned weights, re-evaluated, give its best eval_loss (to RETURNED_RTOL)
    gain           long_final_eval_loss - returned_eval_loss: how much lower the returned model's loss is
                   than the last weights of the same seed's run without early stopping"""
    plain = stops[stops["threshold"] == 0].sort_values(["seed", "patience"])
    return plain.assign(more_epochs=plain.groupby("seed")["stopped_at_epoch"].diff().fillna(1) > 0,
                        returned_best=(plain["returned_eval_loss"] / plain["best_eval_loss"] - 1).abs() < RETURNED_RTOL,
                        gain=plain["long_final_eval_loss"] - plain["returned_eval_loss"])


def per_patience(plain: pd.DataFrame, column: str) -> dict:
    """One column of a patience_table as {seed: {patience: value}}: a check's numbers, a row per seed."""
    return plain.pivot(index="seed", columns="patience", values=column).to_dict("index")


def worse_with_more_patience(plain: pd.DataFrame) -> pd.Series:
    """Per seed (index), of a patience_table: did a larger patience return a worse model than a smaller one
    (its re-evaluated validation loss above the lowest of the smaller patiences' by more than RETURNED_RTOL)?
    With load_best_model_at_end, a larger patience follows the same curve through every epoch a smaller one
    saw and returns the best it saw: chapter 4's exercise asks the learner to predict what this says."""
    def worse(runs: pd.DataFrame) -> bool:
        losses = runs.sort_values("patience")["returned_eval_loss"]
        best_before = losses.cummin().shift()  # the best any smaller patience returned
        return bool((losses > best_before * (1 + RETURNED_RTOL)).any())
    return plain.groupby("seed")[["patience", "returned_eval_loss"]].apply(worse).rename("worse_with_more_patience")


def long_returns(long_runs, returned) -> pd.DataFrame:
    """A row per run without early stopping (index: seed): final_eval_loss (its last epoch's),
    returned_eval_loss (`returned`: the model it returned, re-evaluated from scratch, e.g.
    nbkit.core.train.validation_loss(run)) and returned_last (the two agree to RETURNED_RTOL: the run
    returned its last epoch's weights)."""
    runs = as_runs(long_runs)
    table = pd.DataFrame({"seed": [r.config["seed"] for r in runs],
                          "final_eval_loss": [r.summary["final_eval_loss"] for r in runs],
                          "returned_eval_loss": list(returned)}).set_index("seed")
    return table.assign(returned_last=(table["returned_eval_loss"] / table["final_eval_loss"] - 1).abs()
                        < RETURNED_RTOL)


def threshold_table(stops: pd.DataFrame, patience: int) -> pd.DataFrame:
    """A row per seed (index) of a stopping_table: stopped_with_threshold, the epoch the run with an
    early_stopping_threshold > 0 stopped at, and stopped_without, the epoch the run of the same
    `patience` without a threshold stopped at."""
    with_threshold = stops[stops["threshold"] > 0].set_index("seed")["stopped_at_epoch"]
    without = stops[(stops["threshold"] == 0) & (stops["patience"] == patience)].set_index("seed")
    return pd.DataFrame({"stopped_with_threshold": with_threshold,
                         "stopped_without": without["stopped_at_epoch"]}).rename_axis("seed")


def plateau_table(curves: pd.DataFrame) -> pd.DataFrame:
    """The constant LR against reduce-on-plateau, from a curve_table holding a run of each per seed, a
    row per seed (index): final_constant, final_plateau (the last epoch's validation loss),
    lowest_constant, lowest_plateau (its minimum), final_gain and minimum_gain (constant minus plateau:
    > 0 where reduce-on-plateau ends, or reaches, lower)."""
    final = curves.pivot(index="seed", columns="lr_scheduler_type", values="eval_loss_last")
    lowest = curves.pivot(index="seed", columns="lr_scheduler_type", values="eval_loss_best")
    constant, plateau = "constant", "reduce_lr_on_plateau"
    return pd.DataFrame({"final_constant": final[constant], "final_plateau": final[plateau],
                         "lowest_constant": lowest[constant], "lowest_plateau": lowest[plateau],
                         "final_gain": final[constant] - final[plateau],
                         "minimum_gain": lowest[constant] - lowest[plateau]})


LORA_VS_FULL = ["learning_rate", "best_epoch", "eval_loss_best", "eval_loss_last", "train_loss_epoch_1",
                "train_loss_min", "last_over_best"]


def lora_vs_full(full: pd.DataFrame, lora: pd.DataFrame) -> pd.DataFrame:
    """Full fine-tuning against LoRA, from two curve_tables of a run per seed (LoRA's at each seed's own
    best LR: curve_table(best_per_seed(lora_sweep))), a row per seed (index): full_<name> and lora_<name>
    for each name of LORA_VS_FULL (the LR, the best epoch, the validation loss at its minimum and at the
    last epoch, the training loss over the first epoch and its lowest, last_over_best)."""
    return pd.concat([full.set_index("seed")[LORA_VS_FULL].add_prefix("full_"),
                      lora.set_index("seed")[LORA_VS_FULL].add_prefix("lora_")], axis=1)
