"""nbkit.labs.ch02_optimizer: optimizer state memory and the weight norm, measured on the tiny base,
and the per-seed tables the chapter's checks read off its sweeps (on small hand-built tables).

The expected sizes are ratios to AdamW computed from what each optimizer keeps per parameter
(AdamW two fp32 moments, Lion one, SGD one momentum buffer, 8-bit AdamW two uint8 codes), not
hard-coded byte counts: the checks follow the model if it changes.
"""
import pandas as pd
import pytest
import torch

from nbkit import TrainConfig
from nbkit.core.memory import optimizer_state_bytes
from nbkit.core.models import load_model, weight_norm
from nbkit.core.runs import Run
from nbkit.labs.ch02_optimizer import (best_settings, betas_table, by_decay, by_optimizer, decay_at_lr, decay_effect,
                                      decay_safety, decay_table, measure_optimizer_state, no_decay_band, seed_band,
                                      typical_decay_table, with_weight_norms)


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


# ---------------------------------------------------------------- weight decay in a sweep

GRID = pd.DataFrame({"seed": [1, 1, 1, 1, 2, 2, 2, 2], "learning_rate": [1e-3, 1e-3, 1e-2, 1e-2] * 2,
                     "weight_decay": [0.0, 0.1] * 4, "best_eval_loss": [2.0, 3.0, 1.0, 1.5, 4.0, 4.0, 2.0, 1.0]})


def test_decay_effect_reads_each_decay_against_no_decay_at_the_same_lr_and_seed():
    shift, cost = decay_effect(GRID), decay_effect(GRID, relative=True)
    assert shift.loc[(1, 0.1)].tolist() == [1.0, 0.5] and shift.loc[(2, 0.1)].tolist() == [0.0, -1.0]
    assert cost.loc[(1, 0.1)].tolist() == [0.5, 0.5] and cost.loc[(2, 0.1)].tolist() == [0.0, -0.5]
    assert list(shift.columns) == [1e-3, 1e-2]
    assert decay_effect(GRID.drop(columns="seed").iloc[:4]).loc[(0, 0.1)].tolist() == [1.0, 0.5]  # one seed, no column
    with pytest.raises(ValueError, match="weight_decay 0"):
        decay_effect(GRID[GRID["weight_decay"] > 0])
    with pytest.raises(ValueError, match="learning_rate"):
        decay_effect(GRID.drop(columns="learning_rate"))


def test_decay_at_lr_has_a_row_per_seed_and_a_column_per_decay():
    shift = decay_effect(GRID)
    at_low = decay_at_lr(shift, 1e-3)
    assert at_low.index.tolist() == [1, 2] and at_low.columns.tolist() == [0.1]
    assert at_low[0.1].tolist() == [1.0, 0.0]


def test_no_decay_band_is_the_seed_spread_without_decay_per_lr():
    band = no_decay_band(GRID)  # no decay: seed 1 has 2.0 and 1.0, seed 2 has 4.0 and 2.0
    assert band.to_dict() == {1e-3: 2.0, 1e-2: 1.0}


def test_decay_safety_says_per_seed_whether_every_shift_stays_inside_its_lrs_band():
    shift = decay_effect(GRID)  # seed 1 moves by 1.0 and 0.5, seed 2 by 0.0 and 1.0
    safety = decay_safety(shift, pd.Series({1e-3: 2.0, 1e-2: 1.0}))
    assert safety.index.tolist() == [1, 2]
    assert safety["inside_band"].tolist() == [True, False]  # seed 2 moves 1.0 at an LR whose band is 1.0
    assert safety["largest_shift"].tolist() == [1.0, 1.0]


def weights_run(model, tokenizer, path="r") -> Run:
    return Run(path=path, config={}, steps=pd.DataFrame(), epochs=pd.DataFrame({"train_loss": [float("nan"), 0.5]}),
               summary={}, model=model, tokenizer=tokenizer)


def test_with_weight_norms_reads_the_weights_then_drops_them():
    model, tokenizer = load_model(TrainConfig(disable_tqdm=True))
    run = weights_run(model, tokenizer)
    table = pd.DataFrame({"weight_decay": [0.0], "path": ["r"]})
    table.attrs["runs"] = [run]
    out = with_weight_norms(table)
    assert out["weight_norm"].iloc[0] == pytest.approx(weight_norm(model)) and run.model is None
    with pytest.raises(ValueError, match="keep_models=True"):
        with_weight_norms(out)


