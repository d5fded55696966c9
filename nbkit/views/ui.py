"""Interactive panels: a chapter's knobs as widgets, a Train button, a live plot, the runs so far.

    from nbkit.views.ui import panel
    runs = []                                   # this notebook's runs, shared by all its panels
    p = panel(cfg, ["learning_rate", "lr_scheduler_type", "warmup_ratio"], runs)
    p                                           # or display(p.widget)

How it behaves:
- Building a panel trains nothing, and under papermill showing it is harmless: nobody clicks.
- Train first checks `cfg.replace(**values)`; a value the config refuses is shown in the status
  line (the config's own message), never as a traceback. So are errors inside the training.
- The run trains in a background thread. The trainer calls back on every step; the thread
  redraws the plot by replacing the Output widget's outputs (never `with out:` from a thread),
  at most every REDRAW_SECONDS and at every epoch end. The figure is `plots.loss_curves` of the
  run so far, so the live plot and the final one look the same.
- Progress bars are switched off (disable_tqdm=True) unless the panel has that field: the status
  line and the plot show the progress.
- Stop sets the threading.Event the trainer checks after each step: the run ends "interrupted".
- Under the plot, the curve doctor's verdict (nbkit.views.doctor): what the curves show, with the
  epochs and values, and what to change. Updated at every epoch end and once the run has ended.
- Each finished run is appended to `runs`; every panel sharing that list refreshes its table.
- The "Class" row (a workshop, nbkit.core.classroom): class name, storage URL, the student's name, Join
  (filled in from NBKIT_CLASS, NBKIT_CLASS_STORAGE and JUPYTERHUB_USER when a workshop's hub sets them).
  Once joined, Train next takes the class's next free configuration (the same atomic step a study worker
  takes), sets the sliders to it, trains it live as Train does and tells the class its result; the panel
  then starts from the class's config, and a run of the student's own values (Train) is recorded in the
  class as the student's own, outside the design. `panel(..., join="NAME@URL", student="ana")` joins at once.
- Every text a learner reads goes through nbkit.core.i18n's _(): the toggle in the top row (English / 中文)
  sets the process's language and relabels every live panel at once (labels, tooltips, status lines, the
  doctor's verdict, the last run's plot); `panel(..., language="zh")` starts in Chinese.

The controls: `CONTROLS` maps each TrainConfig field to a function that builds its widget from
the field's current value. Tooltips are the field comments of TrainConfig (config.field_docs).
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import threading
import time
import weakref
from pathlib import Path

import ipywidgets as widgets
import pandas as pd

from nbkit.core.callbacks import BestTracker, EPOCH_END, RUN_END, STEP, TRAIN_BEGIN
from nbkit.core.classroom import Seat, class_counts, join_class
from nbkit.core.config import (DATASET_NAMES, FINETUNING_TYPES, MODEL_NAMES, OPTIMIZER_NAMES, SCHEDULER_NAMES,
                               TrainConfig, check_field_names, field_docs)
from nbkit.core.i18n import N_, _, check_language, get_language, set_language
from nbkit.core.runs import Run, knob_label, runs_table, status_shown
from nbkit.core.train import train
from nbkit.views import plots
from nbkit.views.doctor import Diagnosis, diagnose

REDRAW_SECONDS = 0.4  # at most this often during an epoch; every epoch end is drawn at once
PLOT_DPI = 90  # a 7x4 inch figure -> 630x360 pixels: sharp enough, quick to render and send
DESCRIPTION_WIDTH = "210px"  # fits "per_device_train_batch_size"
CONTROL_WIDTH = "560px"

RESULT_COLUMNS = ("status", "best_epoch", "best_eval_loss", "final_eval_accuracy", "run")  # of runs_table
OK_COLOR, ERROR_COLOR, NOTE_COLOR = "#2ca02c", "#d62728", "#555555"
WARN_COLOR = "#b35900"  # dark orange: something to change, nothing broken
DIAGNOSIS_COLORS = {"diverged": ERROR_COLOR, "flat": WARN_COLOR, "over-fitting": WARN_COLOR, "noisy": WARN_COLOR,
                    "still improving": NOTE_COLOR, "healthy": OK_COLOR}


# ---------------------------------------------------------------- one widget per field

def log_slider(value, lo, hi):
    """A slider over powers of ten (lo..hi, widened to include value), 10 steps per decade."""
    exponent = math.log10(value)
    return widgets.FloatLogSlider(value=value, base=10, min=min(math.log10(lo), math.floor(exponent)),
                                  max=max(math.log10(hi), math.ceil(exponent)), step=0.1, readout_format=".3g")


def int_slider(value, lo, hi):
    return widgets.IntSlider(value=value, min=min(lo, value), max=max(hi, value), step=1)


def float_slider(value, lo, hi, step, readout_format=".2f"):
    return widgets.FloatSlider(value=value, min=min(lo, value), max=max(hi, value), step=step,
                               readout_format=readout_format)


def dropdown(value, options):
    """options: names, or (label, value) pairs, a label marked N_() and shown through _() (relabel_control);
    the current value is added if it is not one of them."""
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    options = list(options) if value in values else list(options) + [value]
    widget = widgets.Dropdown(options=[(_(o[0]), o[1]) if isinstance(o, tuple) else o for o in options], value=value)
    widget._label_msgids = {o[1]: o[0] for o in options if isinstance(o, tuple)}  # value -> English label
    return widget


def checkbox(value):
    return widgets.Checkbox(value=value, indent=True)


def text(value, placeholder=""):
    """placeholder: marked N_() (a literal brace doubled), shown through _() (relabel_control)."""
    widget = widgets.Text(value="" if value is None else str(value), placeholder=_(placeholder).format())
    widget._placeholder_msgid = placeholder
    return widget


class OptionalControl(widgets.HBox):
    """A slider with a checkbox for the field's "off" value (None, or -1 for max_steps).
    `.value` is `off_value` while the box is ticked, else the slider's value. `off_label`: the box's
    English label, marked N_(), shown through _()."""

    def __init__(self, slider, value, off_value=None, off_label=N_("off")):
        is_off = value == off_value
        box = widgets.Checkbox(value=is_off, description=_(off_label), indent=False,
                               layout=widgets.Layout(width="auto"))
        super().__init__([slider, box])
        self.slider, self.off_box, self.off_value, self.off_label = slider, box, off_value, off_label
        slider.disabled = is_off
        box.observe(self._toggle, "value")

    def _toggle(self, change):
        self.slider.disabled = change["new"]

    @property
    def value(self):
        return self.off_value if self.off_box.value else self.slider.value

    @value.setter
    def value(self, value):
        self.off_box.value = value == self.off_value
        if value != self.off_value:
            self.slider.value = value


def optional(value, make_slider, on_default, off_value=None, off_label=N_("off")):
    """An OptionalControl whose slider starts at `value`, or at `on_default` while off."""
    return OptionalControl(make_slider(on_default if value == off_value else value), value, off_value, off_label)


# field -> function(current value) -> widget. Every TrainConfig field has one.
CONTROLS = {
    # model and data
    "model": lambda v: dropdown(v, MODEL_NAMES),
    "dataset": lambda v: dropdown(v, DATASET_NAMES),
    "max_seq_length": lambda v: int_slider(v, 16, 512),
    "val_size": lambda v: float_slider(v, 0.05, 0.5, 0.05),
    "max_samples": lambda v: optional(v, lambda x: int_slider(x, 16, 5000), 1000, off_label=N_("all")),
    "trust_remote_code": checkbox,
    # learning rate and its schedule
    "learning_rate": lambda v: log_slider(v, 1e-6, 1e-1),
    "lr_scheduler_type": lambda v: dropdown(v, SCHEDULER_NAMES),
    "lr_scheduler_kwargs": lambda v: text(json.dumps(v) if v else "", N_('e.g. {{"num_cycles": 2}}')),
    "warmup_ratio": lambda v: float_slider(v, 0.0, 0.5, 0.01),
    "warmup_steps": lambda v: int_slider(v, 0, 200),
    # optimizer
    "optim": lambda v: dropdown(v, OPTIMIZER_NAMES),
    "adam_beta1": lambda v: float_slider(v, 0.0, 0.99, 0.01),
    "adam_beta2": lambda v: float_slider(v, 0.9, 0.999, 0.001, ".3f"),
    "adam_epsilon": lambda v: log_slider(v, 1e-12, 1e-4),
    "weight_decay": lambda v: float_slider(v, 0.0, 0.3, 0.01),
    "sgd_momentum": lambda v: float_slider(v, 0.0, 0.99, 0.01),
    # batch
    "per_device_train_batch_size": lambda v: int_slider(v, 1, 64),
    "per_device_eval_batch_size": lambda v: int_slider(v, 1, 256),
    "gradient_accumulation_steps": lambda v: int_slider(v, 1, 16),
    # how long to train
    "num_train_epochs": lambda v: int_slider(v, 1, 20),
    "max_steps": lambda v: optional(v, lambda x: int_slider(x, 1, 1000), 100, off_value=-1,
                                    off_label=N_("off (epochs)")),
    # evaluation
    "eval_steps": lambda v: optional(v, lambda x: int_slider(x, 1, 100), 10, off_label=N_("epoch ends only")),
    "predict_with_generate": checkbox,
    "max_new_tokens": lambda v: int_slider(v, 1, 64),
    "eval_generate_samples": lambda v: optional(v, lambda x: int_slider(x, 1, 1000), 200, off_label=N_("all")),
    # early stopping
    "early_stopping_patience": lambda v: optional(v, lambda x: int_slider(x, 1, 10), 2),
    "early_stopping_threshold": lambda v: float_slider(v, 0.0, 0.1, 0.001, ".3f"),
    "load_best_model_at_end": checkbox,
    # fine-tuning method
    "finetuning_type": lambda v: dropdown(v, FINETUNING_TYPES),
    "freeze_trainable_layers": lambda v: int_slider(v, 1, 12),
    "lora_rank": lambda v: int_slider(v, 1, 128),
    "lora_alpha": lambda v: optional(v, lambda x: float_slider(x, 1.0, 256.0, 1.0, ".0f"), 16.0,
                                     off_label=N_("2 x rank")),
    "lora_dropout": lambda v: float_slider(v, 0.0, 0.5, 0.01),
    "lora_target": lambda v: text(v, N_("all, or q_proj,v_proj")),
    "use_rslora": checkbox,
    "use_dora": checkbox,
    "quantization_bit": lambda v: dropdown(v, [(N_("off"), None), (N_("4-bit (QLoRA)"), 4), (N_("8-bit"), 8)]),
    # stability, precision, reproducibility
    "max_grad_norm": lambda v: optional(v, lambda x: log_slider(x, 1e-2, 1e2), 1.0),
    "seed": lambda v: widgets.BoundedIntText(value=v, min=0, max=2**31 - 1),
    "full_determinism": checkbox,
    "dataloader_num_workers": lambda v: int_slider(v, 0, 8),
    "bf16": checkbox,
    "fp16": checkbox,
    # logging and output
    "logging_steps": lambda v: int_slider(v, 1, 100),
    "disable_tqdm": checkbox,
    "output_dir": text,
    "run_name": lambda v: text(v, N_("None = the run store names it")),
}


def control_for(name: str, value, doc: str = ""):
    """The widget for field `name` showing `value`, labelled with the name, the doc as tooltip (the field's
    English comment, shown through _(): relabel_control)."""
    widget = CONTROLS[name](value)
    labelled = widget.slider if isinstance(widget, OptionalControl) else widget
    labelled.description = name  # a parameter name: the same in every language
    labelled._tooltip_msgid = doc
    labelled.tooltip = _(doc) if doc else doc
    labelled.style.description_width = DESCRIPTION_WIDTH
    if "continuous_update" in labelled.trait_names():
        labelled.continuous_update = False  # one value per release, not one per pixel dragged
    if isinstance(widget, OptionalControl):
        widget.off_box.tooltip = labelled.tooltip
        labelled.layout.width = "auto"
    else:
        labelled.layout.width = CONTROL_WIDTH
    return widget


def relabel_control(control) -> None:
    """Show a control's own texts (tooltip, off box, placeholder, option labels) in the process's language;
    the value shown stays."""
    labelled = control.slider if isinstance(control, OptionalControl) else control
    doc = getattr(labelled, "_tooltip_msgid", "")
    if doc:
        labelled.tooltip = _(doc)
    if isinstance(control, OptionalControl):
        control.off_box.description = _(control.off_label)
        control.off_box.tooltip = labelled.tooltip
        return
    placeholder = getattr(control, "_placeholder_msgid", "")
    if placeholder:
        control.placeholder = _(placeholder).format()
    labels = getattr(control, "_label_msgids", None)
    if labels:
        value = control.value  # new options reset a Dropdown's value: put it back
        control.options = [(_(labels[o[1]]), o[1]) if isinstance(o, tuple) and o[1] in labels else o
                           for o in control.options]
        control.value = value


def set_control(control, value) -> None:
    """Show `value` in a control, its slider's range or dropdown's options widened to hold it (a class's
    configuration may lie outside the range the chapter offers)."""
    target = control.slider if isinstance(control, OptionalControl) else control
    if isinstance(control, OptionalControl) and value == control.off_value:
        control.value = value
        return
    if isinstance(target, widgets.FloatLogSlider) and value:
        exponent = math.log10(value)
        target.min, target.max = min(target.min, math.floor(exponent)), max(target.max, math.ceil(exponent))
    elif isinstance(target, (widgets.IntSlider, widgets.FloatSlider)):
        target.min, target.max = min(target.min, value), max(target.max, value)
    elif isinstance(target, widgets.Dropdown):
        values = [o[1] if isinstance(o, tuple) else o for o in target.options]
        if value not in values:
            target.options = list(target.options) + [value]
    elif isinstance(target, widgets.Text):
        value = "" if value is None else (json.dumps(value) if isinstance(value, dict) else str(value))
    control.value = value


# ---------------------------------------------------------------- rendering for Output widgets

_DRAW_LOCK = threading.Lock()  # the training thread and the notebook's thread both render


def _png_output(fig) -> dict:
    with _DRAW_LOCK:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=PLOT_DPI)
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                     "text/plain": f"<Figure: {fig.axes[0].get_title() if fig.axes else ''}>"}}


def _html_output(markup: str, plain: str) -> dict:
    return {"output_type": "display_data", "metadata": {}, "data": {"text/html": markup, "text/plain": plain}}


def show(out: widgets.Output, *outputs: dict) -> None:
    """Replace what `out` shows in one assignment: safe from any thread (no `with out:`),
    and the browser never sees an empty output in between."""
    out.outputs = tuple(outputs)


# ---------------------------------------------------------------- the panel

_PANELS = weakref.WeakSet()  # live panels, so that panels sharing a runs list refresh together
_RELABELLED = weakref.WeakSet()  # live panels of any kind with relabel(): the language toggle relabels them all
LANGUAGE_OPTIONS = [("English", "en"), ("中文", "zh")]  # each language named in itself, never translated


class TrainPanel:
    """Widgets for some TrainConfig fields + Train / Stop + live plot + the notebook's runs.

    Attributes tests and notebooks use: controls (field -> widget), train_button, stop_button,
    status (HTML), plot_output, doctor (HTML: the curve doctor's verdict), runs (the shared list
    of Runs), table_output, run_selector, overlay_button, overlay_output, widget (the VBox to
    display); about the last Train: last_error, first_plot_seconds, plot_updates, diagnoses.
    values() and config() read the controls; join(timeout) waits for the training thread.
    language_toggle (English / 中文) and use_language(language) set the process's language and relabel every
    live panel; relabel() redraws this panel's texts in the process's language."""

    def __init__(self, cfg: TrainConfig, fields: list[str], runs: list | None = None, preview=None,
                 join: str | None = None, student: str | None = None, language: str | None = None):
        if language is not None:  # a bad value raises LanguageError naming the field, before anything is built
            set_language(check_language(language, "language"))
        check_field_names(dict.fromkeys(fields))  # a wrong name fails here, with a suggestion
        self.base_config = cfg
        self.preview = preview  # f(TrainConfig) -> str shown before training (e.g. parameters, memory)
        self.preview_html = widgets.HTML(value="")
        self.fields = list(fields)
        self.runs = runs if runs is not None else []  # not `runs or []`: an empty shared list must stay shared
        self.last_error: BaseException | None = None
        self.first_plot_seconds: float | None = None  # last Train: from the click to the first plotted point
        self.plot_updates = 0  # last Train: how many times the live plot was redrawn
        self.diagnoses: list[Diagnosis] = []  # last Train: the curve doctor's latest verdict
        docs = {name: doc for _section, name, doc in field_docs()}
        self.controls = {name: control_for(name, getattr(cfg, name), docs.get(name, "")) for name in self.fields}
        for control in self.controls.values():  # check each change at once: a refused value shows before Train
            parts = [control.slider, control.off_box] if isinstance(control, OptionalControl) else [control]
            for part in parts:
                part.observe(self._on_change, "value")

        # the texts of the widgets below are set by relabel(), in the process's language
        self._relabelling = False  # set while relabel() changes option labels: _on_change ignores it
        self._syncing = False  # set while use_language() moves this toggle: _on_language ignores it
        self._status = self._class_status = None  # (text or function giving it, colour): relabel() says it again
        self._shown_run: Run | None = None  # the run whose final plot the panel shows (drawn again by relabel)
        self._overlaid: list[Run] | None = None  # the runs of the overlay shown
        self.language_toggle = widgets.ToggleButtons(options=LANGUAGE_OPTIONS, value=get_language(),
                                                     style={"button_width": "64px"})
        self.language_toggle.observe(self._on_language, "value")
        self.train_button = widgets.Button(button_style="primary")
        self.stop_button = widgets.Button(disabled=True)
        self.status = widgets.HTML(value="")
        self.plot_output = widgets.Output()
        self.doctor = widgets.HTML(value="")
        self.runs_header = widgets.HTML(value="")
        self.table_output = widgets.Output()
        self.run_selector = widgets.SelectMultiple(options=[], rows=4, layout=widgets.Layout(width="560px"))
        self.overlay_button = widgets.Button()
        self.overlay_output = widgets.Output()
        self.train_button.on_click(self._on_train)
        self.stop_button.on_click(self._on_stop)
        self.overlay_button.on_click(self._on_overlay)
        self.seat: Seat | None = None  # the class this panel joined (nbkit.core.classroom)
        self.class_row = self._class_row(join, student)

        self.widget = widgets.VBox([
            widgets.HBox([self.language_toggle], layout=widgets.Layout(justify_content="flex-end")),
            widgets.VBox(list(self.controls.values())),
            self.preview_html,
            widgets.HBox([self.train_button, self.stop_button, self.status]),
            self.class_row,
            self.plot_output,
            self.doctor,
            self.runs_header,
            self.table_output,
            widgets.HBox([self.run_selector, self.overlay_button]),
            self.overlay_output,
        ])
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        _PANELS.add(self)
        _RELABELLED.add(self)
        self._say(lambda: _("ready: press Train"), NOTE_COLOR)
        self._class_say(lambda: _("a workshop? join the instructor's class here"), NOTE_COLOR)
        self._relabel_widgets()
        self.refresh_runs()
        self.refresh_preview(cfg)
        if join:
            self._on_join()

    # ------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"TrainPanel(fields={self.fields}, runs={len(self.runs)})"

    # ------------------------------------------------------------ language

    def use_language(self, language: str) -> str:
        """Show every text in `language` ("en" or "zh") from now on: it becomes the process's language
        (nbkit.core.i18n.set_language), so every live panel is relabelled and shows it in its toggle."""
        language = set_language(check_language(language, "language"))
        for shown in list(_RELABELLED):
            toggle = getattr(shown, "language_toggle", None)
            if toggle is not None and toggle.value != language:
                shown._syncing = True  # the toggle follows; its observer must not set the language again
                try:
                    toggle.value = language
                finally:
                    shown._syncing = False
            shown.relabel()
        return language

    def _on_language(self, change) -> None:
        if not self._syncing:
            self.use_language(change["new"])

    def _relabel_widgets(self) -> None:
        """The labels and tooltips, and the status lines said again, in the process's language."""
        self._relabelling = True
        try:
            for control in self.controls.values():
                relabel_control(control)
        finally:
            self._relabelling = False
        self.language_toggle.tooltips = [_("show the panel in English"), _("show the panel in Chinese")]
        self.train_button.description = _("Train")
        self.train_button.tooltip = _("train with these values (in the background)")
        self.stop_button.description = _("Stop")
        self.stop_button.tooltip = _("stop after the current step; the run is kept as 'interrupted'")
        self.runs_header.value = "<b>" + html.escape(_("Runs in this notebook")) + "</b>"
        self.run_selector.description = _("runs")
        self.run_selector.tooltip = _("choose runs to overlay (none chosen = all)")
        self.overlay_button.description = _("Overlay")
        self.overlay_button.tooltip = _("validation loss per epoch of the chosen runs, overlaid")
        self.class_name.description = _("class")
        self.class_name.placeholder = _("the instructor's class name")
        self.class_storage.description = _("storage")
        self.class_storage.placeholder = _("sqlite:////shared/class.db or postgresql+psycopg2://...")
        self.student_name.description = _("student")
        self.student_name.placeholder = _("your name")
        self.join_button.description = _("Join")
        self.join_button.tooltip = _("take a seat in the class")
        self.next_button.description = _("Train next")
        self.next_button.tooltip = _("train the class's next free configuration and tell the class")
        self.class_row.set_title(0, _("Class (workshops)"))
        self._say(*self._status)
        self._class_say(*self._class_status)

    def relabel(self) -> None:
        """Every text of the panel in the process's language: labels, tooltips, status lines, the runs table,
        the preview, and (unless a run is in flight) the doctor's verdict, the last run's plot and the overlay."""
        self._relabel_widgets()
        self.refresh_runs()
        if self.running:  # the run in flight redraws its plot and verdict in the new language as it goes
            self.doctor.value = doctor_html(self.diagnoses)
            return
        try:
            self.refresh_preview(self.config())
        except ValueError:
            pass  # a refused value: the status line says so
        if self._shown_run is not None:
            show(self.plot_output, _png_output(plots.loss_curves(self._shown_run)))
            self.show_diagnoses(diagnose(self._shown_run))
        else:
            self.doctor.value = doctor_html(self.diagnoses)
        if self._overlaid is not None:
            self._show_overlay(self._overlaid)

    # ------------------------------------------------------------ reading the controls

    def values(self) -> dict:
        """{field: value} as the controls show them now."""
        return {name: control.value for name, control in self.controls.items()}

    def config(self) -> TrainConfig:
        """The base config with the controls' values; raises the config's ValueError if refused."""
        return self.base_config.replace(**self.values())

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the training thread; True when no training is running any more."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    # ------------------------------------------------------------ buttons

    def _on_change(self, change):
        if self.running or self._relabelling:
            return  # the run in flight keeps its values; its status stays
        try:
            cfg = self.config()
        except ValueError as err:
            self._say(lambda err=err: _("not allowed: {error}").format(error=err), ERROR_COLOR)
            return
        self.refresh_preview(cfg)
        self._say(lambda: _("ready: press Train"), NOTE_COLOR)

    def refresh_preview(self, cfg: TrainConfig) -> None:
        """Show preview(cfg) under the controls (nothing when the panel has no preview)."""
        if self.preview is not None:
            self.preview_html.value = self._message(self.preview(cfg), NOTE_COLOR)

    def _on_train(self, button=None):
        if self.running:
            self._say(lambda: _("already running: press Stop first"), ERROR_COLOR)
            return
        try:
            cfg = self.config()
        except ValueError as err:  # the config's message names the field, the value and what is allowed
            self.last_error = err
            self._say(lambda err=err: _("not allowed: {error}").format(error=err), ERROR_COLOR)
            return
        if "disable_tqdm" not in self.fields:  # the panel shows progress itself; a progress bar written
            cfg = cfg.replace(disable_tqdm=True)  # from a thread would land in whichever cell runs next
        self._start(self._train_in_background, cfg)

    def _start(self, target, cfg: TrainConfig, *args) -> None:
        """Run target(cfg, clicked, *args) in the training thread, the buttons set for a run in flight."""
        self.last_error, self.first_plot_seconds, self.plot_updates = None, None, 0
        self._shown_run = None
        self.show_diagnoses([])
        self._stop_event = threading.Event()
        self.train_button.disabled, self.next_button.disabled, self.stop_button.disabled = True, True, False
        self._say(lambda: _("starting: loading the model and data…"), NOTE_COLOR)
        self._thread = threading.Thread(target=target, args=(cfg, time.time(), *args), daemon=True,
                                        name="nbkit-panel-train")
        self._thread.start()

    def _on_stop(self, button=None):
        if self.running:
            self._stop_event.set()
            self._say(lambda: _("stopping after this step…"), NOTE_COLOR)

    def _on_overlay(self, button=None):
        self.refresh_runs()
        chosen = [self.runs[i] for i in self.run_selector.value] or list(self.runs)
        self._overlaid = chosen
        self._show_overlay(chosen)

    def _show_overlay(self, chosen: list[Run]) -> None:
        if not chosen:
            show(self.overlay_output, _html_output("<i>" + html.escape(_("no runs yet: press Train")) + "</i>",
                                                   _("no runs yet")))
            return
        try:
            show(self.overlay_output, _png_output(plots.compare_runs(chosen)))
        except Exception as err:  # noqa: BLE001 - a message, never a traceback
            show(self.overlay_output, _html_output(
                self._message(_("cannot overlay: {error}").format(error=err), ERROR_COLOR), str(err)))

    # ------------------------------------------------------------ the training thread

    def _train_in_background(self, cfg: TrainConfig, clicked: float):
        live = _LiveRun(self, cfg, clicked)
        try:
            run = train(cfg, callbacks=[live.on_event], stop_event=self._stop_event)
        except Exception as err:  # noqa: BLE001 - shown as a message: the learner changes a knob and retries
            self._failed(err)
        else:
            self._finished(run, live)
            if self.seat is not None:  # the student's own values: kept in the class, outside the design
                self._tell_class(self.seat.record_own, run)
        finally:
            self._ready()

    def _train_class_trial(self, cfg: TrainConfig, clicked: float, trial):
        """Train next's thread: the class's configuration trained live, its result told to the class."""
        live = _LiveRun(self, cfg, clicked)
        try:
            run, line = self.seat.run(trial, callbacks=[live.on_event], stop_event=self._stop_event)
        except KeyboardInterrupt:  # Stop: Seat.run queued the configuration again for the class
            name, counts = self.seat.name, self._counts()
            self._say(lambda: _("stopped: configuration {number} goes back to class {name!r} for the next "
                                "student").format(number=trial.number, name=name), NOTE_COLOR)
            self._class_say(lambda: counts_line(counts), NOTE_COLOR)
        except Exception as err:  # noqa: BLE001 - e.g. the database went away: a message, never a traceback
            self._failed(err)
        else:
            if run is not None:
                self._finished(run, live)
            name, counts = self.seat.name, self._counts()
            self._class_say(lambda: _("{line} — told class {name!r}. {counts}").format(
                line=line, name=name, counts=counts_line(counts)), ERROR_COLOR if "FAIL" in line else OK_COLOR)
        finally:
            self._ready()

    def _failed(self, err: BaseException) -> None:
        self.last_error = err
        if isinstance(err, ValueError):
            self._say(lambda: _("not allowed: {error}").format(error=err), ERROR_COLOR)
        else:
            self._say(lambda: _("training failed ({kind}): {error}").format(kind=type(err).__name__, error=err),
                      ERROR_COLOR)

    def _finished(self, run: Run, live: "_LiveRun") -> None:
        self.runs.append(run)
        live.finish(run)
        for panel in list(_PANELS):
            if panel.runs is self.runs:
                panel.refresh_runs()

    def _ready(self) -> None:
        self.train_button.disabled, self.stop_button.disabled = False, True
        self.next_button.disabled = self.seat is None

    # ------------------------------------------------------------ the class row (workshops)

    def _class_row(self, join: str | None, student: str | None) -> widgets.Accordion:
        # a workshop's hub sets NBKIT_CLASS and NBKIT_CLASS_STORAGE for every student (deploy/jupyterhub), and
        # JupyterHub sets JUPYTERHUB_USER: the student only presses Join (the texts: _relabel_widgets)
        name, _at, storage = (join or "").partition("@")
        name, storage = name or os.environ.get("NBKIT_CLASS", ""), storage or os.environ.get("NBKIT_CLASS_STORAGE", "")
        student = student or os.environ.get("JUPYTERHUB_USER", "")
        wide = widgets.Layout(width=CONTROL_WIDTH)
        style = {"description_width": DESCRIPTION_WIDTH}
        self.class_name = widgets.Text(value=name, layout=wide, style=style)
        self.class_storage = widgets.Text(value=storage, layout=wide, style=style)
        self.student_name = widgets.Text(value=student or "", layout=wide, style=style)
        self.join_button = widgets.Button()
        self.next_button = widgets.Button(button_style="success", disabled=True)
        self.class_status = widgets.HTML(value="")
        self.join_button.on_click(self._on_join)
        self.next_button.on_click(self._on_train_next)
        row = widgets.Accordion(children=[widgets.VBox([
            self.class_name, self.class_storage, self.student_name,
            widgets.HBox([self.join_button, self.next_button, self.class_status])])])
        row.selected_index = 0 if join else None
        return row

    def _class_say(self, text, color: str = NOTE_COLOR) -> None:
        """As _say, in the Class row."""
        self._class_status = (text, color)
        self.class_status.value = self._message(text() if callable(text) else text, color)

    def _counts(self) -> dict:
        return class_counts(self.seat.study)

    def _on_join(self, button=None):
        if self.running:
            self._class_say(lambda: _("a run is in flight: join when it has ended"), ERROR_COLOR)
            return
        try:
            seat = join_class(self.class_name.value.strip(), self.class_storage.value.strip(), self.student_name.value)
        except ValueError as err:  # StudyError: names the field, the value and what is allowed
            self.last_error = err
            self._class_say(lambda err=err: _("cannot join: {error}").format(error=err), ERROR_COLOR)
            return
        except Exception as err:  # noqa: BLE001 - e.g. a database that does not answer: a message
            self.last_error = err
            self._class_say(lambda err=err: _("cannot join ({kind}): {error}").format(
                kind=type(err).__name__, error=err), ERROR_COLOR)
            return
        self.seat = seat
        self.base_config = TrainConfig.from_dict(seat.spec.held())  # Train now starts from the class's config
        for name, control in self.controls.items():
            set_control(control, getattr(self.base_config, name))
        self.next_button.disabled = False
        counts = self._counts()
        self._class_say(lambda: _("joined class {name!r} (chapter {chapter}) as {student}: {counts}; press Train "
                                  "next").format(name=seat.name, chapter=seat.chapter, student=seat.student,
                                                 counts=counts_line(counts)), OK_COLOR)
        self._say(lambda: _("ready: press Train next (the class's configuration) or Train (your own values)"),
                  NOTE_COLOR)

    def _on_train_next(self, button=None):
        if self.seat is None:
            self._class_say(lambda: _("join a class first: its name, its storage URL and your name, then Join"),
                            ERROR_COLOR)
            return
        if self.running:
            self._say(lambda: _("already running: press Stop first"), ERROR_COLOR)
            return
        try:
            trial = self.seat.take_next()
            if trial is None:
                c = self._counts()
                who = ", ".join(sorted(set(c["running_by"].values())))
                if c["running"]:
                    self._class_say(lambda: _(
                        "no free configuration: {counts}; {running} still running ({who}): one may come back if its "
                        "student leaves. Train your own values meanwhile.").format(
                            counts=counts_line(c), running=c["running"], who=who), NOTE_COLOR)
                else:
                    self._class_say(lambda: _("no free configuration: {counts}; the class's design is complete. "
                                              "Train your own values meanwhile.").format(counts=counts_line(c)),
                                    NOTE_COLOR)
                return
            cfg = self.seat.config(trial)
        except Exception as err:  # noqa: BLE001 - a message, never a traceback
            self.last_error = err
            self._class_say(lambda err=err: _("cannot take a configuration ({kind}): {error}").format(
                kind=type(err).__name__, error=err), ERROR_COLOR)
            return
        for name, control in self.controls.items():
            set_control(control, getattr(cfg, name))
        params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in self.seat.params(trial).items())
        name = self.seat.name
        self._class_say(lambda: _("configuration {number} of class {name!r}: {params}").format(
            number=trial.number, name=name, params=params), NOTE_COLOR)
        self._start(self._train_class_trial, cfg, trial)

    def _tell_class(self, record, run: Run) -> None:
        try:
            record(run)
        except Exception as err:  # noqa: BLE001 - the run is kept here; only the class did not hear of it
            self._class_say(lambda err=err: _("your run is kept here, but the class could not record it ({kind}: "
                                      "{error})").format(kind=type(err).__name__, error=err), ERROR_COLOR)
        else:
            name = self.seat.name
            self._class_say(lambda: _("your own run is recorded in class {name!r}, outside its design").format(
                name=name), NOTE_COLOR)

    # ------------------------------------------------------------ status and tables

    @staticmethod
    def _message(text: str, color: str) -> str:
        return f'<span style="color:{color}">{html.escape(text)}</span>'

    def _say(self, text, color: str = NOTE_COLOR) -> None:
        """Show `text` in the status line: a string, or a function giving it in the process's language (said
        again by relabel() when the language changes)."""
        self._status = (text, color)
        self.status.value = self._message(text() if callable(text) else text, color)

    def show_diagnoses(self, diagnoses: list[Diagnosis]) -> None:
        """Show the curve doctor's verdict under the plot (nothing for an empty list)."""
        self.diagnoses = list(diagnoses)
        self.doctor.value = doctor_html(self.diagnoses)

    def runs_table(self) -> pd.DataFrame:
        """runs_table of the notebook's runs, with this panel's fields always as columns."""
        if not self.runs:
            return pd.DataFrame()
        table = runs_table(self.runs)
        for position, name in enumerate(f for f in self.fields if f not in table):
            table.insert(position, name, [run.config.get(name) for run in self.runs])
        table.index = range(1, len(table) + 1)  # "#1", "#2": as in the run chooser
        return table

    def refresh_runs(self) -> None:
        """Redraw the runs table and the run chooser (called after every run of any panel
        that shares this panel's runs list)."""
        table = self.runs_table()
        if table.empty:
            show(self.table_output, _html_output("<i>" + html.escape(_("no runs yet")) + "</i>", _("no runs yet")))
        else:
            unmeasured = [c for c in RESULT_COLUMNS if table[c].isna().all()]  # e.g. accuracy without a metric
            shown = table.drop(columns=unmeasured).assign(status=[status_shown(v) for v in table["status"]])
            markup = shown.to_html(float_format=lambda x: f"{x:.4g}", na_rep="", classes="nbkit-runs", border=0)
            show(self.table_output, _html_output(markup, table.to_string()))
        knobs = [c for c in table.columns if c not in RESULT_COLUMNS]
        options = [(f"#{i + 1} {knob_label(run.config, knobs) or run.name} ({status_shown(run.status)})", i)
                   for i, run in enumerate(self.runs)]
        kept = tuple(v for v in self.run_selector.value if v < len(options))
        self.run_selector.options = options
        self.run_selector.value = kept


