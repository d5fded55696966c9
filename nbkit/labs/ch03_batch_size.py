"""Batch size, measured: gradient noise, the gradient noise scale, and the accumulation bug.

    spread = gradient_spread(model, features, pad_id, [4, 16, 64])    # how far a batch's gradient strays
    probe = NoiseScaleProbe(every=10)                                # the noise scale during a run
    run = train(cfg, callbacks=[probe]); probe.table()               # B_simple at each probed step
    compare_normalisations(model, micro_batches)                     # exact vs mean of micro-batch means

What the chapter's checks read, each a table with a row per seed (index: seed) and named columns:
spread_drop (BS1), kept_vs_scaled, pace_table and seed_band (BS2), best_batch_table (BS5); and
accumulation_table (BS3) and plans_per_card (BS4), a row per case.

The gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training",
arXiv:1812.06162, Appendix A): with G the true gradient and Sigma the per-example covariance, a
batch of B gives a gradient whose expected squared norm is |G|^2 + tr(Sigma)/B. Measuring that norm at
two batch sizes B_small < B_big gives unbiased estimates of both terms, and B_simple = tr(Sigma)/|G|^2
is the batch size past which a bigger batch mostly averages away noise that was already small: the
"critical" batch size, to within a small factor.

Loss normalisation under gradient accumulation: nbkit.core.train divides the summed token loss of every
micro-batch by the response tokens of the WHOLE accumulated batch, which is exactly the full batch's
loss. Taking the mean of each micro-batch's own per-token mean (what several frameworks did until the
fixes of late 2024) weights each token by 1 / (tokens in its micro-batch): on micro-batches of
different lengths that is a different loss, and a different gradient.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from nbkit.core.callbacks import STEP, TRAIN_BEGIN
from nbkit.core.data import collate
from nbkit.core.evaluate import token_loss_sum
from nbkit.core.i18n import N_, _
from nbkit.core.memory import planned_vs_measured_table, readable_bytes
from nbkit.core.sweep import sweep_from_runs
from nbkit.core.workers import run_side_by_side, train_in_worker


# ---------------------------------------------------------------- loss normalisation

def exact_token_mean(loss_sums, token_counts) -> float:
    """The full batch's loss: every token's loss summed over all micro-batches, divided by all tokens."""
    _check_pairs(loss_sums, token_counts)
    return sum(loss_sums) / sum(token_counts)


def mean_of_micro_means(loss_sums, token_counts) -> float:
    """The buggy normalisation: each micro-batch's per-token mean, then the mean of those means."""
    _check_pairs(loss_sums, token_counts)
    return sum(s / n for s, n in zip(loss_sums, token_counts)) / len(loss_sums)


def _check_pairs(loss_sums, token_counts) -> None:
    if len(loss_sums) != len(token_counts) or not loss_sums:
        raise ValueError(_("loss_sums and token_counts: need one of each per micro-batch, got {sums} and {counts}")
                         .format(sums=len(loss_sums), counts=len(token_counts)))
    if min(token_counts) <= 0:
        raise ValueError(_("token_counts: {counts}; every micro-batch needs >= 1 labelled token")
                         .format(counts=list(token_counts)))


def trainable(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def flat_gradient(loss, model) -> torch.Tensor:
    """d loss / d (trainable weights), flattened. torch.autograd.grad leaves every p.grad untouched,
    so a probe inside a training run does not disturb it."""
    grads = torch.autograd.grad(loss, trainable(model), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                      for g, p in zip(grads, trainable(model))])


def _loss_sum(model, batch) -> tuple[torch.Tensor, int]:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return token_loss_sum(logits, batch["labels"])


