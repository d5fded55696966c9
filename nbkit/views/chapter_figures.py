"""The figures of one chapter's lab (the loss curves, sweeps and schedules every chapter draws are in
nbkit.views.plots). Pure functions: a lab's table in, a matplotlib Figure out, never pyplot (plots.py says why).

    chapter 3: noise_figure, throughput_memory_figure, samples_figure, noise_scale_seeds_figure
    chapter 5: plot_methods, plot_ranks, plot_update_norms
    chapter 6: band_figure, bar_figure
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nbkit.core.i18n import _
from nbkit.core.runs import as_runs
from nbkit.labs.ch03_batch_size import samples_seen
from nbkit.labs.ch05_peft import by_seed


# ---------------------------------------------------------------- chapter 3: batch size

def noise_figure(spread: pd.DataFrame) -> Figure:
    """Gradient variance and the spread of the batch loss against batch size (log-log), each with the
    1/B (variance) or 1/sqrt(B) (standard deviation) line through the smallest batch."""
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    b = spread["batch_size"].to_numpy(dtype=float)
    for ax, column, power, label in zip(fig.subplots(1, 2), ["gradient_variance", "loss_std"], [1.0, 0.5],
                                        [_("variance of the batch gradient"), _("std of the batch loss")]):
        y = spread[column].to_numpy()
        ax.loglog(b, y, "o-", label=_("measured"))
        ax.loglog(b, y[0] * (b[0] / b) ** power, "--", color="grey",
                  label=_("1/B^{power:g} from the smallest").format(power=power))
        ax.set_xticks(b, [f"{v:g}" for v in b], minor=False)
        ax.set_xticks([], minor=True)
        ax.set(xlabel=_("batch size"), ylabel=label)
        ax.legend()
    return fig


def throughput_memory_figure(table: pd.DataFrame) -> Figure:
    """Tokens per second (every row) and measured peak memory with the plan (the rows that have one)
    against batch size."""
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.semilogx(table["batch_size"], table["tokens_per_second"], "o-", base=2)
    left.set(xlabel=_("batch size"), ylabel=_("tokens / s (median step)"), ylim=(0, None))
    measured = table.dropna(subset=["measured_MB"])
    right.semilogx(measured["batch_size"], measured["measured_MB"], "o-", base=2, label=_("measured peak"))
    right.semilogx(measured["batch_size"], measured["planned_MB"], "x--", base=2,
                   label=_("planned (nbkit.core.memory)"))
    right.set(xlabel=_("batch size"), ylabel="MB", ylim=(0, None))
    right.legend()
    return fig


def samples_figure(runs, labels, smooth_samples: int = 64) -> Figure:
    """Training loss against samples seen, one line per run, each averaged over about smooth_samples
    samples so batches of different sizes are smoothed alike."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for run, label in zip(runs, labels):
        batch = run.config["per_device_train_batch_size"] * run.config["gradient_accumulation_steps"]
        window = max(1, smooth_samples // batch)
        ax.plot(samples_seen(run), run.steps["loss"].rolling(window, min_periods=1).mean(), label=label)
    ax.set(xlabel=_("training samples seen"), ylabel=_("training loss (smoothed)"), yscale="log")
    ax.legend(fontsize=8)
    return fig


def noise_scale_seeds_figure(table: pd.DataFrame) -> Figure:
    """B_simple at the base model and at the end of the run, a pair of bars per seed (log scale). An
    infinite estimate (|G|^2 averaged to <= 0: the noise swamped the signal) is a hatched bar reaching
    above every finite one."""
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(table))
    values = table[["b_simple_base", "b_simple_end"]].to_numpy(dtype=float)
    top = 2 * max([v for v in values.ravel() if np.isfinite(v)] or [1.0])
    colors = ("tab:blue", "tab:orange")
    for j, (offset, label) in enumerate(((-0.2, _("base model (before any update)")), (0.2, _("end of the run")))):
        finite = np.isfinite(values[:, j])
        ax.bar(x[finite] + offset, values[finite, j], width=0.4, color=colors[j], label=label)
        if (~finite).any():
            ax.bar(x[~finite] + offset, [top] * int((~finite).sum()), width=0.4, color="white", edgecolor=colors[j],
                   hatch="//", label=_("{label}: inf, the noise swamped the signal").format(label=label))
    ax.set_yscale("log")
    ax.set_ylim(top=top * 30)  # room for the legend above the bars
    ax.set_xticks(x, [_("seed {seed}").format(seed=s) for s in table["seed"]])
    ax.set(ylabel=_("gradient noise scale B_simple (rows)"))
    ax.legend(fontsize=8, loc="upper left")
    return fig



# ---------------------------------------------------------------- chapter 5: PEFT

