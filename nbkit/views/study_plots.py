"""Pictures of an Optuna study (nbkit.core.study): pure functions, study in, matplotlib Figure out,
drawn from the tables of nbkit.core.study_analysis.

    knob_plots(study)              per knob: value against validation loss, pruned / failed / dead marked
    isolation_plot(study)          best validation loss per scientific value, nuisance knobs tuned away
    parallel_coordinates(study)    a line per completed trial across every knob, coloured by loss
    importance_plot(study)         which knobs mattered (Optuna's PED-ANOVA importances)
    intermediate_plot(study)       each trial's validation loss per epoch, pruned ones visibly cut
    save_study_figures(study, dir) all of them as PNG files (those that cannot be drawn: a line why)

As in nbkit.views.plots: the Figure API, never pyplot (nothing lands in pyplot's global figure
list, nothing needs a backend to save), and the artists a reader or a test looks for carry a gid
("completed", "pruned", "failed", "worker_died", "best", "isolation", "trial", "cut", ...). The colours are
plots.py's: one meaning, one colour.
"""
from __future__ import annotations

import math
import textwrap
import warnings
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nbkit.core.i18n import N_, _, columns
from nbkit.core.runs import format_value
from nbkit.core.study_analysis import (FEW_FOR_IMPORTANCE, ISOLATION_BINS, WORKER_DIED,  # noqa: F401 (re-exported)
                                       best_trial, bin_edges, edge_warning_texts, importance, importance_hint,
                                       is_log_scale, is_numeric, is_usable, isolation, position_in, run_status,
                                       search_space, trials_table, usable_trials)
from nbkit.views.plots import BEST_COLOR, DIVERGED_COLOR, EVAL_COLOR, STOP_COLOR, TRAIN_COLOR

LOSS_CMAP = "viridis_r"  # the lower the validation loss, the brighter the line (as sweep_heatmap's cells)
LABEL_BOX = dict(facecolor="white", alpha=0.75, edgecolor="none", pad=1)  # axis labels readable over the lines


# ---------------------------------------------------------------- helpers

def _figure(figsize=(7, 4)):
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _empty(ax, what: str):
    """Say in the figure why it is empty, rather than draw blank axes."""
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, fontsize=10, gid="note")
    ax.set_xticks([])
    ax.set_yticks([])


def _wrap_width(text: str, width: int) -> int:
    """textwrap's width for `text`: `width` characters, half as many where the text has wide (Chinese)
    characters, each of which takes two columns: a wrapped title keeps the width it has in English."""
    return width // 2 if columns(text) > len(text) else width


def _fill(text: str, width: int) -> str:
    return textwrap.fill(text, _wrap_width(text, width))