def compare_normalisations(model, micro_batches: list[list[dict]], pad_token_id: int) -> dict:
    """Loss and gradient of one accumulated step, three ways: the full batch in one forward pass,
    exact accumulation (sum / all tokens) and the mean of micro-batch means. `micro_batches`: lists
    of tokenised rows (features). Returns the losses, the tokens per micro-batch and each gradient's
    relative distance from the full batch's."""
    sums, counts, grads = [], [], []
    for rows in micro_batches:
        loss_sum, n = _loss_sum(model, collate(rows, pad_token_id))
        sums.append(float(loss_sum.detach()))
        counts.append(n)
        grads.append(flat_gradient(loss_sum, model))  # gradient of the micro-batch's SUM
    full_sum, full_n = _loss_sum(model, collate([r for rows in micro_batches for r in rows], pad_token_id))
    g_full = flat_gradient(full_sum / full_n, model)
    g_exact = sum(grads) / sum(counts)
    g_means = sum(g / n for g, n in zip(grads, counts)) / len(counts)
    return {"tokens_per_micro_batch": counts, "loss_full_batch": float(full_sum.detach()) / full_n,
            "loss_exact": exact_token_mean(sums, counts), "loss_mean_of_means": mean_of_micro_means(sums, counts),
            "grad_error_exact": relative_distance(g_exact, g_full),
            "grad_error_mean_of_means": relative_distance(g_means, g_full)}


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def length_grouped_micro_batches(features, micro_batch_size: int, count: int) -> list[list[dict]]:
    """`count` micro-batches of rows sorted by their number of labelled tokens, shortest first, as a
    length-grouped sampler (HF `group_by_length`) makes them: each micro-batch has its own length."""
    by_length = sorted(features, key=lambda f: sum(label != -100 for label in f["labels"]))
    picks = [by_length[round(i * (len(by_length) - micro_batch_size) / max(count - 1, 1)):][:micro_batch_size]
             for i in range(count)]
    return picks


# ---------------------------------------------------------------- gradient noise

def batch_loss_and_gradient(model, features, indices, pad_token_id: int) -> tuple[float, torch.Tensor]:
    """The per-token mean loss on the rows `indices` of `features`, and its gradient."""
    loss_sum, n = _loss_sum(model, collate([features[i] for i in indices], pad_token_id))
    return float(loss_sum.detach()) / n, flat_gradient(loss_sum / n, model)


def batch_gradient(model, features, indices, pad_token_id: int) -> torch.Tensor:
    """The per-token mean loss's gradient on the rows `indices` of `features`."""
    return batch_loss_and_gradient(model, features, indices, pad_token_id)[1]


def gradient_spread(model, features, pad_token_id: int, batch_sizes, draws: int = 4, seed: int = 0,
                    loss_draws: int | None = None) -> pd.DataFrame:
    """For each batch size B: `draws` gradients of random batches of B rows, and their spread, the
    unbiased variance sum |g_i - mean|^2 / (draws - 1), which is tr(Sigma) / B in theory. Also the
    spread relative to the squared norm of their mean ("noise_to_signal") and the standard deviation
    of the batches' losses ("loss_std"): what the per-step loss of a run at these weights scatters by.
    loss_draws: take loss_std from that many more random batches, forward passes only (no gradient:
    cheap), instead of the `draws` ones; a standard deviation from 6 draws is itself off by ~30%. They
    are drawn with a generator of their own, so the gradient columns do not depend on loss_draws."""
    if draws < 2 or (loss_draws is not None and loss_draws < 2):
        raise ValueError(_("draws={draws}, loss_draws={loss_draws}: a spread needs at least 2 draws")
                         .format(draws=draws, loss_draws=loss_draws))
    generator = torch.Generator().manual_seed(seed)
    loss_generator = torch.Generator().manual_seed(seed + 1)
    rows = []
    for b in batch_sizes:
        if not 1 <= b <= len(features):
            raise ValueError(_("batch_sizes: {b} is not between 1 and the {rows} rows available")
                             .format(b=b, rows=len(features)))
        losses, grads = zip(*[batch_loss_and_gradient(model, features, torch.randperm(len(features),
                                                                                     generator=generator)[:b].tolist(),
                                                        pad_token_id) for _ in range(draws)])
        grads = torch.stack(grads)
        mean = grads.mean(0)
        squared = (grads - mean).pow_(2)  # in place: one copy of the draws, not two (~0.5 GB each on a real LLM)
        variance = float(squared.sum() / (draws - 1))
        if loss_draws is not None:
            losses = [batch_loss(model, features, torch.randperm(len(features), generator=loss_generator)[:b].tolist(),
                                 pad_token_id) for _ in range(loss_draws)]
        rows.append({"batch_size": b, "gradient_variance": variance, "mean_grad_norm": float(mean.norm()),
                     "noise_to_signal": variance / float(mean.norm() ** 2),
                     "loss_std": float(torch.tensor(losses).std())})
    return pd.DataFrame(rows)


