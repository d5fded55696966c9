"""nbkit.views.memory_panel: plan_report's answers are plan_memory's, and the panel redraws on every change."""
import pytest

from nbkit.core.i18n import set_language
from nbkit.core.memory import ModelShape, largest_batch, plan_memory
from nbkit.views.memory_panel import METHODS, plan_report, planner_panel

GB = 1e9


def test_report_is_the_planners_plan():
    report = plan_report("llama-2-7b", method="qlora4", per_device_train_batch_size=2, max_seq_length=1024,
                         memory_gb=24)
    kw = dict(finetuning_type="lora", quantization_bit=4, precision="bf16", max_seq_length=1024,
              gradient_checkpointing=True)
    shape = ModelShape.llama_7b()
    assert report["plan"] == plan_memory(shape, per_device_train_batch_size=2, **kw)
    assert report["largest_batch"] == largest_batch(shape, 24 * GB, **kw)
    assert report["fits"] == (report["plan"].total <= 24 * GB)


def test_every_method_and_the_order_of_their_weights():
    weights = {m: plan_report("7b", method=m, memory_gb=80)["plan"].weights for m in METHODS}
    assert weights["qlora4"] < weights["qlora8"] < weights["lora"] < weights["full"]


def test_a_7b_full_fine_tune_does_not_fit_24_gb_and_qlora_does():
    assert not plan_report("7b", method="full", memory_gb=24)["fits"]
    assert plan_report("7b", method="qlora4", per_device_train_batch_size=1, memory_gb=24)["fits"]


@pytest.mark.parametrize("kw, field", [(dict(method="adapter"), "method"), (dict(memory_gb=0), "memory_gb"),
                                       (dict(gradient_accumulation_steps=0), "gradient_accumulation_steps")])
def test_bad_values_are_refused_by_name(kw, field):
    with pytest.raises(ValueError, match=field):
        plan_report("7b", **kw)


def test_panel_redraws_and_shows_bad_input_instead_of_raising():
    p = planner_panel(model="7b", method="lora", memory_gb=24)
    assert "fits" in p.out.value and p.report is not None
    before = p.report["plan"].total
    p.controls["per_device_train_batch_size"].value = 16
    assert p.report["plan"].total > before
    p.controls["method"].value = "full"
    assert "does not fit" in p.out.value
    p.controls["model"].value = "-3b"
    assert p.report is None and "num_params" in p.out.value


def test_the_panel_speaks_chinese():
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po)."""
    set_language("zh")
    try:
        p = planner_panel(model="7b", method="full", memory_gb=24)
        assert "放不下" in p.out.value and "权重" in p.out.value and "优化器状态" in p.out.value
        assert p.controls["memory_gb"].description == "显存（GB）" and p.controls["method"].value == "full"
        p.controls["method"].value = "qlora4"
        assert p.controls["method"].label == "QLoRA，4 位基础模型" and p.report["plan"].weights < 24 * GB
        set_language("en")
        p.relabel()
        assert p.controls["method"].value == "qlora4" and p.controls["method"].label == "QLoRA, 4-bit base"
        assert "weights" in p.out.value and p.controls["memory_gb"].description == "GPU memory (GB)"
    finally:
        set_language("en")
