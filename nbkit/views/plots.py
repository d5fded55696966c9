"""Pictures of runs: pure functions, Run(s) or config in, matplotlib Figure out.

    loss_curves(run)                  train / validation loss per epoch, best epoch marked
    step_traces(run)                  loss, learning rate and grad norm per optimizer step
    lr_schedule_preview(cfg)          the LR per step a config WOULD use (nothing trains)
    lr_finder_plot(result)            an LR range test: loss against LR, the suggestion marked
    compare_runs(runs)                several runs overlaid, labelled by the knobs that differ
    sweep_plot(df, "learning_rate")   a sweep table: metric against the knob
    runs_table(runs)                  a DataFrame, a row per run (the panel's table)

Figures are made with `matplotlib.figure.Figure()`, never pyplot: nothing is left in pyplot's
global list of figures, nothing is shown twice in a notebook, and no backend has to be set for
`fig.savefig(...)` to work headless. A notebook shows a returned Figure like any other value.
The artists tests and readers look for carry a gid ("best_epoch", "diverged", ...).
"""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from nbkit.core.config import TrainConfig
from nbkit.core.data import load_split
from nbkit.core.i18n import N_, _
from nbkit.core.runs import as_runs, differing_knobs, format_value, knob_label, status_shown
from nbkit.core.train import build_scheduler, step_plan, warmup_steps_for
from nbkit.views import fonts

fonts.configure()  # a Chinese title or label falls back to a CJK font (nbkit.views.fonts)

# One meaning, one colour, in every figure.
TRAIN_COLOR = "#1f77b4"  # blue: training loss
EVAL_COLOR = "#ff7f0e"  # orange: validation loss
ACCURACY_COLOR = "#2ca02c"  # green: accuracy
LR_COLOR = "#9467bd"  # purple: learning rate
BEST_COLOR = "#2ca02c"  # green: the best epoch / best point
STOP_COLOR = "#7f7f7f"  # grey: early stop, interruption, clip threshold
DIVERGED_COLOR = "#d62728"  # red: divergence, clipped steps
RUN_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
              "#bcbd22", "#7f7f7f"]  # one per run in comparisons (red is kept for divergence)

# The rules an LR range test names for its suggestion (nbkit.core.lr_finder.suggest_lr, kept in English in its
# JSON file): marked here for the catalogue, translated where the figure's legend shows one (_(rule)).
SUGGESTION_RULES = (N_("steepest descent"), N_("min_loss_lr / 10 (no descent to measure)"),
                    N_("none (no finite loss)"))



# ---------------------------------------------------------------- helpers

def _new_axes(ax=None, figsize=(7, 4)):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _legend(ax, loc="best"):
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=loc, fontsize=8)


def _run_labels(runs) -> list[str]:
    knobs = differing_knobs([r.config for r in runs])
    if not knobs:
        return [r.name for r in runs]
    return [knob_label(r.config, knobs) for r in runs]


def _title(ax, title, run):
    """`title`: a translated text with {name} (the run's) and {status} (its status, in the reader's language)."""
    name = run.config.get("run_name") or run.name
    ax.set_title(textwrap.fill(title.format(name=name, status=status_shown(run.status)), 80), fontsize=10)


def _step_epoch(run, step) -> float:
    """The fractional epoch at which optimizer step `step` ended."""
    row = run.steps.loc[run.steps["step"] == step, "epoch"]
    return float(row.iloc[0]) if len(row) else math.nan


def _finite_top(values, margin=1.15):
    values = np.asarray([v for v in values if v is not None], dtype=float)
    values = values[np.isfinite(values)]
    return float(values.max()) * margin if len(values) else None


def _mark_divergence(ax, run, x_of_step, top):
    """A red marker where the run diverged, drawn at the top edge if the loss went beyond it."""
    step = run.summary.get("diverged_at_step")
    if run.status != "diverged" or step is None:
        return
    loss = float(run.steps.loc[run.steps["step"] == step, "loss"].iloc[0])
    top = top if top is not None else _finite_top(run.steps["loss"], margin=1.0)
    y = loss if math.isfinite(loss) and loss <= top else top
    ax.plot([x_of_step(step)], [y], marker="X", markersize=12, color=DIVERGED_COLOR, linestyle="none",
            label=_("diverged at step {step}").format(step=step), gid="diverged", zorder=5, clip_on=False)


