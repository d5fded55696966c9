"""Chapter 1's lab (the learning rate): the LR range test and the LR sweep on a seed set, and
what the chapter reads off the sweep. The range test itself is the trainer's tool (nbkit.core.lr_finder).

    tests = range_tests(cfg, ch.seeds, workers=2)                  # section 2: one range test per seed
    df = sweep_with_text_loss(cfg, learning_rates, ch.seeds)      # section 3: the sweep, + forgetting
    facts = lr_sweep_facts(df)                                     # a row per seed: what LR1-LR3 check
    forgetting_by_rule(df, rule, pretraining_lr)                   # a row per seed: LR2's text losses
    final_loss_by_schedule(sched_df)                               # a row per seed: LR3's final losses
    warmup_damage(warm_df, warmup_ratio)                           # a row per seed: LR4's early damage
    range_test_vs_sweep(tests, df)                                 # a row per seed: suggestion vs best LR

Every evidence table has a row per seed (index: seed) and named columns; a chapter check compares them.
"""
from __future__ import annotations

from functools import partial

import pandas as pd

from nbkit.core.config import TrainConfig
from nbkit.core.evaluate import heldout_text_loss
from nbkit.core.i18n import N_, _
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
        raise ValueError(_("workers={workers}: a model passed in lives in this process; allowed: workers=1 with model=")
                         .format(workers=workers))
    return run_side_by_side(partial(lr_range_test, **kwargs), [(c,) for c in configs], workers,
                            name="range_tests", what=N_("range tests"))


def sweep_with_text_loss(cfg: TrainConfig, learning_rates, seeds, reuse=None, workers: int = 1,
                         progress: bool = False) -> pd.DataFrame:
    """The LR sweep of chapter 1 on every seed: nbkit.core.sweep's table for the grid
    {"learning_rate": learning_rates, "seed": seeds}, plus `heldout_text_loss`, each run's loss on
    text like the pretraining corpus (nbkit.core.evaluate: it rises when fine-tuning made the model
    forget). Rows seed by seed. With workers=1 (a real LLM) one seed at a time: that seed's models
    are kept, measured and let go, so memory never holds more than one seed's sweep. With workers > 1
    (the tiny model) every seed in one sweep, so no worker waits between seeds. The runs' curves
    stay with the table (nbkit.core.runs.as_runs(df)), without their weights. reuse: earlier runs that
    still hold their model (e.g. train(cfg)'s); a run without weights is trained again, as its text
    loss needs them."""
    # the text loss needs weights: only runs that kept them can be reused
    reuse = [r for r in as_runs(reuse) if r.model is not None] if reuse is not None else None
    runs, text_losses = [], []
    for group in ([list(seeds)] if workers > 1 else [[s] for s in seeds]):
        part = sweep(cfg, {"seed": [int(s) for s in group], "learning_rate": list(learning_rates)}, keep_models=True,
                     reuse=reuse, workers=workers, progress=progress)
        for run in as_runs(part):
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


def forgetting_by_rule(df: pd.DataFrame, rule: tuple[float, float], pretraining_lr: float) -> pd.DataFrame:
    """Chapter 1's forgetting, a row per seed (index: seed) of sweep_with_text_loss's table: the runs
    that did not diverge with an LR inside the rule's range (rule: (low, high), both included) and
    those at or above the pretraining LR, each as their LRs and held-out text losses in the table's
    order; inside_worst the highest text loss inside the range, above_best the lowest at or above the
    pretraining LR (NaN where a seed has no such run: then no comparison holds); paths, the runs
    read (inside, then above)."""
    healthy = df[df["status"] != "diverged"]
    rows = []
    for seed in df["seed"].unique():
        runs = healthy[healthy["seed"] == seed]
        inside = runs[runs["learning_rate"].between(*rule)]
        above = runs[runs["learning_rate"] >= pretraining_lr]
        rows.append(dict(seed=seed, inside_lrs=inside["learning_rate"].tolist(),
                         inside_text_loss=inside["heldout_text_loss"].tolist(),
                         above_lrs=above["learning_rate"].tolist(), above_text_loss=above["heldout_text_loss"].tolist(),
                         inside_worst=inside["heldout_text_loss"].max(), above_best=above["heldout_text_loss"].min(),
                         paths=inside["path"].tolist() + above["path"].tolist()))
    return pd.DataFrame(rows).set_index("seed")