@torch.no_grad()
def batch_loss(model, features, indices, pad_token_id: int) -> float:
    """The per-token mean loss on the rows `indices` of `features`, without a gradient."""
    loss_sum, n = _loss_sum(model, collate([features[i] for i in indices], pad_token_id))
    return float(loss_sum) / n


def noise_scale_estimate(g_small_sq: float, g_big_sq: float, b_small: int, b_big: int) -> dict:
    """McCandlish et al. 2018, Appendix A: from the mean squared gradient norm at two batch sizes,
    unbiased estimates of |G|^2 and tr(Sigma), and B_simple = tr(Sigma) / |G|^2. |G|^2 can come out
    <= 0 when the noise swamps the signal: B_simple is then reported as inf (no useful estimate)."""
    if not 0 < b_small < b_big:
        raise ValueError(_("b_small={b_small}, b_big={b_big}: need 0 < b_small < b_big")
                         .format(b_small=b_small, b_big=b_big))
    g_sq = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace = (g_small_sq - g_big_sq) / (1 / b_small - 1 / b_big)
    b_simple = trace / g_sq if g_sq > 0 else math.inf
    return {"grad_norm_sq": g_sq, "trace_sigma": trace, "b_simple": b_simple}


def measure_noise_scale(model, features, pad_token_id: int, b_small: int = 4, n_micro: int = 8,
                        generator: torch.Generator | None = None) -> dict:
    """One estimate: n_micro disjoint batches of b_small random rows. |G_small|^2 is the mean of
    their squared gradient norms; |G_big|^2 the squared norm of their mean, a batch of n_micro * b_small."""
    if n_micro < 2:
        raise ValueError(_("n_micro={n_micro}: need >= 2 micro-batches to have two batch sizes")
                         .format(n_micro=n_micro))
    if b_small * n_micro > len(features):
        raise ValueError(_("b_small={b_small} x n_micro={n_micro}: {needed} distinct rows needed, the training set "
                           "has {rows}; allowed: b_small x n_micro <= {rows} (or train on more rows: max_samples)")
                         .format(b_small=b_small, n_micro=n_micro, needed=b_small * n_micro, rows=len(features)))
    picks = torch.randperm(len(features), generator=generator)[:b_small * n_micro].tolist()
    # one gradient in memory at a time, beside their running sum (a real LLM's gradient is ~0.5 GB)
    squared_norms, total = [], 0
    for i in range(n_micro):
        g = batch_gradient(model, features, picks[i * b_small:(i + 1) * b_small], pad_token_id)
        squared_norms.append(float(g.norm() ** 2))
        total = total + g
    g_small_sq = sum(squared_norms) / n_micro
    g_big_sq = float((total / n_micro).norm() ** 2)
    return noise_scale_estimate(g_small_sq, g_big_sq, b_small, b_small * n_micro)


