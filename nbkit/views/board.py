"""The instructor's board: a class (nbkit.core.classroom) as it fills in, redrawn by itself as runs arrive.

    board = Board(open_class("lr101", "sqlite:////shared/class.db"))   # a widget; it reads the class every second
    board                                    # in a notebook: counts, leaderboard, diverged, curves, isolation, knobs
    display(*board.snapshot())               # the same now, as plain outputs (what an executed notebook keeps)
    board.close()                            # stop reading
    save_board(study, "board/")              # the figures as PNG files (`python -m nbkit class board --plots DIR`)

What it shows: how many configurations are done, running, free and failed, and who runs which; the
leaderboard (best validation loss at the class's budget, a student's name on each row, own runs marked "own");
the runs that diverged, by name; own runs outside the class's budget with what they changed; every run's
validation curve (read from the database, so a run trained on another laptop shows), and the study figures of
nbkit.views.study_plots (isolation, per knob with its edge warnings) on the class's design trials.
The tables are nbkit.core.classroom's (leaderboard, diverged_runs, outside_budget); here they are drawn.

As in nbkit.views.study_plots: the Figure API, never pyplot, and the artists a test looks for carry a gid:
one per run ("design", "own", "running", "best", "diverged"), and "note" where a figure cannot be drawn yet.
"""
from __future__ import annotations

import base64
import html
import math
import os
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import ipywidgets as widgets
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nbkit.core.classroom import (board_fingerprint, budget_text, class_budget, class_counts, class_knobs,
                                  class_runs, counts_line, diverged_runs, is_diverged, leaderboard, outside_budget,
                                  running_line)
from nbkit.core.i18n import N_, _
from nbkit.core.runs import status_shown
from nbkit.views import study_plots
from nbkit.views.plots import BEST_COLOR, DIVERGED_COLOR, EVAL_COLOR, STOP_COLOR, TRAIN_COLOR
from nbkit.views.ui import ERROR_COLOR, NOTE_COLOR, OK_COLOR, _html_output, _png_output, show

RUN_GIDS = ("design", "own", "running", "best", "diverged")  # one artist per run carries one of these
FIGURE_NAMES = ("curves", "isolation", "knobs")
FIGURE_TITLES = {"curves": N_("curves"), "isolation": N_("isolation"), "knobs": N_("knobs")}  # a note's title
CURVE_STYLE = {  # gid: (colour, line style, width, legend label: translated where drawn)
    "design": (EVAL_COLOR, "-", 1.2, N_("design run")),
    "own": (TRAIN_COLOR, "--", 1.2, N_("a student's own run")),
    "running": (STOP_COLOR, ":", 1.5, N_("running (its curve so far)")),
    "best": (BEST_COLOR, "-", 3.0, N_("best")),
}
KIND_SHOWN = {"design": N_("design"), "own": N_("own")}  # a table's kind column as a reader sees it
# The isolation and knob plots wait at most this long for a look at the class where nothing else changed: in a busy
# room a run finishes every few seconds, and drawing them (0.1-0.3 s of CPU) in the same look as a finished run's
# point put that point up to 3 s late (bench/classroom_load.py, the board's phases timed).
STUDY_FIGURES_WAIT = 5.0
# The least pause between two looks: the board looks every `every` seconds from the start of one look to the start of
# the next (a slow look does not add its own time to the wait); this much at least, so the widgets' messages get
# through between looks.
LEAST_PAUSE = 0.05
TABLE_FLOAT = "{:.4g}".format  # losses and learning rates alike: 4 significant digits
# The status line when a look at the class fails (translated where shown):
CANNOT_READ = N_("cannot read the class ({error}: {reason}); trying again in {every:g} s")
CANNOT_DRAW = N_("cannot draw the board ({error}: {reason}); trying again in {every:g} s")


# ---------------------------------------------------------------- figures