def _label(value) -> str:
    return format_value(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else str(value)


def _positions(domain, values) -> tuple[list, list | None]:
    """x positions of values on a knob's axis: the values themselves for a numeric knob, their
    index in the domain's list for a categorical one (with the list, to label the ticks)."""
    if is_numeric(domain):
        return [math.nan if v is None else float(v) for v in values], None
    categories = list(dict.fromkeys(list(domain) + [v for v in values if v is not None]))
    index = {repr(c): i for i, c in enumerate(categories)}
    return [math.nan if v is None else index[repr(v)] for v in values], categories


def _at_top(ax, xs, label, gid="failed", marker="X", color=DIVERGED_COLOR):
    """Markers along the top edge for trials with no usable loss, at their x: red crosses for failed
    or diverged runs; grey plus signs (gid "worker_died") for trials whose worker died, which say
    nothing about their knob values, only that the run never ended."""
    if len(xs):
        ax.plot(xs, [0.97] * len(xs), marker, color=color, markersize=9, linestyle="none",
                transform=ax.get_xaxis_transform(), clip_on=False, gid=gid, label=label, zorder=5)


def _finite_top(values, margin=1.1):
    values = np.asarray([v for v in values if v is not None], dtype=float)
    values = values[np.isfinite(values)]
    return float(values.max()) * margin if len(values) else None


# ---------------------------------------------------------------- per knob

def knob_plots(study, ncols: int = 3) -> Figure:
    """A panel per searched knob: each trial's value of the knob against its validation loss.
    Completed trials are dots, pruned ones hollow grey triangles at the best loss they reached
    before the cut, failed or diverged ones red crosses along the top, those whose worker died grey
    plus signs along the top; the best trial a star. A log
    axis for a log range (or a list spanning >= 10x). When the best trial sits at the edge of the
    searched range, the panel's title says so in red (edge_warnings)."""
    table = trials_table(study)
    space = {knob: domain for knob, domain in search_space(study).items() if knob in table}
    if not space:
        fig, ax = _figure()
        _empty(ax, _("no trials yet") if table.empty else _("no searched knob: every param has a single value"))
        return fig
    ncols = min(ncols, len(space))
    nrows = math.ceil(len(space) / ncols)
    fig = Figure(figsize=(4.3 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    edges, best = edge_warning_texts(study), best_trial(study)
    for ax, (knob, domain) in zip(axes, space.items()):
        _knob_panel(ax, table, knob, domain, best, edges.get(knob))
    for ax in axes[len(space):]:
        ax.remove()
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(_("Validation loss against each knob ({n} trials)").format(n=len(table)), fontsize=11)
    return fig


def _knob_panel(ax, table, knob, domain, best, warning):
    values = [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in table[knob]]
    x, categories = _positions(domain, values)
    table = table.assign(_x=x)
    usable = (table["state"] == "COMPLETE") & np.isfinite(table["value"])
    pruned = table["state"] == "PRUNED"
    died = table["run_status"] == WORKER_DIED
    unusable = ~usable & ~pruned & ~died & table["state"].isin(["COMPLETE", "FAIL"])
    ax.plot(table.loc[usable, "_x"], table.loc[usable, "value"], "o", color=EVAL_COLOR, linestyle="none",
            alpha=0.8, gid="completed", label=_("completed ({n})").format(n=usable.sum()))
    if pruned.any():
        ax.plot(table.loc[pruned, "_x"], table.loc[pruned, "best_reported"], "v", color=STOP_COLOR,
                markerfacecolor="none", linestyle="none", gid="pruned",
                label=_("pruned ({n}): best loss before the cut").format(n=pruned.sum()))
    _at_top(ax, list(table.loc[unusable, "_x"]), _("failed or diverged ({n})").format(n=unusable.sum()))
    _at_top(ax, list(table.loc[died, "_x"]), _("worker died ({n}): no loss").format(n=died.sum()), gid="worker_died",
            marker="P", color=STOP_COLOR)
    if best is not None and knob in best.params:
        bx = table.loc[table["number"] == best.number, "_x"].iloc[0]
        ax.plot([bx], [best.value], "*", color=BEST_COLOR, markersize=15, linestyle="none", zorder=6, gid="best",
                label=_("best: trial {number}, {value:.4g}").format(number=best.number, value=best.value))
    if is_log_scale(domain):
        ax.set_xscale("log")
    if categories is not None:
        ax.set_xticks(range(len(categories)), [_label(c) for c in categories])
    ax.set_xlabel(_("{knob} (log scale)").format(knob=knob) if is_log_scale(domain) else knob)
    ax.set_ylabel(_("best validation loss"))
    if warning:  # the edge warning without its knob: the title's first line names it
        ax.set_title(f"{knob}\n" + _fill(warning, 48), fontsize=8, color=DIVERGED_COLOR)
    else:
        ax.set_title(knob, fontsize=10)


# ---------------------------------------------------------------- isolation

def isolation_plot(study, scientific=None, bins: int = ISOLATION_BINS) -> Figure:
    """The isolation analysis drawn: every completed trial as a faint dot at its scientific value,
    and over them the best validation loss per scientific value (the nuisance knobs tuned away:
    the minimum over them), each point labelled with the nuisance values that won it. A binned
    range shows its bin edges; a scientific value where no trial gave a usable loss is a red cross
    along the top. With several scientific knobs the first is the x axis, a line per value of the rest."""
    table = isolation(study, scientific, bins)
    knobs, nuisance = table.attrs["scientific"], table.attrs["nuisance"]
    knob, others = knobs[0], knobs[1:]
    domain = search_space(study).get(knob, list(dict.fromkeys(table[knob])))
    fig, ax = _figure((7.5, 4.5))
    usable = [t for t in usable_trials(study) if knob in t.params]
    tx, categories = _positions(domain, [t.params[knob] for t in usable])
    ax.plot(tx, [t.value for t in usable], "o", color=STOP_COLOR, alpha=0.35, markersize=4, linestyle="none",
            gid="trial", label=_("each completed trial ({n})").format(n=len(usable)))
    x = _positions(domain, list(table[knob]))[0]
    table = table.assign(_x=x)
    groups = table.groupby(others, sort=False) if others else [((), table)]
    edges = bin_edges(domain, bins) if knob in table.attrs["binned"] else None
    for i, (key, group) in enumerate(groups):
        _isolation_line(ax, group, others, key, i, edges)
    if edges is not None:
        for edge in edges:
            ax.axvline(edge, color=STOP_COLOR, linewidth=0.6, linestyle=":", gid="bin_edge")
    if is_log_scale(domain):
        ax.set_xscale("log")
    if categories is not None:
        ax.set_xticks(range(len(categories)), [_label(c) for c in categories])
    if knob not in table.attrs["binned"]:
        ax.set_xlabel(knob)
    else:
        binned = _("{knob} ({bins} log bins)") if is_log_scale(domain) else _("{knob} ({bins} bins)")
        ax.set_xlabel(binned.format(knob=knob, bins=bins))
    ax.set_ylabel(_("best validation loss"))
    title = (_("Isolation: best validation loss per {knob}, {nuisance} tuned away (label: the nuisance values that "
               "won)").format(knob=knob, nuisance=", ".join(nuisance)) if nuisance else
             _("Isolation: best validation loss per {knob}, no nuisance knob tuned away (label: the nuisance values "
               "that won)").format(knob=knob))
    ax.set_title(_fill(title, 80), fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return fig


def _isolation_line(ax, group, others, key, i, span):
    key = key if isinstance(key, tuple) else (key,)
    name = ", ".join(f"{k}={_label(v)}" for k, v in zip(others, key))
    ok = group["best_value"].notna()
    color = [TRAIN_COLOR, "#9467bd", "#8c564b", "#e377c2", "#17becf"][i % 5]
    ax.plot(group.loc[ok, "_x"], group.loc[ok, "best_value"], "o-", color=color, gid="isolation",
            label=_("best over nuisance knobs ({values})").format(values=name) if name else
            _("best over nuisance knobs"))
    for _index, row in group[ok].iterrows():
        if span is not None:  # a binned value: its best holds for the whole bin
            i = int(np.clip(np.searchsorted(span, row["_x"]) - 1, 0, len(span) - 2))
            ax.hlines(row["best_value"], span[i], span[i + 1], color=color, linewidth=4, alpha=0.25, gid="bin_span")
        if row["nuisance"]:
            note = ax.annotate(row["nuisance"].replace(", ", "\n"), (row["_x"], row["best_value"]),
                               textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7, color=color)
            note.set_gid("winner")
    _at_top(ax, list(group.loc[~ok, "_x"]), _("no usable trial") if (~ok).any() and i == 0 else None)


# ---------------------------------------------------------------- parallel coordinates

def parallel_coordinates(study) -> Figure:
    """A vertical axis per searched knob and one for the validation loss; a line per completed trial
    through its values, coloured by its loss (brighter = lower), the best trial drawn thick on
    top. Each axis runs from its searched low to high on the knob's own scale (log for a log
    range), categories evenly spaced; its ends are labelled with the real values."""
    space = search_space(study)
    trials = usable_trials(study)
    knobs = list(space)
    fig, ax = _figure((max(6.0, 1.7 * (len(knobs) + 1)), 4.5))
    if not trials:
        _empty(ax, _("no completed trial with a finite validation loss"))
        return fig
    values = np.array([t.value for t in trials])
    norm = Normalize(values.min(), values.max())
    cmap = colormaps[LOSS_CMAP]
    best = best_trial(study)
    for t in sorted(trials, key=lambda t: -t.value):  # the best last: on top
        ys = [_height(space[k], t.params.get(k)) for k in knobs] + [_loss_height(t.value, values)]
        ax.plot(range(len(ys)), ys, color=cmap(norm(t.value)), linewidth=1.2, alpha=0.85, gid="trial")
    ys = [_height(space[k], best.params.get(k)) for k in knobs] + [_loss_height(best.value, values)]
    ax.plot(range(len(ys)), ys, color=BEST_COLOR, linewidth=3, gid="best", zorder=5,
            label=_("best: trial {number}, {value:.4g}").format(number=best.number, value=best.value))
    for i, knob in enumerate(knobs):
        _axis_labels(ax, i, space[knob])
    _loss_axis_labels(ax, len(knobs), values)
    ax.set_xticks(range(len(knobs) + 1), knobs + [_("validation loss")], fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    for side in ("left", "right", "top", "bottom"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=_("validation loss"))
    ax.set_title(_("Parallel coordinates: {n} completed trials, coloured by validation loss").format(n=len(trials)),
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def _height(domain, value) -> float:
    """0..1 on a knob's axis (NaN when the trial has no such param: the line breaks)."""
    if value is None:
        return math.nan
    if is_numeric(domain):
        return float(np.clip(position_in(domain, value), 0, 1))
    categories = [repr(c) for c in domain]
    return categories.index(repr(value)) / max(len(categories) - 1, 1) if repr(value) in categories else math.nan


def _loss_height(value, values) -> float:
    spread = values.max() - values.min()
    return 0.5 if spread == 0 else (value - values.min()) / spread


def _axis_labels(ax, i, domain):
    ax.axvline(i, color="black", linewidth=0.8, zorder=0)
    if is_numeric(domain):
        low, high = (domain["low"], domain["high"]) if isinstance(domain, dict) else (min(domain), max(domain))
        marks = [(0.0, low), (1.0, high)]
    else:
        marks = [(_height(domain, c), c) for c in domain]
    for y, value in marks:
        ax.text(i + 0.04, y, _label(value), fontsize=7, va="center", ha="left", gid="axis_label", zorder=6,
                bbox=LABEL_BOX)


def _loss_axis_labels(ax, i, values):
    ax.axvline(i, color="black", linewidth=0.8, zorder=0)
    for y, value in ((0.0, values.min()), (1.0, values.max())):
        ax.text(i + 0.04, y, f"{value:.4g}", fontsize=7, va="center", ha="left", gid="axis_label", zorder=6,
                bbox=LABEL_BOX)


# ---------------------------------------------------------------- importance and curves

def importance_plot(study) -> Figure:
    """Each varying knob's importance (nbkit.core.study_analysis.importance: Optuna's PED-ANOVA,
    shares summing to 1) as a horizontal bar, the most important on top. Raises importance's
    ValueError when it cannot be computed (fewer than 2 completed trials, nothing varies)."""
    scores = importance(study)
    fig, ax = _figure((6.5, 0.5 * len(scores) + 1.6))
    names = list(scores)[::-1]
    bars = ax.barh(names, [scores[n] for n in names], color=TRAIN_COLOR)
    for bar, name in zip(bars, names):
        bar.set_gid("importance")
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {scores[name]:.0%}", va="center",
                fontsize=8)
    ax.set_xlim(0, max(scores.values()) * 1.2 or 1)
    ax.set_xlabel(_("importance (share of the total)"))
    n = len(usable_trials(study))
    title = _("Which knobs mattered: PED-ANOVA over {n} completed trials").format(n=n)
    if importance_hint(n):  # below FEW_FOR_IMPORTANCE trials (nbkit.core.study_analysis)
        title += "\n" + importance_hint(n)
    ax.set_title(title, fontsize=10)
    return fig


def intermediate_plot(study) -> Figure:
    """Each trial's validation loss per epoch (its Optuna intermediate values): completed trials
    solid orange, pruned ones dashed grey ending in a cross where the pruner cut them, failed or
    diverged ones dotted red, those whose worker died dash-dotted grey ending in a plus where it fell
    silent, the best trial thick green. The y axis is scaled to the finite losses."""
    fig, ax = _figure((7.5, 4.5))
    trials = [t for t in study.trials if t.intermediate_values]
    if not trials:
        _empty(ax, _("no trial reported a validation loss"))
        return fig
    best = best_trial(study)
    seen = set()
    for t in trials:
        kind = "best" if best is not None and t.number == best.number else (
            "completed" if is_usable(t) else "pruned" if t.state.name == "PRUNED" else
            "worker_died" if run_status(t) == WORKER_DIED else "failed")
        epochs = sorted(t.intermediate_values)
        losses = [t.intermediate_values[e] for e in epochs]
        _curve(ax, kind, epochs, losses, kind not in seen, t)
        seen.add(kind)
    top = _finite_top([v for t in trials for v in t.intermediate_values.values()])
    if top is not None:
        ax.set_ylim(0, top)
    ax.set_xlabel(_("epoch"))
    ax.set_ylabel(_("validation loss"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(_("Validation loss per epoch, {n} trials (pruned ones end where they were cut)").format(
        n=len(trials)), fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return fig


CURVE_STYLE = {  # kind: (colour, line style, width, legend label: translated where drawn)
    "completed": (EVAL_COLOR, "-", 1.0, N_("completed")),
    "pruned": (STOP_COLOR, "--", 1.0, N_("pruned (x: cut here)")),
    "failed": (DIVERGED_COLOR, ":", 1.0, N_("failed or diverged")),
    "worker_died": (STOP_COLOR, "-.", 1.0, N_("worker died (its curve so far)")),
    "best": (BEST_COLOR, "-", 2.5, N_("best")),
}


def _curve(ax, kind, epochs, losses, first, trial):
    color, style, width, label = CURVE_STYLE[kind]
    label = _(label)
    if kind == "best":
        label = _("best: trial {number}, {value:.4g}").format(number=trial.number, value=trial.value)
    ax.plot(epochs, losses, linestyle=style, color=color, linewidth=width, alpha=0.9 if kind == "best" else 0.6,
            marker="o", markersize=3, gid=kind, label=label if first else None, zorder=5 if kind == "best" else 2)
    if kind == "pruned":
        ax.plot([epochs[-1]], [losses[-1]], "x", color=color, markersize=9, markeredgewidth=2, linestyle="none",
                gid="cut")
    if kind == "worker_died":  # the knob plots' marker for it, where its worker fell silent
        ax.plot([epochs[-1]], [losses[-1]], "P", color=color, markersize=9, linestyle="none", gid="died_here")


# ---------------------------------------------------------------- files

FIGURES = (("knobs", knob_plots), ("isolation", isolation_plot), ("parallel_coordinates", parallel_coordinates),
           ("importance", importance_plot), ("intermediate", intermediate_plot))


def save_study_figures(study, folder, notes: list | None = None) -> list[Path]:
    """Every study figure as <folder>/<name>.png (knobs, isolation, parallel_coordinates, importance,
    intermediate); returns the paths written. A figure that cannot be drawn for this study (its
    function raises ValueError: importance from fewer than 2 completed trials, isolation for a study
    with no scientific knob or no trial) is skipped with a sentence saying why, appended to `notes`
    when given (the CLI prints them), else warned."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in FIGURES:
        try:
            fig = make(study)
        except ValueError as err:
            note = _("{path} not written: {reason}").format(path=folder / (name + ".png"), reason=err)
            if notes is None:
                warnings.warn(note, stacklevel=2)
            else:
                notes.append(note)
            continue
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    return written
