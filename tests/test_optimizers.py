"""Optimizer state memory and the weight norm, measured on the tiny base (chapter 2 uses both).

The expected sizes are ratios to AdamW computed from what each optimizer keeps per parameter
(AdamW two fp32 moments, Lion one, SGD one momentum buffer, 8-bit AdamW two uint8 codes), not
hard-coded byte counts: the checks follow the model if it changes.
"""
import pytest
import torch

from nbkit import TrainConfig
from nbkit.core.memory import optimizer_state_bytes
from nbkit.core.models import load_model, weight_norm
from nbkit.labs.ch02_optimizer import measure_optimizer_state


def measured(optim: str) -> dict:
    cfg = TrainConfig(optim=optim)
    model, _ = load_model(cfg)  # a fresh model: measuring takes a real step
    return measure_optimizer_state(cfg, model)


@pytest.fixture(scope="module")
def adamw():
    return measured("adamw_torch")


def test_adamw_keeps_two_fp32_moments_per_parameter(adamw):
    # two fp32 tensors the size of the weights: 8 bytes, plus one 4-byte step counter per tensor
    assert adamw["bytes_per_param"] == pytest.approx(2 * 4, rel=0.01)
    assert adamw["trainable_params"] > 0 and adamw["optim"] == "adamw_torch"


@pytest.mark.parametrize("optim, moments", [("adam_l2", 2), ("lion_32bit", 1), ("sgd", 1)])
def test_fp32_optimizers_keep_their_moments(adamw, optim, moments):
    ratio = measured(optim)["bytes_per_param"] / adamw["bytes_per_param"]
    assert ratio == pytest.approx(moments / 2, rel=0.01)


def test_8bit_adamw_keeps_about_a_quarter(adamw):
    """1 byte per moment instead of 4; the overhead is the per-block absmax scales and the small
    tensors (< 4096 elements) that bitsandbytes keeps in fp32. Bounded by its size, not fitted."""
    ratio = measured("adamw_8bit")["bytes_per_param"] / adamw["bytes_per_param"]
    assert 0.25 <= ratio < 0.25 * 1.1


def test_8bit_lion_keeps_an_eighth(adamw):
    ratio = measured("lion_8bit")["bytes_per_param"] / adamw["bytes_per_param"]
    assert 0.125 <= ratio < 0.125 * 1.1


def test_shared_tensors_are_counted_once():
    shared = torch.zeros(256)
    own = torch.zeros(10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    params = opt.param_groups[0]["params"]
    opt.state[params[0]] = {"qmap": shared, "state1": own}
    opt.state[params[1]] = {"qmap": shared, "step": 1}
    assert optimizer_state_bytes(opt) == (256 + 10) * 4


def test_weight_norm_is_the_norm_of_the_trainable_matrices():
    model, _ = load_model(TrainConfig())
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    expected = torch.cat([p.detach().double().flatten() for p in matrices]).norm().item()  # double: 1M squares
    assert weight_norm(model) == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    assert weight_norm(model) == pytest.approx(expected / 2, rel=1e-5)