def final_loss_by_schedule(df: pd.DataFrame) -> pd.DataFrame:
    """A schedule sweep's final validation losses, a row per seed (index: seed): final_eval_loss_<schedule>
    for each lr_scheduler_type in the table's order, and worst_decaying, the highest of them among the
    schedules other than "constant" (NaN if any of them is NaN: a missing run beats nothing)."""
    schedules = list(df["lr_scheduler_type"].unique())
    final = df.pivot(index="seed", columns="lr_scheduler_type", values="final_eval_loss")[schedules]
    decaying = [s for s in schedules if s != "constant"]
    table = final.add_prefix("final_eval_loss_")
    table["worst_decaying"] = final[decaying].max(axis=1, skipna=False)
    return table.loc[df["seed"].unique()]


def warmup_damage(df: pd.DataFrame, warmup_ratio: float) -> pd.DataFrame:
    """early_damage of a warmup sweep's runs (a warmup_ratio x seed table), a row per seed (index: seed):
    its rise (early_rise_...) and mean_ratio (mean_over_first_loss_...) without warmup (warmup_ratio 0,
    ..._no_warmup) and with `warmup_ratio` (..._warmup)."""
    damage = pd.DataFrame([{"seed": seed, "warmup_ratio": ratio, **early_damage(run)}
                           for seed, ratio, run in zip(df["seed"], df["warmup_ratio"], as_runs(df))])
    table = pd.DataFrame(index=pd.Index(df["seed"].unique(), name="seed"))
    for ratio, suffix in ((0.0, "no_warmup"), (warmup_ratio, "warmup")):
        at = damage[damage["warmup_ratio"] == ratio].set_index("seed")
        table[f"early_rise_{suffix}"] = at["rise"]
        table[f"mean_over_first_loss_{suffix}"] = at["mean_ratio"]
    return table


def range_test_vs_sweep(tests: list[LRRangeTest], df: pd.DataFrame) -> pd.DataFrame:
    """Each range test against the LR sweep at its seed, a row per test (index: seed, in the tests'
    order): its suggestion, the sweep's best LR (lr_sweep_facts) and their ratio, the steps each
    took (range_test_steps: the test's; sweep_steps: every run of the sweep at that seed together)."""
    facts = lr_sweep_facts(df)
    steps = pd.Series([len(r.steps) for r in as_runs(df)], index=df.index).groupby(df["seed"]).sum()
    seeds = [int(t.config["seed"]) for t in tests]
    table = pd.DataFrame({"suggestion": [t.suggestion for t in tests], "sweep_best_lr": facts.loc[seeds, "best_lr"],
                          "range_test_steps": [t.steps for t in tests], "sweep_steps": steps.loc[seeds]},
                         index=pd.Index(seeds, name="seed"))
    table.insert(2, "ratio", table["suggestion"] / table["sweep_best_lr"])
    return table


# ---------------------------------------------------------------- warmup: the early steps

def early_loss_rise(run, fraction: float = 0.25) -> float:
    """How far the training loss climbs above its first step's value within the first `fraction`
    of the steps (negative if it only falls): the early damage warmup is meant to prevent."""
    losses = run.steps["loss"]
    window = losses.iloc[1:max(2, int(len(losses) * fraction))]
    return float(window.max() - losses.iloc[0])


def early_damage(run, fraction: float = 0.25, window: int = 3) -> dict:
    """Early damage in a run's first `fraction` of steps, read off the training loss of each step
    after the first against the first step's (the model before any update). One step's loss is one
    batch's, noisy, so the climb is read on the average of `window` consecutive steps:
    rise        highest `window`-step average of the loss minus the first loss (<= 0: it only fell)
    mean_ratio  mean loss of those steps / the first loss (> 1: the run spent them worse off than it began)
    steps       how many steps that is (a short run: at least one)."""
    if not 0 < fraction <= 1 or window < 1:
        raise ValueError(_("fraction={fraction!r}, window={window!r}: allowed: 0 < fraction <= 1, window >= 1")
                         .format(fraction=fraction, window=window))
    losses = run.steps["loss"]
    first, early = float(losses.iloc[0]), losses.iloc[1:max(2, int(len(losses) * fraction))]
    smoothed = early.rolling(window, min_periods=min(window, len(early))).mean()
    return {"rise": float(smoothed.max() - first), "mean_ratio": float(early.mean() / first), "steps": len(early)}