class NoiseScaleProbe:
    """A train() callback: every `every` optimizer steps (and before the first), estimate the noise
    scale on the run's own training rows. It reads the weights and computes gradients with
    torch.autograd.grad, samples rows with its own seeded generator, and leaves the run's .grad,
    optimizer and random state alone: a probed run follows the unprobed run's trajectory."""

    def __init__(self, every: int = 10, b_small: int = 4, n_micro: int = 8, seed: int = 0):
        if every < 1:
            raise ValueError(_("every={every}: probe every N >= 1 optimizer steps").format(every=every))
        self.every, self.b_small, self.n_micro, self.seed = every, b_small, n_micro, seed
        self.rows: list[dict] = []

    def __call__(self, event: str, data: dict) -> None:
        if event == TRAIN_BEGIN:
            from nbkit.core.train import build_datasets

            self.model, tokenizer = data["model"], data["tokenizer"]
            self.pad_token_id = tokenizer.pad_token_id
            self.features = build_datasets(data["config"], tokenizer)[0]
            self.batch = data["effective_batch_size"]
            self.generator = torch.Generator().manual_seed(self.seed)
            self._probe(0)
        elif event == STEP and data["step"] % self.every == 0:
            self._probe(data["step"])

    def _probe(self, step: int) -> None:
        estimate = measure_noise_scale(self.model, self.features, self.pad_token_id, self.b_small, self.n_micro,
                                       self.generator)
        self.rows.append({"step": step, "samples_seen": step * self.batch, **estimate})

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["step", "samples_seen", "grad_norm_sq", "trace_sigma", "b_simple"])


def noise_scale_over_run(table: pd.DataFrame, skip_first: bool = True) -> float:
    """One B_simple for a run: the mean tr(Sigma) over the mean |G|^2 of its probes (McCandlish et al.
    average numerator and denominator separately: the ratio of single noisy estimates is unstable).
    skip_first leaves out the probe before any update (the base model, far from the fine-tuned regime)."""
    rows = table[table["step"] > 0] if skip_first else table
    if rows.empty:
        raise ValueError(_("table: no probe after step 0; probe more often (NoiseScaleProbe(every=...))"))
    g_sq = rows["grad_norm_sq"].mean()
    return float(rows["trace_sigma"].mean() / g_sq) if g_sq > 0 else math.inf


# ---------------------------------------------------------------- runs, side by side

def scaled_learning_rate(base_lr: float, base_batch: int, batch: int, exponent: float = 1.0) -> float:
    """The LR for `batch` by a scaling rule: exponent 1 is the linear rule (Goyal et al. 2017),
    0.5 the square-root rule often used with Adam, 0 keeps the LR."""
    return base_lr * (batch / base_batch) ** exponent


def throughput(runs) -> pd.DataFrame:
    """Per run: batch size, median tokens per second over its steps (the median shrugs off the steps a
    busy machine slowed), optimizer steps and training seconds."""
    return pd.DataFrame([{"batch_size": r.config["per_device_train_batch_size"]
                          * r.config["gradient_accumulation_steps"],
                          "tokens_per_second": float(r.steps["tokens_per_second"].median()),
                          "steps": len(r.steps), "train_seconds": r.summary.get("train_seconds")} for r in runs])


def max_loss_difference(runs) -> float:
    """The largest |loss difference| at the same step between the first run and each other one."""
    first = runs[0].steps["loss"].to_numpy()
    return max(float(np.abs(r.steps["loss"].to_numpy() - first).max()) for r in runs[1:])


def samples_seen(run) -> pd.Series:
    """Training samples consumed after each optimizer step (effective batch x step)."""
    cfg = run.config
    return run.steps["step"] * cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"]


# ---------------------------------------------------------------- the same, on a seed set

