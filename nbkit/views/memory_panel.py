"""The memory planner as a panel: will this fine-tune fit my card, and with what batch?

    from nbkit.views.memory_panel import plan_report, planner_panel
    plan_report("7b", method="qlora4", memory_gb=24, max_seq_length=2048)   # a dict, no widgets
    planner_panel(model="7b", memory_gb=24)                                 # the same, as widgets

`model` is a size ("7b", "135M", 7e9), a published shape ("llama-2-7b", SIZE_ANCHORS) or a model of
the registry / an HF id (its config). `method` is LLaMA-Factory's choice: full, freeze, LoRA, or
QLoRA with 8- or 4-bit base weights. Every answer comes from nbkit.core.memory.plan_memory; the panel only
collects the inputs and shows the plan, so what it says is what the tests check. Its texts go through
nbkit.core.i18n's _(): relabel() shows them in the process's language (a chapter panel's toggle calls it).
"""
from __future__ import annotations

import html

import ipywidgets as widgets

from nbkit.core.i18n import N_, _
from nbkit.core.memory import (ModelShape, OPTIMIZER_BYTES, PRECISIONS, largest_batch, plan_for_effective_batch,
                               plan_memory, readable_bytes)
from nbkit.views import ui
from nbkit.views.ui import CONTROL_WIDTH, DESCRIPTION_WIDTH

# method -> (finetuning_type, quantization_bit), LLaMA-Factory's names
METHODS = {"full": ("full", None), "freeze": ("freeze", None), "lora": ("lora", None),
           "qlora8": ("lora", 8), "qlora4": ("lora", 4)}
METHOD_LABELS = [("full", "full"), (N_("freeze (last 2 layers)"), "freeze"), ("LoRA", "lora"),
                 (N_("QLoRA, 8-bit base"), "qlora8"), (N_("QLoRA, 4-bit base"), "qlora4")]  # shown through _()
CATEGORY_LABELS = {"weights": N_("weights"), "gradients": N_("gradients"), "optimizer_state": N_("optimizer state"),
                   "activations": N_("activations"), "total": N_("total")}  # Plan.categories()'s, shown through _()
GB = 1e9  # decimal, as GPU specs and LLaMA-Factory's table count


def plan_report(model: str | float | ModelShape = "7b", method: str = "lora", precision: str = "bf16",
                optim: str = "adamw_torch", per_device_train_batch_size: int = 4, max_seq_length: int = 2048,
                gradient_accumulation_steps: int = 1, gradient_checkpointing: bool = True, lora_rank: int = 8,
                memory_gb: float = 24.0, effective_batch: int = 128) -> dict:
    """The plan for one set of choices: bytes by category, whether it fits memory_gb, the largest
    per-device batch that fits, and a per-device batch x accumulation reaching effective_batch."""
    if method not in METHODS:
        raise ValueError(_("method={method!r}: allowed: {allowed}").format(method=method, allowed=", ".join(METHODS)))
    if not memory_gb > 0:
        raise ValueError(_("memory_gb={memory_gb!r}: the card's memory in GB, > 0").format(memory_gb=memory_gb))
    if gradient_accumulation_steps < 1:
        raise ValueError(_("gradient_accumulation_steps={steps!r}: a whole number >= 1").format(
            steps=gradient_accumulation_steps))
    shape = model if isinstance(model, ModelShape) else ModelShape.parse(model)
    finetuning_type, bits = METHODS[method]
    kw = dict(finetuning_type=finetuning_type, quantization_bit=bits, precision=precision, optim=optim,
              max_seq_length=max_seq_length, gradient_checkpointing=gradient_checkpointing, lora_rank=lora_rank)
    plan = plan_memory(shape, per_device_train_batch_size=per_device_train_batch_size, **kw)
    memory = memory_gb * GB
    return {"shape": shape, "plan": plan, "fits": plan.total <= memory, "memory_gb": memory_gb,
            "largest_batch": largest_batch(shape, memory, **kw),
            "effective_batch_now": per_device_train_batch_size * gradient_accumulation_steps,
            "to_reach_effective": plan_for_effective_batch(shape, memory, effective_batch, **kw),
            "effective_batch": effective_batch}