class _LiveRun:
    """The run in flight, as the trainer's events build it: rows, best epoch, redraw timing."""

    def __init__(self, panel: TrainPanel, cfg: TrainConfig, clicked: float):
        self.panel, self.cfg, self.clicked = panel, cfg, clicked
        self.steps: list[dict] = []
        self.epochs: list[dict] = []
        self.best = BestTracker(cfg.early_stopping_threshold)  # the trainer's rule for the best epoch
        self.total_steps, self.num_epochs, self.path = None, None, None
        self.last_draw = 0.0

    def on_event(self, event: str, data: dict) -> None:
        handlers = {TRAIN_BEGIN: self._on_train_begin, STEP: self._on_step, EPOCH_END: self._on_epoch_end,
                    RUN_END: self._on_run_end}
        try:
            handlers[event](data)
        except Exception as err:  # noqa: BLE001 - a drawing problem must never stop the training
            self.panel.last_error = err
            self.panel._say(lambda err=err: _("plot update failed ({kind}: {error}); training goes on").format(
                kind=type(err).__name__, error=err), ERROR_COLOR)

    def _on_train_begin(self, data):
        self.total_steps = data["total_steps"]
        self.num_epochs = math.ceil(self.total_steps / data["steps_per_epoch"])
        self.path = data.get("path")
        self._progress()

    def _on_step(self, row):
        self.steps.append(row)
        if time.time() - self.last_draw >= REDRAW_SECONDS:
            self._draw()
            self._progress()

    def _on_epoch_end(self, row):
        self.epochs.append(row)
        self.best.update(row["epoch"], row["eval_loss"])
        self._draw()
        self._progress()
        self.panel.show_diagnoses(diagnose(self._run_so_far()))

    def _on_run_end(self, data):
        pass  # finish() draws the stored run once train() has returned it

    def _progress(self):
        step = self.steps[-1]["step"] if self.steps else 0
        epoch = math.ceil(self.steps[-1]["epoch"] - 1e-9) if self.steps else 0
        loss = self.steps[-1]["loss"] if self.steps else None
        best_epoch, best_loss = (self.best.best_epoch, self.best.best_loss) if self.best.best is not None else (
            None, None)
        epochs, steps = self.num_epochs, self.total_steps

        def text() -> str:  # said again in the new language if the learner switches it mid-run
            line = _("running: epoch {epoch}/{epochs}, step {step}/{steps}").format(
                epoch=epoch, epochs=epochs, step=step, steps=steps)
            if loss is not None:
                line += _(" — loss {loss:.4g}").format(loss=loss)
            if best_epoch is not None:
                line += _("; best epoch {best_epoch} (eval_loss {best_loss:.4g})").format(
                    best_epoch=best_epoch, best_loss=best_loss)
            return line

        self.panel._say(text, NOTE_COLOR)

    def _run_so_far(self) -> Run:
        summary = {"status": "running", "best_epoch": self.best.best_epoch,
                   "best_eval_loss": self.best.best_loss if self.best.best is not None else None}
        return Run(path=Path(self.path or "running"), config=self.cfg.to_dict(), steps=pd.DataFrame(self.steps),
                   epochs=pd.DataFrame(self.epochs), summary=summary)

    def _draw(self):
        fig = plots.loss_curves(self._run_so_far())
        fig.axes[0].set_xlim(-0.2, self.num_epochs + 0.2)  # the whole run's width: the curve grows into it
        show(self.panel.plot_output, _png_output(fig))
        self.last_draw = time.time()
        self.panel.plot_updates += 1
        if self.panel.first_plot_seconds is None:
            self.panel.first_plot_seconds = self.last_draw - self.clicked

    def finish(self, run: Run):
        show(self.panel.plot_output, _png_output(plots.loss_curves(run)))
        self.panel._shown_run = run
        self.panel._say(lambda: final_status(run)[0], final_status(run)[1])
        self.panel.show_diagnoses(diagnose(run))