def averaged_noise_scale(model, features, pad_token_id: int, repeats: int = 4, b_small: int = 4, n_micro: int = 8,
                         seed: int = 0) -> dict:
    """B_simple at these weights from `repeats` estimates of measure_noise_scale (fresh rows each time):
    the mean tr(Sigma) over the mean |G|^2, as noise_scale_over_run averages a run's probes (one
    estimate's |G|^2 can even come out <= 0: a ratio of averages is far steadier)."""
    if repeats < 1:
        raise ValueError(_("repeats={repeats}: need at least 1 estimate").format(repeats=repeats))
    generator = torch.Generator().manual_seed(seed)
    estimates = pd.DataFrame([measure_noise_scale(model, features, pad_token_id, b_small, n_micro, generator)
                              for _ in range(repeats)])
    g_sq, trace = float(estimates["grad_norm_sq"].mean()), float(estimates["trace_sigma"].mean())
    return {"grad_norm_sq": g_sq, "trace_sigma": trace, "b_simple": trace / g_sq if g_sq > 0 else math.inf}


def train_side_by_side(configs, workers: int = 1, keep_models=False) -> list:
    """train() every config, `workers` at a time in worker processes (nbkit.core.workers; 1: here, one after
    the other), in their order. keep_models: one bool for all, or one per config (the weights of a run
    come back only where asked: a real LLM's are ~0.5 GB a run). For configs that differ in several knobs
    at once, which a sweep's grid cannot express (a batch size with its own LR)."""
    configs = list(configs)
    keep = list(keep_models) if isinstance(keep_models, (list, tuple)) else [bool(keep_models)] * len(configs)
    if len(keep) != len(configs):
        raise ValueError(_("keep_models: one bool per config ({configs}), got {keep}")
                         .format(configs=len(configs), keep=len(keep)))
    return run_side_by_side(train_in_worker, list(zip(configs, keep)), workers, name="train_side_by_side",
                            what=N_("runs"))


def batch_size_runs(base, batch_sizes, seeds, base_batch: int, exponent: float = 1.0, workers: int = 1) -> pd.DataFrame:
    """The batch-size experiment at every seed, side by side: each batch of `batch_sizes` with the LR
    scaled from base.learning_rate at base_batch by `exponent` (rule "scaled"), and each batch larger
    than base_batch once more with base's LR kept (rule "kept"). The base batch's runs keep their weights
    (the noise is measured on them), the others do not. A row per run: rule, batch_size, seed,
    learning_rate, the sweep's result columns (nbkit.core.sweep: status, best_eval_loss, final_eval_loss,
    ..., path), steps, and the training loss averaged over all its steps (train_loss_mean); as_runs(df)
    gives the Runs, the base batch's with their weights. Every batch size sees the same samples, so an
    average over steps is the mean height of the loss-against-samples curve: the lower, the more it
    learned per sample."""
    if base_batch not in batch_sizes or max(batch_sizes) <= base_batch:
        raise ValueError(_("batch_sizes: {batch_sizes} must hold base_batch ({base_batch}), where the LR rules start, "
                           "and at least one larger batch, where they are compared")
                         .format(batch_sizes=list(batch_sizes), base_batch=base_batch))
    plan = [("scaled", b, s) for b in batch_sizes for s in seeds]
    plan += [("kept", b, s) for b in batch_sizes if b > base_batch for s in seeds]
    configs = [base.replace(per_device_train_batch_size=b, seed=s, run_name=f"batch{b}_lr_{rule}",
                            learning_rate=scaled_learning_rate(base.learning_rate, base_batch, b, exponent)
                            if rule == "scaled" else base.learning_rate) for rule, b, s in plan]
    keep = [rule == "scaled" and b == base_batch for rule, b, _ in plan]
    runs = train_side_by_side(configs, workers, keep_models=keep)
    table = sweep_from_runs(runs, knobs=["seed", "learning_rate"])  # the runs stay with it, found by path
    table.insert(0, "rule", [rule for rule, _, _ in plan])
    table.insert(1, "batch_size", [b for _, b, _ in plan])
    return table.assign(steps=[len(r.steps) for r in runs],
                        train_loss_mean=[float(r.steps["loss"].mean()) for r in runs])