def sweep_table(rows: dict, runs: list[Run]) -> pd.DataFrame:
    table = pd.DataFrame({**rows, "path": [r.path for r in runs]})
    table.attrs["runs"] = runs
    return table


def test_decay_table_joins_the_seeds_and_adds_the_last_train_loss_and_the_gap():
    def run(path, last_train_loss):
        return Run(path=path, config={}, steps=pd.DataFrame(), summary={},
                   epochs=pd.DataFrame({"train_loss": [float("nan"), 1.0, last_train_loss]}))
    parts = [sweep_table({"seed": [s, s], "weight_decay": [0.0, 1.0], "final_eval_loss": [0.9, 0.8]},
                         [run(f"s{s}a", 0.2), run(f"s{s}b", 0.7)]) for s in (1, 2)]
    decay = decay_table(parts)
    assert decay["seed"].tolist() == [1, 1, 2, 2] and decay["final_train_loss"].tolist() == [0.2, 0.7] * 2
    assert decay["gap"].tolist() == pytest.approx([0.7, 0.1] * 2)


def test_by_decay_and_typical_decay_table_read_the_article_range_against_no_decay():
    decay = pd.DataFrame({"seed": [1, 1, 1, 2, 2, 2], "weight_decay": [0.0, 0.01, 0.1] * 2,
                          "weight_norm": [10.0, 9.9, 9.0, 20.0, 20.0, 19.0],
                          "best_eval_loss": [1.0, 1.1, 0.7, 2.0, 2.0, 2.05]})
    assert by_decay(decay, "weight_norm").loc[2].tolist() == [20.0, 20.0, 19.0]
    typical = typical_decay_table(decay, [0.01, 0.1])
    assert typical["norm_change"].tolist() == pytest.approx([0.1, 0.05])  # 9.0 / 10.0, 19.0 / 20.0
    assert typical["loss_shift"].tolist() == pytest.approx([0.3, 0.05])  # either way: 0.7 is 0.3 below 1.0


# ---------------------------------------------------------------- optimizers at their own best LR, the betas

COMPARISON = pd.DataFrame({"optim": ["adamw_torch"] * 4 + ["sgd"] * 4, "seed": [1, 1, 2, 2] * 2,
                           "learning_rate": [1e-3, 1e-2, 1e-3, 1e-2, 1e-2, 1e-1, 1e-2, 1e-1],
                           "best_eval_loss": [0.5, 0.4, 0.6, 0.7, 0.9, 0.8, 0.95, 1.0]})


def test_best_settings_picks_each_optimizers_best_lr_per_seed():
    best = best_settings(COMPARISON)
    assert len(best) == 4
    lrs = by_optimizer(best, "learning_rate")
    assert lrs.index.tolist() == [1, 2] and lrs.columns.tolist() == ["adamw_torch", "sgd"]
    assert lrs["adamw_torch"].tolist() == [1e-2, 1e-3] and lrs["sgd"].tolist() == [1e-1, 1e-2]
    assert by_optimizer(best, "best_eval_loss")["sgd"].tolist() == [0.8, 0.95]


def test_seed_band_averages_each_columns_spread_over_the_seeds():
    losses = pd.DataFrame({"adamw_torch": [0.4, 0.6], "sgd": [0.8, 0.9]}, index=[1, 2])
    assert seed_band(losses) == pytest.approx((0.2 + 0.1) / 2)


def test_betas_table_reads_the_default_pair_against_the_best_pair_per_seed():
    betas = pd.DataFrame({"seed": [1, 1, 1, 2, 2], "adam_beta1": [0.9, 0.8, 0.9, 0.9, 0.95],
                          "adam_beta2": [0.999, 0.999, 0.999, 0.999, 0.999],
                          "base_eval_loss": [3.0] * 5, "best_eval_loss": [1.0, 0.8, 1.0, 2.0, 2.5]})
    table = betas_table(betas, 0.9, 0.999)  # seed 1's default pair appears twice (both sweeps hold it)
    assert table.index.tolist() == [1, 2] and table["best_beta1"].tolist() == [0.8, 0.9]
    assert table["default_loss"].tolist() == [1.0, 2.0] and table["best_loss"].tolist() == [0.8, 2.0]
    assert table["shortfall"].tolist() == pytest.approx([0.2 / 2.2, 0.0])  # 0.2 of the 2.2 the best removed