def doctor_html(diagnoses: list[Diagnosis]) -> str:
    """The doctor's verdict as a short list: the diagnosis in colour, its evidence, what to change."""
    if not diagnoses:
        return ""
    items = "".join(
        f'<li><b style="color:{DIAGNOSIS_COLORS.get(d.name, NOTE_COLOR)}">{html.escape(d.label)}</b>: '
        f"{html.escape(d.message)}<br>&rarr; <i>{html.escape(d.advice)}</i></li>" for d in diagnoses)
    title = html.escape(_("Curve doctor"))  # not inside the f-string: Babel extracts no _() there
    return f'<div class="nbkit-doctor"><b>{title}</b><ul style="margin:2px 0">{items}</ul></div>'


def final_status(run: Run) -> tuple[str, str]:
    """(text, colour) of the status line once a run has ended."""
    s = run.summary
    best = ""
    if run.best_epoch is not None and run.best_eval_loss is not None and math.isfinite(run.best_eval_loss):
        best = _("best epoch {epoch} (eval_loss {loss:.4g})").format(epoch=run.best_epoch, loss=run.best_eval_loss)
    seconds = s.get("train_seconds") or 0.0
    if run.status == "diverged":
        lr = run.config.get("learning_rate")
        return (_("diverged at step {step} — lower the learning rate (it was {lr:g}), or add warmup / gradient "
                  "clipping").format(step=s.get("diverged_at_step"), lr=lr), ERROR_COLOR)
    if run.status == "interrupted":
        done, total = s.get("steps_completed"), s.get("total_steps")
        if best:
            return (_("stopped: interrupted at step {done}/{total} — {best} so far").format(
                done=done, total=total, best=best), NOTE_COLOR)
        return _("stopped: interrupted at step {done}/{total}").format(done=done, total=total), NOTE_COLOR
    if run.status == "early_stopped":
        return (_("early stopped at epoch {epoch}, finished in {seconds:.1f} s — {best}").format(
            epoch=s.get("epochs_completed"), seconds=seconds, best=best), OK_COLOR)
    return _("finished in {seconds:.1f} s — {best}").format(seconds=seconds, best=best), OK_COLOR


def counts_line(c: dict) -> str:
    """A class's counts (classroom.class_counts) as the Class row says them."""
    return _("{done} of {configurations} configurations done, {running} running, {free} free").format(
        done=c["done"], configurations=c["configurations"], running=c["running"], free=c["free"])


def panel(cfg: TrainConfig, fields: list[str], runs: list | None = None, preview=None, join: str | None = None,
          student: str | None = None, language: str | None = None) -> TrainPanel:
    """A TrainPanel for `fields` of `cfg`: show it as a cell's last value or with display(p.widget).
    `runs`: the notebook's list of runs, shared by its panels; each Train appends to it.
    `preview`: f(config) -> text shown under the controls and redrawn on every change, before training.
    `join`: "CLASS@STORAGE_URL" joins that class at once as `student` (else the panel's Class row does).
    `language`: "en" or "zh" sets the process's language (nbkit.core.i18n) before the panel is drawn; None keeps
    it (get_language()). The panel's toggle changes it later."""
    return TrainPanel(cfg, fields, runs, preview, join=join, student=student, language=language)
