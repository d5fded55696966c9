"""The memory planner as a panel: will this fine-tune fit my card, and with what batch?

    from nbkit.views.memory_panel import plan_report, planner_panel
    plan_report("7b", method="qlora4", memory_gb=24, max_seq_length=2048)   # a dict, no widgets
    planner_panel(model="7b", memory_gb=24)                                 # the same, as widgets

`model` is a size ("7b", "135M", 7e9), a published shape ("llama-2-7b", SIZE_ANCHORS) or a model of
the registry / an HF id (its config). `method` is LLaMA-Factory's choice: full, freeze, LoRA, or
QLoRA with 8- or 4-bit base weights. Every answer comes from nbkit.core.memory.plan_memory; the panel only
collects the inputs and shows the plan, so what it says is what the tests check.
"""
from __future__ import annotations

import html

import ipywidgets as widgets

from nbkit.core.memory import (ModelShape, OPTIMIZER_BYTES, PRECISIONS, largest_batch, plan_for_effective_batch,
                               plan_memory, readable_bytes)
from nbkit.views.ui import CONTROL_WIDTH, DESCRIPTION_WIDTH

# method -> (finetuning_type, quantization_bit), LLaMA-Factory's names
METHODS = {"full": ("full", None), "freeze": ("freeze", None), "lora": ("lora", None),
           "qlora8": ("lora", 8), "qlora4": ("lora", 4)}
METHOD_LABELS = [("full", "full"), ("freeze (last 2 layers)", "freeze"), ("LoRA", "lora"),
                 ("QLoRA, 8-bit base", "qlora8"), ("QLoRA, 4-bit base", "qlora4")]
GB = 1e9  # decimal, as GPU specs and LLaMA-Factory's table count


def plan_report(model: str | float | ModelShape = "7b", method: str = "lora", precision: str = "bf16",
                optim: str = "adamw_torch", per_device_train_batch_size: int = 4, max_seq_length: int = 2048,
                gradient_accumulation_steps: int = 1, gradient_checkpointing: bool = True, lora_rank: int = 8,
                memory_gb: float = 24.0, effective_batch: int = 128) -> dict:
    """The plan for one set of choices: bytes by category, whether it fits memory_gb, the largest
    per-device batch that fits, and a per-device batch x accumulation reaching effective_batch."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: allowed: {', '.join(METHODS)}")
    if not memory_gb > 0:
        raise ValueError(f"memory_gb={memory_gb!r}: the card's memory in GB, > 0")
    if gradient_accumulation_steps < 1:
        raise ValueError(f"gradient_accumulation_steps={gradient_accumulation_steps!r}: a whole number >= 1")
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
    rows = "".join(f"<tr><td>{name.replace('_', ' ')}</td><td style='text-align:right'>{readable_bytes(v)}</td></tr>"
                   for name, v in plan.categories().items())
    verdict = (f"<b style='color:#2ca02c'>fits</b> in {mem:g} GB" if report["fits"]
               else f"<b style='color:#d62728'>does not fit</b> in {mem:g} GB")
    best, reach = report["largest_batch"], report["to_reach_effective"]
    advice = (f"per-device batch {reach['per_device_train_batch_size']} x gradient_accumulation_steps "
              f"{reach['gradient_accumulation_steps']} = {reach['effective_batch']}" if reach["fits"]
              else "nothing fits: try LoRA/QLoRA, gradient checkpointing, a shorter max_seq_length")
    shape = report["shape"]
    return (f"<div>{html.escape(f'{shape.num_params / 1e9:.3g}B parameters')}, trainable "
            f"{plan.trainable_params:,}<table>{rows}</table>{verdict}; effective batch now "
            f"{report['effective_batch_now']}<br>largest per-device batch that fits: <b>{best}</b><br>"
            f"to reach an effective batch of {report['effective_batch']}: {html.escape(advice)}</div>")


def _labelled(widget, description):
    widget.description = description
    widget.style = {"description_width": DESCRIPTION_WIDTH}
    widget.layout = widgets.Layout(width=CONTROL_WIDTH)
    return widget


class PlannerPanel:
    """The planner's inputs as widgets; every change redraws the plan below them."""

    def __init__(self, model: str = "7b", method: str = "lora", precision: str = "bf16", optim: str = "adamw_torch",
                 per_device_train_batch_size: int = 4, max_seq_length: int = 2048,
                 gradient_accumulation_steps: int = 32, gradient_checkpointing: bool = True, lora_rank: int = 8,
                 memory_gb: float = 24.0):
        self.controls = {
            "model": _labelled(widgets.Text(value=str(model), continuous_update=False), "model (7b, 135M, HF id)"),
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
            "memory_gb": _labelled(widgets.BoundedFloatText(value=memory_gb, min=1, max=2000), "GPU memory (GB)"),
        }
        self.out = widgets.HTML()
        for control in self.controls.values():
            control.observe(lambda _change: self.update(), names="value")
        self.widget = widgets.VBox(list(self.controls.values()) + [self.out])
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