# ---------------------------------------------------------------- one run

def loss_curves(run, ax=None) -> Figure:
    """Train and validation loss per epoch (epoch 0 = the base model: validation only), the
    per-step training loss faint behind them, the best epoch marked, accuracy on a twin axis
    when the task has one, and where a run diverged or stopped early."""
    run = as_runs(run)[0]
    fig, ax = _new_axes(ax)
    steps, epochs = run.steps, run.epochs
    if len(steps):
        ax.plot(steps["epoch"], steps["loss"], color=TRAIN_COLOR, alpha=0.25, linewidth=1,
                label=_("train loss (per step)"), gid="step_loss")
    if "train_loss" in epochs and epochs["train_loss"].notna().any():
        trained = epochs[epochs["epoch"] > 0]
        ax.plot(trained["epoch"], trained["train_loss"], "o-", color=TRAIN_COLOR, label=_("train loss"),
                gid="train_loss")
    if len(epochs):
        ax.plot(epochs["epoch"], epochs["eval_loss"], "o-", color=EVAL_COLOR, label=_("validation loss"),
                gid="eval_loss")
    top = _finite_top(list(epochs.get("eval_loss", [])) + list(epochs.get("train_loss", []))
                      + list(steps.get("loss", pd.Series()).head(1)))
    if top is not None:
        ax.set_ylim(0, top)  # a diverged step can be 100x the rest; keep the curves readable
    _mark_best_epoch(ax, run)
    _mark_divergence(ax, run, lambda step: _step_epoch(run, step), top)
    _mark_stop(ax, run)
    _add_accuracy(ax, epochs)
    ax.set_xlabel(_("epoch (0 = base model, before training)"))
    ax.set_ylabel(_("loss (cross-entropy per response token)"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _title(ax, _("Loss per epoch: {name} ({status})"), run)
    _legend(ax)
    return fig


def _mark_best_epoch(ax, run):
    best, loss = run.best_epoch, run.best_eval_loss
    if best is None or loss is None or not math.isfinite(loss):
        return
    ax.axvline(best, color=BEST_COLOR, linestyle="--", linewidth=1.2,
               label=_("best epoch {best}, eval_loss {loss:.3g}").format(best=best, loss=loss), gid="best_epoch")
    ax.plot([best], [loss], marker="*", markersize=14, color=BEST_COLOR, linestyle="none", zorder=5)


def _mark_stop(ax, run):
    last = run.epochs["epoch"].max() if len(run.epochs) else None
    if run.status == "early_stopped" and last is not None:
        ax.axvline(last, color=STOP_COLOR, linestyle=":", linewidth=1.5,
                   label=_("early stopped at epoch {last}").format(last=last), gid="early_stop")
    elif run.status in ("interrupted", "incomplete") and len(run.steps):
        step = int(run.steps["step"].iloc[-1])
        label = (_("interrupted at step {step}") if run.status == "interrupted" else _("incomplete at step {step}"))
        ax.axvline(_step_epoch(run, step), color=STOP_COLOR, linestyle=":", linewidth=1.5,
                   label=label.format(step=step), gid="stopped")


def _add_accuracy(ax, epochs):
    if "eval_accuracy" not in epochs or not epochs["eval_accuracy"].notna().any():
        return
    twin = ax.twinx()
    twin.plot(epochs["epoch"], epochs["eval_accuracy"], "s--", color=ACCURACY_COLOR,
              label=_("validation accuracy"), gid="eval_accuracy")
    twin.set_ylim(0, 1.02)
    twin.set_ylabel(_("exact-match accuracy"), color=ACCURACY_COLOR)
    _legend(twin, "center right")


def step_traces(run) -> Figure:
    """Loss, learning rate and gradient norm per optimizer step, stacked on a shared x axis;
    the clip threshold drawn on the grad norm, and the steps it clipped in red."""
    run = as_runs(run)[0]
    s = run.steps
    if not len(s):  # a run killed before its first step: empty axes, not an error
        s = pd.DataFrame(columns=["step", "loss", "learning_rate", "grad_norm"], dtype=float)
    fig = Figure(figsize=(7, 7), layout="constrained")
    ax_loss, ax_lr, ax_grad = fig.subplots(3, 1, sharex=True)
    ax_loss.plot(s["step"], s["loss"], color=TRAIN_COLOR, label=_("train loss"), gid="loss")
    if "eval_loss" in s and s["eval_loss"].notna().any():
        ax_loss.plot(s["step"], s["eval_loss"], "o", color=EVAL_COLOR, label=_("validation loss"))
    _mark_divergence(ax_loss, run, lambda step: step, None)  # here the blow-up itself is the point
    ax_loss.set_ylabel(_("loss"))
    _legend(ax_loss)
    ax_lr.plot(s["step"], s["learning_rate"], color=LR_COLOR, gid="learning_rate")
    ax_lr.set_ylabel(_("learning rate"))
    _grad_norm_axes(ax_grad, s, run.config.get("max_grad_norm"))
    ax_grad.set_xlabel(_("optimizer step"))
    ax_grad.xaxis.set_major_locator(MaxNLocator(integer=True))
    _title(ax_loss, _("Per-step traces: {name} ({status})"), run)
    return fig


def _grad_norm_axes(ax, s, clip):
    ax.plot(s["step"], s["grad_norm"], color=TRAIN_COLOR, label=_("grad norm (before clipping)"), gid="grad_norm")
    if clip:
        ax.axhline(clip, color=STOP_COLOR, linestyle="--", label=f"max_grad_norm = {clip:g}", gid="clip")
    clipped = s[s["clipped"].astype(str).str.lower() == "true"] if "clipped" in s else s.iloc[:0]
    if len(clipped):
        ax.plot(clipped["step"], clipped["grad_norm"], "o", color=DIVERGED_COLOR,
                label=_("clipped ({steps} steps)").format(steps=len(clipped)), gid="clipped")
    norms = s["grad_norm"][np.isfinite(s["grad_norm"]) & (s["grad_norm"] > 0)]
    if len(norms) and norms.max() / norms.min() > 100:
        ax.set_yscale("log")
    ax.set_ylabel(_("gradient norm"))
    _legend(ax)


# ---------------------------------------------------------------- the schedule, before training

def planned_steps(cfg: TrainConfig) -> dict:
    """How many optimizer steps cfg will take, from the dataset split alone (no model):
    steps_per_epoch = ceil(ceil(n_train / batch) / gradient_accumulation_steps), one process."""
    train_examples, _eval_examples = load_split(cfg)
    steps_per_epoch, total = step_plan(cfg, math.ceil(len(train_examples) / cfg.per_device_train_batch_size))
    return {"num_train_examples": len(train_examples), "steps_per_epoch": steps_per_epoch,
            "total_steps": total, "warmup_steps": warmup_steps_for(cfg, total)}


def lr_schedule(cfg: TrainConfig, total_steps: int, steps_per_epoch: int) -> list[float]:
    """The LR of each optimizer step 1..total_steps, from the scheduler the trainer builds
    (nbkit.core.train.build_scheduler) on a dummy one-parameter optimizer. As in the loop, step i
    uses the LR set after i - 1 scheduler steps. reduce_lr_on_plateau: constant (it moves
    only on evaluation results)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.learning_rate)
    scheduler = build_scheduler(cfg, optimizer, total_steps, steps_per_epoch)
    on_plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    lrs = []
    for _step in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradient: changes nothing, keeps torch's step-order check quiet
        if not on_plateau:
            scheduler.step()
    return lrs


def _steps_for(cfg, total_steps, steps_per_epoch):
    needs_data = (total_steps is None and cfg.max_steps <= 0) or cfg.lr_scheduler_type == "step"
    if steps_per_epoch is None and needs_data:
        steps_per_epoch = planned_steps(cfg)["steps_per_epoch"]
    if total_steps is None:
        total_steps = cfg.max_steps if cfg.max_steps > 0 else steps_per_epoch * cfg.num_train_epochs
    return total_steps, steps_per_epoch or total_steps


def lr_schedule_preview(cfg, total_steps=None, steps_per_epoch=None, ax=None) -> Figure:
    """The learning rate per optimizer step that cfg (or each of a list of configs) would use.
    total_steps defaults to what the config implies: max_steps, or steps_per_epoch x
    num_train_epochs, where steps_per_epoch (if not given) comes from planned_steps(cfg)."""
    cfgs = list(cfg) if isinstance(cfg, (list, tuple)) else [cfg]
    fig, ax = _new_axes(ax)
    knobs = differing_knobs(cfgs)
    plateau = False
    for i, c in enumerate(cfgs):
        total, per_epoch = _steps_for(c, total_steps, steps_per_epoch)
        label = knob_label(c, knobs) if knobs else c.label()
        ax.plot(range(1, total + 1), lr_schedule(c, total, per_epoch), color=RUN_COLORS[i % len(RUN_COLORS)],
                label=label, gid="lr_schedule")
        plateau |= c.lr_scheduler_type == "reduce_lr_on_plateau"
    title = _("Learning-rate schedule (preview: nothing trained)")
    if plateau:
        title += "\n" + _("reduce_lr_on_plateau: constant start shown; it drops only when eval_loss stalls")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(_("optimizer step"))
    ax.set_ylabel(_("learning rate"))
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(ax)
    return fig


# ---------------------------------------------------------------- the LR range test

def lr_finder_plot(result, ax=None, compare_lr=None, compare_label=None) -> Figure:
    """An LR range test (nbkit.core.lr_finder.LRRangeTest, or its saved JSON file or folder): the
    loss of each step (faint) and its smoothed curve against the LR on a log axis, the
    suggested LR as a vertical line (gid "suggestion"), the LR of the smoothed minimum
    (gid "min_loss_lr"), and where the test stopped if the loss blew up (gid "stopped").
    compare_lr: another LR to hold against the suggestion, e.g. a sweep's best (gid
    "compare", labelled compare_label, by default "compare")."""
    if not hasattr(result, "lrs"):
        from nbkit.core.lr_finder import LRRangeTest

        result = LRRangeTest.load(result)
    fig, ax = _new_axes(ax)
    smoothing = result.settings.get("smoothing")
    ax.plot(result.lrs, result.losses, color=TRAIN_COLOR, alpha=0.25, linewidth=1, label=_("loss (per step)"),
            gid="loss")
    ax.plot(result.lrs, result.smoothed, color=TRAIN_COLOR, gid="smoothed",
            label=_("smoothed loss (smoothing {smoothing:g})").format(smoothing=smoothing) if smoothing is not None
            else _("smoothed loss"))
    ax.set_xscale("log")
    # the blow-up at the end can be 100x the rest: scale to the curve before the stop
    top = _finite_top(result.smoothed[:-1] if result.stopped_early else result.smoothed)
    if top is not None:
        ax.set_ylim(0, top)
    _mark_lr_finder(ax, result, top)
    if compare_lr is not None:
        compare_label = compare_label if compare_label is not None else _("compare")
        ax.axvline(compare_lr, color=LR_COLOR, linestyle="-.", linewidth=1.5,
                   label=f"{compare_label}: {compare_lr:.2g}", gid="compare")
    ax.set_xlabel(_("learning rate (log scale)"))
    ax.set_ylabel(_("training loss (per response token)"))
    c = result.config
    title = _("LR range test: {model} on {dataset}, {optim}, batch {batch} ({steps} steps)").format(
        model=c.get("model"), dataset=c.get("dataset"), optim=c.get("optim"),
        batch=c.get("per_device_train_batch_size"), steps=result.steps)
    ax.set_title(textwrap.fill(title, 80), fontsize=10)
    _legend(ax)
    return fig


def _mark_lr_finder(ax, result, top):
    if math.isfinite(result.suggestion):
        ax.axvline(result.suggestion, color=BEST_COLOR, linestyle="--", linewidth=1.5, gid="suggestion",
                   label=_("suggestion {lr:.2g} ({rule})").format(lr=result.suggestion,
                                                                   rule=_(result.suggestion_rule)))
    if math.isfinite(result.min_loss_lr):
        ax.axvline(result.min_loss_lr, color=STOP_COLOR, linestyle=":", linewidth=1.2, gid="min_loss_lr",
                   label=_("smoothed minimum at {lr:.2g} (/10 = {tenth:.2g})").format(
                       lr=result.min_loss_lr, tenth=result.min_loss_lr / 10))
    if result.stopped_early:
        last = result.smoothed[-1]
        y = last if math.isfinite(last) and (top is None or last <= top) else top
        ax.plot([result.lrs[-1]], [y if y is not None else 0], marker="X", markersize=12, color=DIVERGED_COLOR,
                linestyle="none", clip_on=False, zorder=5, gid="stopped",
                label=_("stopped at {lr:.2g} (step {step}): loss blew up").format(lr=result.lrs[-1],
                                                                                   step=result.steps))


# ---------------------------------------------------------------- several runs

def compare_runs(runs, metric=None, per="epoch", ax=None) -> Figure:
    """Several runs overlaid, labelled by the knobs that differ between them. per="epoch"
    plots a column of run.epochs (metric default "eval_loss"), per="step" one of run.steps
    (default "loss"). Diverged runs are dashed and say so. `runs`: Runs, run folders, or a
    sweep DataFrame."""
    if per not in ("epoch", "step"):
        raise ValueError(_("per={per!r}: allowed: 'epoch' or 'step'").format(per=per))
    runs = as_runs(runs)
    metric = metric or ("eval_loss" if per == "epoch" else "loss")
    fig, ax = _new_axes(ax)
    healthy = []
    for i, (run, label) in enumerate(zip(runs, _run_labels(runs))):
        table = run.epochs if per == "epoch" else run.steps
        if metric not in table:
            raise ValueError(_("metric={metric!r} is not a column of run.{table}; allowed: {columns}").format(
                metric=metric, table=per + "s", columns=", ".join(map(str, table.columns))))
        diverged = run.status == "diverged"
        ax.plot(table[per], table[metric], marker="o" if per == "epoch" else None,
                linestyle="--" if diverged else "-", color=RUN_COLORS[i % len(RUN_COLORS)],
                label=_("{label} (diverged)").format(label=label) if diverged else label, gid="run")
        healthy += [] if diverged else list(table[metric])
        if diverged and run.summary.get("diverged_at_step") is not None:
            step = run.summary["diverged_at_step"]
            _top_marker(ax, _step_epoch(run, step) if per == "epoch" else step, RUN_COLORS[i % len(RUN_COLORS)])
    top = _finite_top(healthy, margin=1.2)
    if top is not None and "loss" in metric and any(r.status == "diverged" for r in runs):
        ax.set_ylim(0, top)  # diverged losses would flatten the healthy curves
    ax.set_xlabel(_("epoch (0 = base model)") if per == "epoch" else _("optimizer step"))
    ax.set_ylabel(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    varied = ", ".join(differing_knobs([r.config for r in runs]))
    if per == "epoch":
        title = _("{metric} per epoch, by {knobs}") if varied else _("{metric} per epoch, by runs")
    else:
        title = _("{metric} per step, by {knobs}") if varied else _("{metric} per step, by runs")
    ax.set_title(title.format(metric=metric, knobs=varied), fontsize=10)
    _legend(ax)
    return fig


def _top_marker(ax, x, color, text=None, label=None):
    """An X on the top edge of the axes at data x: "off the chart", whatever the y scale."""
    ax.plot([x], [0.97], "X", markersize=11, color=color, transform=ax.get_xaxis_transform(), clip_on=False,
            linestyle="none", gid="diverged", zorder=5, label=label)
    if text:
        ax.annotate(text, (x, 0.97), xycoords=ax.get_xaxis_transform(), textcoords="offset points",
                    xytext=(0, -16), ha="center", fontsize=8, color=color)


def _higher_is_better(metric: str) -> bool:
    return "accuracy" in metric


def sweep_plot(df: pd.DataFrame, knob: str, metric: str = "best_eval_loss", ax=None) -> Figure:
    """A sweep table (nbkit.core.sweep.sweep) as metric against knob: a line per combination of the
    other knobs, a log x axis when a positive knob spans >= 2 orders of magnitude, diverged
    runs as red crosses along the top, the best run starred."""
    for column in (knob, metric, "status"):
        if column not in df:
            raise ValueError(_("{column!r} is not a column of the sweep table; allowed: {columns}").format(
                column=column, columns=", ".join(df.columns)))
    fig, ax = _new_axes(ax)
    numeric = pd.api.types.is_numeric_dtype(df[knob])
    x = df[knob].astype(float) if numeric else df[knob].map({v: i for i, v in enumerate(dict.fromkeys(df[knob]))})
    ok = df["status"] != "diverged"
    others = [k for k in df.attrs.get("knobs", []) if k != knob and k in df]
    groups = df[ok].groupby(others, sort=False, dropna=False) if others else [((), df[ok])]
    for i, (key, group) in enumerate(groups):
        order = x[group.index].sort_values().index
        label = knob_label(dict(zip(others, key if isinstance(key, tuple) else (key,))), others) or metric
        ax.plot(x[order], group.loc[order, metric], "o-", color=RUN_COLORS[i % len(RUN_COLORS)], label=label,
                gid="sweep")
    for j, xd in enumerate(x[~ok]):
        _top_marker(ax, xd, DIVERGED_COLOR, _("diverged"),
                    label=_("diverged ({runs} runs)").format(runs=(~ok).sum()) if j == 0 else None)
    _mark_sweep_best(ax, df[ok], x, [knob] + others, metric)
    if numeric and (df[knob] > 0).all() and df[knob].max() / df[knob].min() >= 100:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(df[knob].nunique()), [str(v) for v in dict.fromkeys(df[knob])])
    ax.set_xlabel(knob)
    ax.set_ylabel(metric)
    ax.set_title(_("{metric} against {knob} ({runs} runs)").format(metric=metric, knob=knob, runs=len(df)),
                 fontsize=10)
    _legend(ax)
    return fig


def _mark_sweep_best(ax, healthy, x, knobs, metric):
    values = healthy[metric].dropna()
    if not len(values):
        return
    best = values.idxmax() if _higher_is_better(metric) else values.idxmin()
    ax.plot([x[best]], [values[best]], "*", markersize=18, color=BEST_COLOR, linestyle="none", zorder=5,
            label=_("best: {knobs}, {metric} {value:.3g}").format(knobs=knob_label(healthy.loc[best], knobs),
                                                                  metric=metric, value=values[best]), gid="best")


def shade_range(fig: Figure, low: float, high: float, label: str, ax_index: int = 0) -> Figure:
    """Shade the x range [low, high] of a figure's axes (a rule of thumb's recommended range,
    e.g. 1/100 to 1/10 of the pretraining LR) and add it to the legend. Returns the figure."""
    if not low < high:
        raise ValueError(_("low={low!r}, high={high!r}: allowed: low < high").format(low=low, high=high))
    ax = fig.axes[ax_index]
    ax.axvspan(low, high, color=BEST_COLOR, alpha=0.12, label=label, gid="range", zorder=0)
    _legend(ax)
    return fig

def sweep_heatmap(df: pd.DataFrame, x: str = "learning_rate", y: str = "weight_decay",
                  metric: str = "best_eval_loss", ax=None) -> Figure:
    """A two-knob sweep table as a grid of cells coloured by metric (darker = better), each
    cell labelled with its value. The best cell of each column (each x) carries a dot (gid
    "column_best"): does the best y stay put as x changes? The overall best cell is outlined
    (gid "best"). Diverged runs are grey cells marked "div"."""
    for column in (x, y, metric, "status"):
        if column not in df:
            raise ValueError(_("{column!r} is not a column of the sweep table; allowed: {columns}").format(
                column=column, columns=", ".join(df.columns)))
    xs, ys = sorted(df[x].unique()), sorted(df[y].unique())
    ok = df[df["status"] != "diverged"]
    grid = ok.pivot_table(index=y, columns=x, values=metric, aggfunc="first").reindex(index=ys, columns=xs)
    values = grid.to_numpy(dtype=float)
    better_high = _higher_is_better(metric)
    fig, ax = _new_axes(ax, figsize=(1.3 * len(xs) + 2.5, 0.6 * len(ys) + 1.8))
    # the better the value, the brighter the cell; diverged (NaN) cells grey
    cmap = colormaps["viridis" if better_high else "viridis_r"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, label=metric)
    for i in range(len(ys)):
        for j in range(len(xs)):
            text = _("div") if math.isnan(values[i, j]) else f"{values[i, j]:.3g}"  # div: diverged
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if not math.isnan(values[i, j])
                    else DIVERGED_COLOR, bbox=dict(facecolor="white", alpha=0.6, edgecolor="none", pad=1))
    for j in range(len(xs)):
        column = values[:, j]
        if np.isfinite(column).any():
            i = int(np.nanargmax(column) if better_high else np.nanargmin(column))
            ax.plot([j], [i - 0.32], "o", color=BEST_COLOR, markersize=6, gid="column_best",
                    label=_("best {y} at each {x}").format(y=y, x=x) if j == 0 else None)
    if np.isfinite(values).any():
        i, j = np.unravel_index(np.nanargmax(values) if better_high else np.nanargmin(values), values.shape)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=BEST_COLOR, linewidth=3,
                               gid="best", label=_("best: {x}={x_value}, {y}={y_value}").format(
                                   x=x, x_value=format_value(xs[j]), y=y, y_value=format_value(ys[i]))))
    ax.set_xticks(range(len(xs)), [format_value(float(v)) if isinstance(v, (int, float)) else str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [format_value(float(v)) if isinstance(v, (int, float)) else str(v) for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    # no legend (it would crowd the cells): the title says what the marks mean
    ax.set_title(_("{metric} by {x} and {y} ({runs} runs)").format(metric=metric, x=x, y=y, runs=len(df)) + "\n"
                 + _("dot: best {y} at each {x}; box: best cell").format(y=y, x=x), fontsize=10)
    return fig


def column_best(df: pd.DataFrame, x: str, y: str, metric: str = "best_eval_loss") -> pd.Series:
    """For each value of x, the y of the best run (what sweep_heatmap's dots mark); diverged
    runs left out."""
    ok = df[df["status"] != "diverged"].dropna(subset=[metric])
    pick = ok.groupby(x)[metric].idxmax() if _higher_is_better(metric) else ok.groupby(x)[metric].idxmin()
    return ok.loc[pick].set_index(x)[y]


ZOOM_GIDS = ("train_loss", "eval_loss", "run")  # the per-epoch curves of loss_curves and compare_runs


def zoom_after_base(fig: Figure, ax_index: int = 0, margin: float = 0.15) -> Figure:
    """Scale the y axis of a per-epoch loss figure (loss_curves, compare_runs) to the epochs from 1
    on: the base model's loss at epoch 0 is often 10x the rest, which flattens the part where
    over-fitting shows. The base model's point is then off the chart; an arrow at the top says so."""
    ax = fig.axes[ax_index]
    kept, base = [], []
    for line in ax.lines:
        if line.get_gid() not in ZOOM_GIDS:
            continue
        x, y = np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)
        kept += list(y[(x >= 1) & np.isfinite(y)])
        base += list(y[(x == 0) & np.isfinite(y)])
    if not kept:
        return fig
    top = max(kept) * (1 + margin)
    ax.set_ylim(0, top)
    if base and max(base) > top:
        ax.annotate(_("base model {loss:.3g} ↑").format(loss=max(base)), (0, 0.98), xycoords=ax.get_xaxis_transform(),
                    ha="left", va="top", fontsize=8, color=EVAL_COLOR, gid="base_off_chart")
    return fig