def curves_figure(rows: list[dict], epochs: int | None = None, title: str = "") -> Figure:
    """Every run's validation loss per epoch (class_runs' rows): design runs solid, students' own runs dashed,
    running ones dotted grey ending in a hollow circle (the curve so far), the leaderboard's first thick green
    and named; a diverged run a red cross along the top, named. `epochs`: the class's budget, the x axis's
    width (a running curve grows into it)."""
    fig, ax = study_plots._figure((7.5, 4.5))
    drawn = [r for r in rows if r["curve"] or is_diverged(r)]
    if not drawn:
        study_plots._empty(ax, _("no validation loss yet: a run shows here at its first epoch end"))
        ax.set_title(title or _("Validation loss per epoch"), fontsize=10)
        return fig
    best = _best_key(rows)
    seen: set[str] = set()
    for row in sorted(drawn, key=lambda r: _key(r) == best):  # the best last: on top
        gid = _curve_gid(row, best)
        _draw_run(ax, row, gid, gid not in seen)
        seen.add(gid)
    last = max([epochs or 1] + [e for r in drawn for e in r["curve"]])
    ax.set_xlim(0.7, last + 0.5)
    top = study_plots._finite_top([v for r in drawn for v in r["curve"].values()])
    if top is not None:
        ax.set_ylim(0, top)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(_("epoch"))
    ax.set_ylabel(_("validation loss"))
    ax.set_title(title or _("Validation loss per epoch, {n} runs").format(n=len(drawn)), fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return fig


def _key(row: dict) -> tuple:
    return row["kind"], row["student"], row["trial"]


def _best_key(rows: list[dict]) -> tuple | None:
    board = leaderboard(rows)
    return None if board.empty else tuple(board.iloc[0][["kind", "student", "trial"]])


def _curve_gid(row: dict, best) -> str:
    if is_diverged(row):
        return "diverged"
    if row["state"] == "RUNNING":
        return "running"
    return "best" if _key(row) == best else row["kind"]


def _draw_run(ax, row: dict, gid: str, first: bool) -> None:
    """One run: its curve, or for a diverged run a red cross along the top at the epoch after its last finite
    loss (where it blew up), named, its finite part dotted red."""
    epochs = sorted(row["curve"])
    losses = [row["curve"][e] for e in epochs]
    if gid == "diverged":
        if epochs:
            ax.plot(epochs, losses, ":", color=DIVERGED_COLOR, linewidth=1, gid="diverged_curve")
        x = (epochs[-1] + 1) if epochs else 1
        ax.plot([x], [0.96], "X", color=DIVERGED_COLOR, markersize=10, linestyle="none", clip_on=False, zorder=6,
                transform=ax.get_xaxis_transform(), gid="diverged", label=_("diverged (not ranked)") if first else None)
        name = ax.annotate(_who(row), (x, 0.96), xycoords=ax.get_xaxis_transform(), textcoords="offset points",
                           xytext=(6, -3), fontsize=7, color=DIVERGED_COLOR)
        name.set_gid("diverged_name")
        return
    color, style, width, label = CURVE_STYLE[gid]
    label = _(label)
    if gid == "best":
        label = _("best: {who}, {value:.4g}").format(who=_who(row), value=row["value"])
    if row["kind"] == "own" and gid in ("running", "best"):
        style = "--"  # own runs stay dashed whatever else they are
    best = gid == "best"
    ax.plot(epochs, losses, linestyle=style, color=color, linewidth=width, marker="o", markersize=7 if best else 4,
            alpha=0.95 if best else 0.7, zorder=5 if best else 2, gid=gid, label=label if first or best else None)
    if gid == "running":  # where it has got to: a hollow circle the next epoch's point will follow
        ax.plot(epochs[-1:], losses[-1:], "o", markersize=9, markerfacecolor="none", color=color,
                linestyle="none", gid="running_end")
    if gid == "best":
        note = ax.annotate(_who(row), (epochs[-1], losses[-1]), textcoords="offset points", xytext=(6, 4),
                           fontsize=8, color=BEST_COLOR)
        note.set_gid("best_name")


def _who(row: dict) -> str:
    return _("{student} (own)").format(student=row["student"]) if row["kind"] == "own" else row["student"]


def note_figure(title: str, reason: str) -> Figure:
    """A figure that says why it cannot be drawn yet (gid "note"), in place of a traceback."""
    fig, ax = study_plots._figure((7.5, 2.2))
    study_plots._empty(ax, "\n".join(_wrap(reason)))
    ax.set_title(title, fontsize=10)
    return fig


def _wrap(text: str, width: int = 90) -> list[str]:
    return textwrap.wrap(text, study_plots._wrap_width(text, width)) or [""]


def _study_figure(name: str, make, study, rows: list[dict]) -> Figure:
    """study_plots' figure of the class's design trials, or a note saying why it cannot be drawn yet."""
    title = _(FIGURE_TITLES[name])
    if not any(r["kind"] == "design" and r["state"] in ("COMPLETE", "PRUNED") for r in rows):
        # study_plots would say "no searched knob" of a class whose configurations are all still queued
        return note_figure(title, _("not drawn yet: no configuration of the class's design has finished"))
    try:
        return make(study)
    except Exception as err:  # noqa: BLE001 - e.g. isolation before any trial completed: a reason, never a traceback
        return note_figure(title, _("not drawn yet: {reason}").format(reason=err))


def board_figures(study, rows: list[dict] | None = None) -> dict[str, Figure]:
    """The board's figures of a class study: {"curves", "isolation", "knobs"}; one that cannot be drawn yet
    is a note saying why. `rows`: class_runs(study) when already read."""
    rows = class_runs(study) if rows is None else rows
    return {"curves": _curves_of(study, rows),
            "isolation": _study_figure("isolation", study_plots.isolation_plot, study, rows),
            "knobs": _study_figure("knobs", study_plots.knob_plots, study, rows)}


def _curves_of(study, rows: list[dict]) -> Figure:
    title = _("Class {name}: validation loss per epoch, every run (design solid, own dashed; budget {budget})").format(
        name=study.study_name, budget=budget_text(study))
    try:
        return curves_figure(rows, class_budget(study)["num_train_epochs"], "\n".join(_wrap(title, 80)))
    except Exception as err:  # noqa: BLE001 - a reason, never a traceback
        return note_figure(_(FIGURE_TITLES["curves"]),
                           _("not drawn: {error}: {reason}").format(error=type(err).__name__, reason=err))


def save_board(study, folder) -> list[Path]:
    """The board's figures as <folder>/<name>.png (curves, isolation, knobs), each written to a temporary
    file and renamed over the old one, so a viewer refreshing it never reads half a PNG; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in board_figures(study).items():
        path = folder / f"{name}.png"
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".png")
        try:
            with os.fdopen(handle, "wb") as file:
                fig.savefig(file, format="png", dpi=100)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        written.append(path)
    return written


# ---------------------------------------------------------------- tables as HTML

def tables_html(study, rows: list[dict]) -> tuple[str, str]:
    """(HTML, plain text) of the board's tables: the leaderboard, the runs that diverged, own runs outside
    the class's budget."""
    knobs = class_knobs(study)
    parts = [(_("Leaderboard: best validation loss at the class's budget ({budget}); own runs at it marked "
                "own").format(budget=budget_text(study)), leaderboard(rows, knobs), _("no finished run yet")),
             (_("The runs that diverged, by name (not ranked)"), diverged_runs(rows, knobs), _("none")),
             (_("Students' own runs outside the class's budget (not ranked), with what they changed"),
              outside_budget(rows, knobs), _("none"))]
    markup, plain = [], []
    for title, table, empty in parts:
        table = _kinds_shown(table)
        body = (f"<i>{empty}</i>" if table.empty else
                table.to_html(float_format=TABLE_FLOAT, na_rep="", classes="nbkit-board", border=0))
        markup.append(f"<p><b>{html.escape(title)}</b></p>{body}")
        plain.append(_("{title}:").format(title=title) + "\n"
                     + (empty if table.empty else table.to_string(float_format=TABLE_FLOAT)))
    return "".join(markup), "\n\n".join(plain)


def _kinds_shown(table):
    """The table as a reader sees it: its kind ("design", "own") and status columns in the reader's language (the
    data keeps the English values)."""
    if table.empty:
        return table
    if "kind" in table.columns:
        table = table.assign(kind=[_(KIND_SHOWN[k]) if k in KIND_SHOWN else k for k in table["kind"]])
    if "status" in table.columns:
        table = table.assign(status=[status_shown(v) for v in table["status"]])
    return table


def counts_html(study, counts: dict) -> str:
    lines = [counts_line(study, counts)] + [line for line in [running_line(counts)] if line]
    return "<br>".join(html.escape(line) for line in lines)


def snapshot(study) -> list:
    """The board at this moment as plain outputs to display: the counts and tables (HTML) and the figures (PNG).
    What an executed notebook keeps: a widget's drawings live only in a running kernel's widget state."""
    from IPython.display import HTML, Image

    rows, counts = class_runs(study), class_counts(study)
    markup = tables_html(study, rows)[0]
    shown = [HTML(f"<p>{counts_html(study, counts)}</p>{markup}")]
    for fig in board_figures(study, rows).values():
        shown.append(Image(data=_png_bytes(fig)))
    return shown


def _png_bytes(fig: Figure) -> bytes:
    return base64.b64decode(_png_output(fig)["data"]["image/png"])


# ---------------------------------------------------------------- the live widget

class Board:
    """The live board of a class study: a VBox (`widget`) redrawn by a background thread that reads the class
    every `every` seconds and redraws only when something changed (board_fingerprint).

    Attributes tests and benches use: shown_at ({(kind, student, trial): time.time() when a finished run first
    showed on the board}), redraws (how many times it drew), last_error (the last read or draw that failed:
    shown in the status line, retried next tick). refresh() draws now; close() stops the thread."""

    def __init__(self, study, every: float = 1.0):
        if not isinstance(every, (int, float)) or isinstance(every, bool) or not every > 0 or math.isinf(every):
            raise ValueError(_("every={every!r}: allowed: seconds between looks at the class, a number > 0 such as "
                               "1").format(every=every))
        self.study, self.every = study, float(every)
        self.shown_at: dict[tuple, float] = {}
        self.redraws = 0
        self.last_error: BaseException | None = None
        self._fingerprint = None
        self._shown_runs = None  # the runs the tables and curves were last drawn for (shown_runs)
        self._finished = None  # the design's finished trials when the isolation and knob plots were last drawn
        self._study_due = None  # when those plots, waiting for a quiet look, are drawn anyway
        self._lock = threading.Lock()  # the thread's tick and a refresh() from the notebook never interleave
        self._stop = threading.Event()
        self.status = widgets.HTML(value=_message(_("reading the class..."), NOTE_COLOR))
        self.counts = widgets.HTML(value="")
        self.tables_output = widgets.Output()
        self.figure_outputs = {name: widgets.Output() for name in FIGURE_NAMES}
        self.widget = widgets.VBox([
            widgets.HTML(f"<h3>{html.escape(_('Class {name}').format(name=study.study_name))}</h3>"), self.status,
            self.counts,
            self.tables_output, *self.figure_outputs.values()])
        self._thread = threading.Thread(target=self._loop, name=f"board {study.study_name}", daemon=True)
        self._thread.start()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"Board(class={self.study.study_name!r}, every={self.every:g}, redraws={self.redraws})"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> bool:
        """Stop reading the class; True once the thread has ended (within `timeout` seconds)."""
        self._stop.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._say(_("closed: the class goes on; run the cell again for a live board"), NOTE_COLOR)
        return not self._thread.is_alive()

    def refresh(self) -> bool:
        """Read the class and redraw now, changed or not; False when the read or the drawing failed (the
        status line says why)."""
        return self._tick(force=True)

    def snapshot(self) -> list:
        """The board at this moment as plain outputs (nbkit.views.board.snapshot)."""
        return snapshot(self.study)

    # ------------------------------------------------------------ the thread

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._tick(force=False)
            self._stop.wait(self.pause(time.monotonic() - started))

    def pause(self, took: float) -> float:
        """Seconds to wait after a look that took `took`: the rest of `every` (a look that drew a figure must not
        keep the next finished run waiting a whole `every` more), at least LEAST_PAUSE."""
        return max(LEAST_PAUSE, self.every - took)

    def _tick(self, force: bool) -> bool:
        with self._lock:
            try:
                trials = self.study.get_trials(deepcopy=False)  # read once a look, for the rows and the counts
                rows, counts = class_runs(self.study, trials), class_counts(self.study, trials)
            except Exception as err:  # noqa: BLE001 - a database hiccup: said in the status line, retried next tick
                return self._failed(CANNOT_READ, err)
            fingerprint = board_fingerprint(rows, counts)
            changed = force or fingerprint != self._fingerprint
            if force:
                self._finished = None
            try:
                if changed:
                    self._draw(rows, counts, force)
                finished = _finished_design(rows)
                if finished != self._finished and (force or self._finished is None or not changed
                                                   or self._study_waited()):
                    self._draw_study_figures(rows, finished)
            except Exception as err:  # noqa: BLE001 - never a traceback from the thread
                return self._failed(CANNOT_DRAW, err)
            if not changed:
                return True
            self._fingerprint = fingerprint
            self.last_error = None
            self._say(_("live: reads the class every {every:g} s; last change shown at {time}").format(
                every=self.every, time=time.strftime("%H:%M:%S")), OK_COLOR)
            return True

    def _study_waited(self) -> bool:
        """The isolation and knob plots have waited STUDY_FIGURES_WAIT seconds for a quiet look: draw them now."""
        if self._study_due is None:
            self._study_due = time.time() + STUDY_FIGURES_WAIT
        return time.time() >= self._study_due

    def _failed(self, message: str, err: BaseException) -> bool:
        """`message`: CANNOT_READ or CANNOT_DRAW."""
        self.last_error = err
        self._fingerprint = self._finished = self._shown_runs = None  # draw everything again once it answers
        reason = (str(getattr(err, "orig", None) or err).strip().splitlines() or [""])[0]
        self._say(_(message).format(error=type(err).__name__, reason=reason, every=self.every), ERROR_COLOR)
        return False

    def _draw(self, rows: list[dict], counts: dict, force: bool = False) -> None:
        """The counts; and the tables and the curves (a finished run's point on the board) when the runs they show
        changed: a configuration just taken changes the counts only, and redrawing the curves for it would keep a
        run finishing meanwhile waiting (bench/classroom_load.py)."""
        self.counts.value = counts_html(self.study, counts)
        runs = shown_runs(rows)
        if force or runs != self._shown_runs:
            show(self.tables_output, _html_output(*tables_html(self.study, rows)))
            show(self.figure_outputs["curves"], _png_output(_curves_of(self.study, rows)))
            self._shown_runs = runs
            now = time.time()
            for row in rows:
                if row["finished"] is not None:
                    self.shown_at.setdefault(_key(row), now)
        self.redraws += 1

    def _draw_study_figures(self, rows: list[dict], finished: tuple) -> None:
        """The isolation and knob plots: they read only finished design trials, so they are drawn when that set
        changed, on the next look where nothing else did (a run finishing then is not kept waiting behind them),
        or once they have waited STUDY_FIGURES_WAIT seconds in a room that never goes quiet."""
        for name, make in (("isolation", study_plots.isolation_plot), ("knobs", study_plots.knob_plots)):
            show(self.figure_outputs[name], _png_output(_study_figure(name, make, self.study, rows)))
        self._finished, self._study_due = finished, None

    def _say(self, text: str, color: str) -> None:
        self.status.value = _message(text, color)


def shown_runs(rows: list[dict]) -> tuple:
    """What the tables and the curves show of the runs: those with a point or an end (a run only taken shows in
    the counts alone), each with its state, result and number of points."""
    return tuple((r["kind"], r["student"], r["trial"], r["state"], r["run_status"], r["value"], len(r["curve"]))
                 for r in rows if r["curve"] or r["finished"] is not None)


def _finished_design(rows: list[dict]) -> tuple:
    return tuple(sorted((r["trial"], r["state"]) for r in rows if r["kind"] == "design" and r["finished"]))


def _message(text: str, color: str) -> str:
    return f'<span style="color:{color}">{html.escape(text)}</span>'


def board(study, every: float = 1.0) -> Board:
    """A live Board of a class study (show it as a cell's last value)."""
    return Board(study, every)

