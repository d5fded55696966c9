"""Run sizes per model and device (nbkit.profiles): what `-p model smollm2-135m` changes in a chapter."""
import pytest

from nbkit import TrainConfig
from nbkit.profiles import RUN_SIZES, resolve_device, run_size, sized


def test_sized_leaves_the_tiny_model_on_a_cpu_as_configured():
    cfg = TrainConfig(learning_rate=3e-3, max_samples=100)
    assert sized(cfg, "cpu") == cfg
    assert sized(TrainConfig(), "cpu") == TrainConfig()


def test_sized_applies_the_models_run_size_but_what_the_chapter_set_wins():
    size = RUN_SIZES[("smollm2-135m", "cpu")]
    cfg = sized(TrainConfig(model="smollm2-135m", learning_rate=1e-4), "cpu")
    assert all(getattr(cfg, k) == v for k, v in size.items())
    assert cfg.learning_rate == 1e-4  # not a size: untouched
    chosen = sized(TrainConfig(model="smollm2-135m", max_samples=60), "cpu")
    assert chosen.max_samples == 60 and chosen.eval_generate_samples == size["eval_generate_samples"]


def test_a_gpu_gets_bf16_and_any_hub_model_on_a_cpu_gets_the_small_size():
    assert run_size("Qwen/Qwen2.5-0.5B-Instruct", "cuda")["bf16"] is True
    assert run_size("Qwen/Qwen2.5-0.5B-Instruct", "cpu") == RUN_SIZES[("smollm2-135m", "cpu")]


def test_device_names_are_checked():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match=r"device='gpu' is not allowed; allowed: 'auto', 'cpu', 'cuda'"):
        run_size("tiny", "gpu")