def report_html(report: dict) -> str:
    """The report as a small HTML table and a verdict line."""
    plan, mem = report["plan"], report["memory_gb"]
    rows = "".join(f"<tr><td>{html.escape(category_label(name))}</td><td style='text-align:right'>"
                   f"{readable_bytes(v)}</td></tr>" for name, v in plan.categories().items())
    if report["fits"]:  # {start}...{end}: the verdict's coloured bold
        verdict = _("{start}fits{end} in {memory:g} GB; effective batch now {batch}").format(
            start="<b style='color:#2ca02c'>", end="</b>", memory=mem, batch=report["effective_batch_now"])
    else:
        verdict = _("{start}does not fit{end} in {memory:g} GB; effective batch now {batch}").format(
            start="<b style='color:#d62728'>", end="</b>", memory=mem, batch=report["effective_batch_now"])
    best, reach = report["largest_batch"], report["to_reach_effective"]
    if reach["fits"]:
        advice = _("per-device batch {batch} x gradient_accumulation_steps {steps} = {effective}").format(
            batch=reach["per_device_train_batch_size"], steps=reach["gradient_accumulation_steps"],
            effective=reach["effective_batch"])
    else:
        advice = _("nothing fits: try LoRA/QLoRA, gradient checkpointing, a shorter max_seq_length")
    shape = report["shape"]
    size = html.escape(_("{billions:.3g}B parameters, trainable {trainable:,}").format(
        billions=shape.num_params / 1e9, trainable=plan.trainable_params))
    largest = _("largest per-device batch that fits: {start}{batch}{end}").format(start="<b>", end="</b>",
                                                                                   batch=best)
    reach_line = html.escape(_("to reach an effective batch of {batch}: {advice}").format(
        batch=report["effective_batch"], advice=advice))
    return f"<div>{size}<table>{rows}</table>{verdict}<br>{largest}<br>{reach_line}</div>"


def category_label(name: str) -> str:
    """A memory category (Plan.categories()) as the table names it, in the process's language."""
    return _(CATEGORY_LABELS[name]) if name in CATEGORY_LABELS else name.replace("_", " ")


def _labelled(widget, description):
    widget.description = description
    widget.style = {"description_width": DESCRIPTION_WIDTH}
    widget.layout = widgets.Layout(width=CONTROL_WIDTH)
    return widget


class PlannerPanel:
    """The planner's inputs as widgets; every change redraws the plan below them; relabel() shows its texts in
    the process's language."""

    def __init__(self, model: str = "7b", method: str = "lora", precision: str = "bf16", optim: str = "adamw_torch",
                 per_device_train_batch_size: int = 4, max_seq_length: int = 2048,
                 gradient_accumulation_steps: int = 32, gradient_checkpointing: bool = True, lora_rank: int = 8,
                 memory_gb: float = 24.0):
        self.controls = {
            "model": _labelled(widgets.Text(value=str(model), continuous_update=False), ""),
            "method": _labelled(widgets.Dropdown(options=METHOD_LABELS, value=method), "method"),
            "precision": _labelled(widgets.Dropdown(options=list(PRECISIONS), value=precision), "precision"),
            "optim": _labelled(widgets.Dropdown(options=list(OPTIMIZER_BYTES), value=optim), "optim"),
            "per_device_train_batch_size": _labelled(widgets.IntSlider(value=per_device_train_batch_size,
                                                                       min=1, max=128),
                                                     "per_device_train_batch_size"),
            "max_seq_length": _labelled(widgets.Dropdown(options=[256, 512, 1024, 2048, 4096, 8192],
                                                         value=max_seq_length), "max_seq_length"),
            "gradient_accumulation_steps": _labelled(widgets.IntSlider(value=gradient_accumulation_steps,
                                                                       min=1, max=128),
                                                     "gradient_accumulation_steps"),
            "gradient_checkpointing": _labelled(widgets.Checkbox(value=gradient_checkpointing),
                                                "gradient_checkpointing"),
            "lora_rank": _labelled(widgets.Dropdown(options=[4, 8, 16, 32, 64, 128], value=lora_rank), "lora_rank"),
            "memory_gb": _labelled(widgets.BoundedFloatText(value=memory_gb, min=1, max=2000), ""),
        }
        self.out = widgets.HTML()
        self._relabelling = False  # set while relabel() changes the method's labels: no re-plan in between
        for control in self.controls.values():
            control.observe(lambda _change: self._relabelling or self.update(), names="value")
        self.widget = widgets.VBox(list(self.controls.values()) + [self.out])
        ui._RELABELLED.add(self)  # a chapter panel's language toggle relabels this panel too
        self.relabel()

    def relabel(self) -> None:
        """The labels, the method's choices and the plan in the process's language (nbkit.core.i18n)."""
        self.controls["model"].description = _("model (7b, 135M, HF id)")
        self.controls["memory_gb"].description = _("GPU memory (GB)")
        method = self.controls["method"]
        value, self._relabelling = method.value, True
        try:  # new options reset a Dropdown's value: put it back
            method.options = [(_(label), name) for label, name in METHOD_LABELS]
            method.value = value
        finally:
            self._relabelling = False
        self.update()

    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def update(self) -> None:
        """Re-plan with the current values; a value the planner refuses is shown, not raised."""
        try:
            self.report = plan_report(**self.values())
            self.out.value = report_html(self.report)
        except (ValueError, OSError) as err:  # a bad size, an unknown HF id
            self.report = None
            self.out.value = f"<span style='color:#d62728'>{html.escape(str(err))}</span>"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def planner_panel(**values) -> PlannerPanel:
    """A PlannerPanel with these starting values (plan_report's names)."""
    return PlannerPanel(**values)