def per_batch_and_seed(df: pd.DataFrame, metrics) -> pd.DataFrame:
    """batch_size_runs' `metrics` (a column name or a list of them) as a table to read: a row per rule
    and batch size, a column per seed (per metric and seed for a list)."""
    return df.pivot(index=["rule", "batch_size"], columns="seed", values=metrics)


def seed_band(df: pd.DataFrame, batch_size: int) -> float:
    """How far apart the seeds end at one batch size, LR scaled: the highest best validation loss of
    batch_size_runs' scaled runs at `batch_size` minus the lowest. A difference between two settings
    smaller than this band is one the seeds alone could make."""
    at = df.loc[(df["rule"] == "scaled") & (df["batch_size"] == batch_size), "best_eval_loss"]
    return float(at.max() - at.min())


def kept_vs_scaled(df: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """batch_size_runs at one batch size, the LR kept against the LR scaled, a row per seed (index: seed):
    eval_loss_kept, eval_loss_scaled (best validation loss), train_loss_mean_kept, train_loss_mean_scaled."""
    at = df[df["batch_size"] == batch_size].pivot(index="seed", columns="rule",
                                                  values=["best_eval_loss", "train_loss_mean"])
    return pd.DataFrame({"eval_loss_kept": at["best_eval_loss", "kept"],
                         "eval_loss_scaled": at["best_eval_loss", "scaled"],
                         "train_loss_mean_kept": at["train_loss_mean", "kept"],
                         "train_loss_mean_scaled": at["train_loss_mean", "scaled"]}).loc[df["seed"].unique()]


def pace_table(df: pd.DataFrame, base_batch: int) -> pd.DataFrame:
    """Does any larger batch keep the base batch's pace? A row per seed (index: seed) of batch_size_runs:
    base_train_loss_mean (the base batch's training loss averaged over its run), best_of_kept_or_scaled
    (for each batch larger than base_batch, smallest first, the lower train_loss_mean of its two LRs)
    and lowest_larger, the lowest of those."""
    larger = df[df["batch_size"] > base_batch]
    best = larger.groupby(["seed", "batch_size"])["train_loss_mean"].min().unstack("batch_size")
    base = df[(df["rule"] == "scaled") & (df["batch_size"] == base_batch)].set_index("seed")["train_loss_mean"]
    return pd.DataFrame({"base_train_loss_mean": base.reindex(best.index),
                         "best_of_kept_or_scaled": best.values.tolist(), "lowest_larger": best.min(axis=1)},
                        index=best.index).loc[df["seed"].unique()]


def best_batch_table(df: pd.DataFrame) -> pd.DataFrame:
    """Where the best batch size lies, LR scaled, a row per seed (index: seed) of batch_size_runs:
    best_eval_loss at each batch size (smallest first), best_batch (the lowest), smallest_over_best
    (the smallest batch's loss minus the best: 0 where it is the best) and largest_over_best (the largest
    batch's loss over the best)."""
    loss = df[df["rule"] == "scaled"].pivot(index="seed", columns="batch_size", values="best_eval_loss")
    best = loss.min(axis=1)
    table = pd.DataFrame({"best_eval_loss": loss.values.tolist(), "best_batch": loss.idxmin(axis=1),
                          "smallest_over_best": loss[loss.columns.min()] - best,
                          "largest_over_best": loss[loss.columns.max()] / best}, index=loss.index)
    return table.loc[df["seed"].unique()]


def accumulation_configs(base, accumulation) -> dict:
    """The accumulation experiment's configs, one epoch each, named "B x K": `accumulation` is three
    [per-device batch, accumulation steps] pairs with one effective batch, the first not accumulated
    ([32, 1]) and the micro-batch shrinking after it ([8, 4], [4, 8]): the checks compare them in that order."""
    pairs = [tuple(pair) for pair in accumulation]
    if (len(pairs) != 3 or any(len(pair) != 2 or min(pair) < 1 for pair in pairs) or pairs[0][1] != 1
            or len({b * k for b, k in pairs}) != 1 or not pairs[0][0] > pairs[1][0] > pairs[2][0]):
        raise ValueError(_("accumulation: {accumulation!r}; allowed: three [per-device batch, accumulation steps] "
                           "pairs with the same product, the first with 1 step, the batch shrinking, e.g. "
                           "[[32, 1], [8, 4], [4, 8]]").format(accumulation=accumulation))
    return {f"{b} x {k}": base.replace(per_device_train_batch_size=b, gradient_accumulation_steps=k,
                                       num_train_epochs=1, run_name=f"accumulate_{b}x{k}") for b, k in pairs}


def accumulation_table(configs: dict, runs) -> pd.DataFrame:
    """The accumulation experiment, a row per case ({"B x K": config} of accumulation_configs, and their
    runs in that order): planned and measured peak memory (nbkit.core.memory.planned_vs_measured_table)
    and max_loss_difference, the largest loss difference at any step from the first case's run (0 for it)."""
    runs = list(runs)
    table = planned_vs_measured_table(configs)
    table["max_loss_difference"] = [0.0] + [max_loss_difference([runs[0], r]) for r in runs[1:]]
    return table


def plans_per_card(plan_report, model: str, cards: dict, settings: dict, max_seq_length: int) -> pd.DataFrame:
    """The memory planner's answer for each card and setting, a row each: card, setting, the per-device
    batch and accumulation steps that reach the effective batch, the largest batch that fits and the
    planned memory at that per-device batch. `plan_report` is nbkit.views.memory_panel.plan_report (passed
    in: a lab does not import the views); cards: {name: GB}; settings: {name: plan_report's keywords}."""
    rows = []
    for card, gb in cards.items():
        for name, kw in settings.items():
            report = plan_report(model, memory_gb=gb, max_seq_length=max_seq_length, **kw)
            reach = report["to_reach_effective"]
            # a card that fits no row at all is planned at one row: what it would take
            at_batch = plan_report(model, memory_gb=gb, max_seq_length=max_seq_length,
                                   per_device_train_batch_size=max(reach["per_device_train_batch_size"], 1), **kw)
            rows.append(dict(card=card, setting=name, per_device_batch=reach["per_device_train_batch_size"],
                             accumulation=reach["gradient_accumulation_steps"], largest_batch=report["largest_batch"],
                             planned_at_that_batch=readable_bytes(at_batch["plan"].total)))
    return pd.DataFrame(rows)


def _features_of(run):
    from nbkit.core.config import TrainConfig
    from nbkit.core.train import build_datasets

    if run.model is None or run.tokenizer is None:
        raise ValueError(_("{path}: the run kept no weights; train it with keep_model=True").format(path=run.path))
    return build_datasets(TrainConfig.from_dict(run.config), run.tokenizer)[0]


def _spread_of_run(run, batch_sizes, draws, loss_draws) -> pd.DataFrame:
    seed = run.config["seed"]
    return gradient_spread(run.model, _features_of(run), run.tokenizer.pad_token_id, batch_sizes, draws=draws,
                           seed=seed, loss_draws=loss_draws).assign(seed=seed)


def gradient_spread_by_seed(runs, batch_sizes, draws: int = 4, loss_draws: int | None = None,
                            workers: int = 1) -> pd.DataFrame:
    """gradient_spread at the final weights of each run (one per seed, kept in memory), on that run's own
    training rows, its draws seeded by the run's seed; a `seed` column tells them apart. workers > 1:
    the seeds side by side in worker processes (each gets a copy of its run's weights)."""
    for r in runs:
        _features_of(r)  # a run without weights fails here, before anything is sent to a worker
    return pd.concat(run_side_by_side(_spread_of_run, [(r, batch_sizes, draws, loss_draws) for r in runs], workers,
                                      name="gradient_spread_by_seed", what=N_("seeds")),
                     ignore_index=True)


def spread_drop(spread: pd.DataFrame) -> pd.DataFrame:
    """How much steadier the largest batch is than the smallest, a row per seed (index: seed) of
    gradient_spread_by_seed's table: variance_drop, the smallest batch's gradient variance over the
    largest's, and loss_std_drop, the same for the spread of the batch loss."""
    ordered = spread.sort_values("batch_size", kind="stable")
    ends = ordered.groupby("seed")[["gradient_variance", "loss_std"]].agg(["first", "last"])
    table = pd.DataFrame({"variance_drop": ends["gradient_variance", "first"] / ends["gradient_variance", "last"],
                          "loss_std_drop": ends["loss_std", "first"] / ends["loss_std", "last"]})
    return table.loc[spread["seed"].unique()]


def _noise_scales_of_run(run, base_model, repeats, b_small, n_micro) -> dict:
    features, pad, seed = _features_of(run), run.tokenizer.pad_token_id, run.config["seed"]
    row = {"seed": seed}
    for where, model in (("base", base_model), ("end", run.model)):
        estimate = averaged_noise_scale(model, features, pad, repeats, b_small, n_micro, seed)
        row.update({f"{k}_{where}": v for k, v in estimate.items()})
    return row


def noise_scale_by_seed(runs, base_model, repeats: int = 4, b_small: int = 4, n_micro: int = 8,
                        workers: int = 1) -> pd.DataFrame:
    """The gradient noise scale of each run (one per seed, weights kept) at the base model, before any
    update, and at the run's end, each averaged over `repeats` estimates on the run's own training rows.
    A row per seed: b_simple_base, b_simple_end, and the |G|^2 and tr(Sigma) behind each. workers > 1:
    the seeds side by side in worker processes."""
    for r in runs:
        _features_of(r)
    jobs = [(r, base_model, repeats, b_small, n_micro) for r in runs]
    return pd.DataFrame(run_side_by_side(_noise_scales_of_run, jobs, workers, name="noise_scale_by_seed",
                                         what=N_("seeds")))


def step_throughput(cfg, batch_sizes, repeats: int = 5, seed: int = 0, workers: int = 1) -> pd.DataFrame:
    """Tokens per second of one training step (forward, backward, optimizer step) at each batch size, on
    random batches of cfg's own training rows: the batch sizes take turns, `repeats` rounds after one
    warm-up round, and the median step of each is kept. Taking turns in one process makes it a ratio
    measured side by side: a busy machine slows every batch size alike, which timing whole runs one
    after the other (or in parallel workers) does not. workers > 1: timed in one worker process (one
    thread, as the runs of nbkit.core.workers), alone."""
    if repeats < 1:
        raise ValueError(_("repeats={repeats}: time at least one step per batch size").format(repeats=repeats))
    if workers > 1:
        return run_side_by_side(step_throughput, [(cfg, batch_sizes, repeats, seed)], workers,
                                name="step_throughput")[0]
    import time

    from nbkit.core.models import fresh_model
    from nbkit.core.train import build_datasets, build_optimizer

    model, tokenizer = fresh_model(cfg)
    model.train()
    features = build_datasets(cfg, tokenizer)[0]
    optimizer = build_optimizer(cfg, model)
    generator = torch.Generator().manual_seed(seed)
    times = {b: [] for b in batch_sizes}
    for round_ in range(repeats + 1):
        for b in batch_sizes:
            batch = collate([features[i] for i in torch.randperm(len(features), generator=generator)[:b].tolist()],
                            tokenizer.pad_token_id)
            start = time.perf_counter()
            loss_sum, n = _loss_sum(model, batch)
            (loss_sum / n).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if round_:  # the first round warms up (allocations, the optimizer's state)
                times[b].append((int(batch["attention_mask"].sum()), time.perf_counter() - start))
    return pd.DataFrame([{"batch_size": b, "tokens_per_second": float(np.median([t / s for t, s in times[b]]))}
                         for b in batch_sizes])