def _seed_dots(ax, names, rows, column):
    """Each seed's value as a dot over its method's bar."""
    for x, name in enumerate(names):
        values = rows.loc[rows["method"] == name, column]
        ax.plot([x] * len(values), values, "o", color="black", markersize=3, zorder=3)


def plot_methods(table, rows=None):
    """Four panels, a bar per method: trainable parameters, memory (weights + gradients + optimizer
    state, stacked), best validation loss, forgetting (rise of the held-out pretraining-text loss).
    Bars are means over the seeds; with rows (chosen_rows), each seed is a dot."""
    fig = Figure(figsize=(15, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    names = list(table.index)
    axes[0].bar(names, table["trainable_params"])
    axes[0].set_yscale("log")
    axes[0].set_title(_("trainable parameters"))
    bottom = 0
    for column, label in (("weights_MB", _("weights")), ("gradients_MB", _("gradients")),
                          ("optimizer_MB", _("optimizer state"))):
        axes[1].bar(names, table[column], bottom=bottom, label=label)
        bottom = bottom + table[column]
    axes[1].set_title(_("memory, MB (measured)"))
    axes[1].legend(fontsize=8)
    axes[2].bar(names, table["best_eval_loss"])
    axes[2].set_title(_("best validation loss (dots: seeds)"))
    if "forgetting" in table:
        axes[3].bar(names, table["forgetting"])
    axes[3].axhline(0, color="black", lw=0.8)
    axes[3].set_title(_("forgetting: held-out text loss rise"))
    if rows is not None:
        _seed_dots(axes[2], names, rows, "best_eval_loss")
        if "forgetting" in rows:
            _seed_dots(axes[3], names, rows, "forgetting")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45)
    return fig


def plot_ranks(tables: dict):
    """Per task, the best validation loss against the rank (log axis): a thin line per seed, the
    mean over the seeds thick; and the trainable parameters against the rank."""
    fig = Figure(figsize=(5 * (len(tables) + 1), 3.8), layout="constrained")
    axes = fig.subplots(1, len(tables) + 1)
    for ax, (task, table) in zip(axes, tables.items()):
        losses = by_seed(table, "best_eval_loss", "lora_rank")
        for seed in losses.columns:
            ax.plot(losses.index, losses[seed], color="tab:blue", alpha=0.35, lw=1, marker=".",
                    label=_("seed {seed}").format(seed=seed))
        ax.plot(losses.index, losses.mean(axis=1), color="tab:blue", lw=2.5, marker="o", label=_("mean"))
        ax.set_xscale("log", base=2)
        ax.set_xlabel(_("lora_rank (lora_alpha = 2 x rank)"))
        ax.set_ylabel(_("best validation loss"))
        ax.set_title(task)
        ax.legend(fontsize=8)
    first = next(iter(tables.values())).drop_duplicates("lora_rank")
    axes[-1].plot(first["lora_rank"], first["trainable_params"], marker="o")
    axes[-1].set_xscale("log", base=2)
    axes[-1].set_yscale("log")
    axes[-1].set_xlabel("lora_rank")
    axes[-1].set_title(_("trainable parameters"))
    return fig


def plot_update_norms(table):
    """LoRA update norm against rank, standard alpha/r scaling vs rsLoRA's alpha/sqrt(r): a line
    per seed."""
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    for (rslora, seed), rows in table.groupby(["use_rslora", "seed"]):
        ax.plot(rows["lora_rank"], rows["update_norm"], marker="o", color="tab:orange" if rslora else "tab:blue",
                alpha=0.7, label=(_("rsLoRA: alpha / sqrt(r), seed {seed}") if rslora
                                  else _("standard: alpha / r, seed {seed}")).format(seed=seed))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(_("lora_rank (lora_alpha fixed)"))
    ax.set_ylabel(_("||scaling * B @ A|| after training"))
    ax.legend(fontsize=7)
    return fig



# ---------------------------------------------------------------- chapter 6: stability

def band_figure(band: pd.DataFrame, runs: dict, metric: str = "loss"):
    """The seeds' band (min to max per step, shaded) with other runs drawn over it: is their
    difference larger than what the seed alone does?"""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ax.fill_between(band.index, band["min"], band["max"], alpha=0.3, color="tab:blue",
                    label=_("seed band (min-max)"))
    ax.plot(band.index, band["mean"], color="tab:blue", label=_("mean over seeds"))
    for (label, run), color in zip(runs.items(), ("tab:red", "tab:green", "tab:purple")):
        steps = as_runs(run)[0].steps
        ax.plot(steps["step"], steps[metric], color=color, label=label)
    ax.set_xlabel(_("optimizer step"))
    ax.set_ylabel(metric)
    ax.legend()
    return fig


def bar_figure(table: pd.DataFrame, x: str, y: str, title: str):
    """A bar per row of table: y against x (workers against tokens/s, precision against time)."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.bar([str(v) for v in table[x]], table[y], color="tab:blue")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=10)
    return fig
