"""nbkit.labs.ch06_stability: clipping statistics, seed comparisons, the lazy dataset and its loader
throughput, the mixed-precision demonstrations, and the evidence tables of the chapter's checks (a row
per seed). Small runs of the tiny base."""
import math

import pytest
import torch
from conftest import tiny_config

from nbkit import train
from nbkit.core.data import load_examples, tokenize_example
from nbkit.core.models import load_model
from nbkit.labs.ch06_stability import (LazyTokenizedDataset, autocast_dtypes, clipping_table, format_limits,
                                       fp16_gradient_demo, grad_scaler_trace, loader_throughput, number_formats,
                                       playbook_threshold, same_curves, seed_band, step_band, step_seconds,
                                       write_jsonl)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs with seed 0, one with seed 1, one clipped hard: 4 steps each."""
    out = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(out, num_train_epochs=1, lr_scheduler_type="constant", max_grad_norm=None)
    return {"a": train(cfg.replace(seed=0)), "a_again": train(cfg.replace(seed=0)), "b": train(cfg.replace(seed=1)),
            "clipped": train(cfg.replace(seed=0, max_grad_norm=1e-3))}


def test_clipping_table_counts_the_clipped_steps(runs):
    table = clipping_table([runs["a"], runs["clipped"]]).set_index("max_grad_norm", drop=False)
    assert table["clipped_fraction"].tolist() == [0.0, 1.0]  # no clip never clips; 1e-3 clips every step
    assert table["steps"].tolist() == [4, 4]
    assert table["grad_norm_p90"].iloc[0] == pytest.approx(runs["a"].steps["grad_norm"].quantile(0.9))


def test_playbook_threshold_is_the_percentile_of_pre_clip_norms(runs):
    norms = sorted(runs["a"].steps["grad_norm"])
    assert playbook_threshold(runs["a"], 50) == pytest.approx((norms[1] + norms[2]) / 2)
    assert norms[0] < playbook_threshold(runs["a"]) <= norms[-1]
    with pytest.raises(ValueError, match="percentile=100"):
        playbook_threshold(runs["a"], 100)


def test_same_seed_same_curve_other_seed_other_curve(runs):
    assert same_curves(runs["a"], runs["a_again"])
    assert not same_curves(runs["a"], runs["b"])
    assert not same_curves(runs["a"], runs["clipped"])  # same seed, clipping changes the steps


def test_same_curves_over_the_first_steps_compares_a_short_run_with_the_start_of_a_long_one(runs, tmp_path):
    cfg = tiny_config(tmp_path, num_train_epochs=1, lr_scheduler_type="constant", max_grad_norm=None, seed=0)
    short = train(cfg.replace(max_steps=2))
    assert not same_curves(runs["a"], short)  # 4 steps against 2
    assert same_curves(runs["a"], short, steps=2)  # a constant LR: the first 2 steps are the same
    assert not same_curves(runs["b"], short, steps=2)  # another seed, another start
    assert not same_curves(runs["a"], short, steps=3)  # the short run has no third step


def test_seed_band(runs):
    band = seed_band([runs["a"], runs["b"]])
    losses = [runs[k].summary["final_eval_loss"] for k in ("a", "b")]
    assert band["width"] == pytest.approx(abs(losses[0] - losses[1])) and band["width"] > 0
    assert band["mean"] == pytest.approx(sum(losses) / 2)
    per_step = step_band([runs["a"], runs["b"]])
    assert (per_step["min"] <= per_step["mean"]).all() and (per_step["mean"] <= per_step["max"]).all()
    with pytest.raises(ValueError, match="at least 2 runs"):
        seed_band([runs["a"]])


def test_step_seconds_is_positive(runs):
    assert 0 < step_seconds(runs["a"]) < 60


def test_lazy_dataset_tokenises_like_the_trainer(tmp_path):
    _, tokenizer = load_model(tiny_config(tmp_path))
    examples = load_examples("arithmetic")[:20]
    lazy = LazyTokenizedDataset(write_jsonl(examples, tmp_path / "rows.jsonl"), tokenizer, 64)
    assert len(lazy) == 20
    for i in (0, 7, 19):
        assert lazy[i] == tokenize_example(examples[i], tokenizer, 64)


def test_loader_throughput_counts_every_token_with_and_without_workers(tmp_path):
    _, tokenizer = load_model(tiny_config(tmp_path))
    examples = load_examples("arithmetic")[:40]
    lazy = LazyTokenizedDataset(write_jsonl(examples, tmp_path / "rows.jsonl"), tokenizer, 64)
    expected = sum(len(tokenize_example(e, tokenizer, 64)["input_ids"]) for e in examples)
    for workers in (0, 2):
        result = loader_throughput(lazy, workers, batch_size=8, pad_token_id=tokenizer.pad_token_id)
        assert result["tokens"] == expected and result["tokens_per_second"] > 0
    with pytest.raises(ValueError, match="num_workers=-1"):
        loader_throughput(lazy, -1)


def test_number_formats_show_fp16_range_and_bf16_precision():
    table = number_formats((70000.0, 1e-8, 1.0 + 2 ** -9)).set_index("value")
    assert math.isinf(table.loc[70000.0, "fp16"]) and math.isfinite(table.loc[70000.0, "bf16"])
    assert table.loc[1e-8, "fp16"] == 0 and table.loc[1e-8, "bf16"] > 0
    assert table.loc[1.0 + 2 ** -9, "bf16"] == 1.0 and table.loc[1.0 + 2 ** -9, "fp16"] == 1.0 + 2 ** -9
    limits = format_limits().set_index("format")
    assert limits.loc["fp16", "max"] == 65504 and limits.loc["bf16", "eps"] == 2 ** -7


def test_autocast_keeps_the_loss_in_fp32_on_the_cpu():
    dtypes = autocast_dtypes("cpu", torch.bfloat16).set_index("op")["output_dtype"]
    assert dtypes["matmul"] == "bfloat16" and dtypes["cross_entropy"] == "float32"


def test_loss_scaling_recovers_underflowing_fp16_gradients(tmp_path):
    table = fp16_gradient_demo(tiny_config(tmp_path), loss_factor=1e-5).set_index("backward")
    assert table.loc["fp32", "relative_error"] == 0
    unscaled, scaled = table.iloc[1], table.iloc[2]
    assert unscaled["zero_fraction"] > 10 * scaled["zero_fraction"]
    assert scaled["relative_error"] < 0.1 * unscaled["relative_error"]


def test_grad_scaler_skips_overflowing_steps_and_halves_the_scale(tmp_path):
    trace = grad_scaler_trace(tiny_config(tmp_path), init_scale=2.0 ** 20, max_steps=16, steps_after_fit=2)
    assert not trace["gradients_finite"].iloc[0]  # 2^20 x the gradients overflows fp16
    assert (trace["weights_changed"] == trace["gradients_finite"]).all()  # a skipped step leaves the weights
    first_good = int(trace["gradients_finite"].idxmax())
    assert trace["gradients_finite"].iloc[first_good:].all()
    assert trace["scale"].iloc[first_good] == 2.0 ** 20 / 2 ** first_good
    assert len(trace) == first_good + 2  # it stops two steps after the gradients first fit


def test_grad_scaler_trace_stops_at_max_steps_when_the_gradients_never_fit(tmp_path):
    trace = grad_scaler_trace(tiny_config(tmp_path), init_scale=2.0 ** 60, max_steps=3)
    assert len(trace) == 3 and not trace["gradients_finite"].any() and not trace["weights_changed"].any()


def test_an_fp16_step_skipped_by_the_scaler_does_not_advance_the_schedule(tmp_path):
    # GradScaler's first scale (65536) overflows the tiny model's fp16 gradients: step 1 is skipped
    run = train(tiny_config(tmp_path, fp16=True, max_steps=3, lr_scheduler_type="linear"))
    s = run.steps
    skipped = ~s["grad_norm"].map(math.isfinite)
    assert skipped.iloc[0] and not skipped.all()
    for i in range(len(s) - 1):
        same_lr = s["learning_rate"].iloc[i + 1] == s["learning_rate"].iloc[i]
        assert same_lr == skipped.iloc[i]  # the LR moves on only after a step that was taken


# ---------------------------------------------------------------- seed sets

def test_clipping_table_and_clipped_fraction_per_run(runs):
    from nbkit.labs.ch06_stability import clipped_fraction
    table = clipping_table([runs["a"], runs["b"], runs["clipped"]])
    assert table["seed"].tolist() == [0, 1, 0]
    assert [clipped_fraction(runs[k]) for k in ("a", "clipped")] == [0.0, 1.0]


def test_runs_by_keys_runs_by_their_knob_values(runs):
    from nbkit.labs.ch06_stability import runs_by
    by = runs_by([runs["a"], runs["b"], runs["clipped"]], "max_grad_norm", "seed")
    assert by[None, 1] is runs["b"] and by[1e-3, 0] is runs["clipped"]
    assert runs_by([runs["a"], runs["b"]], "seed")[1] is runs["b"]  # one knob: the value alone is the key
    with pytest.raises(ValueError, match="at least one knob"):
        runs_by([runs["a"]])


def test_paired_rule_needs_every_seed_on_the_mean_side_and_the_mean_beyond_3_standard_errors():
    from nbkit.labs.ch06_stability import paired_rule
    clear = paired_rule([0.10, 0.12, 0.11, 0.09, 0.10])
    assert clear["real"] and clear["per_seed"] == [True] * 5 and clear["standard_errors_from_zero"] > 3
    assert clear["mean"] == pytest.approx(0.104) and clear["standard_error"] == pytest.approx(0.0050990195)
    one_off = paired_rule([0.10, 0.12, -0.01, 0.11, 0.10])  # one seed goes the other way: that one spoils it
    assert not one_off["real"] and one_off["per_seed"] == [True, True, False, True, True]
    noise = paired_rule([0.01, -0.02, 0.015])  # mean within 3 standard errors: no seed counts
    assert noise["per_seed"] == [False, False, False]
    with pytest.raises(ValueError, match="at least 2"):
        paired_rule([0.1])


def test_train_many_side_by_side_gives_the_runs_in_order_as_one_by_one(tmp_path):
    from nbkit.labs.ch06_stability import train_many
    cfg = tiny_config(tmp_path, max_steps=2, num_train_epochs=1)
    configs = [cfg.replace(seed=3), cfg.replace(seed=4, max_grad_norm=0.5)]
    serial, parallel = train_many(configs), train_many(configs, workers=2)
    assert [r.config["seed"] for r in parallel] == [3, 4] and parallel[1].config["max_grad_norm"] == 0.5
    assert all(r.model is None for r in serial + parallel)
    for a, b in zip(serial, parallel):  # another process, one thread: the same steps up to float roundings
        assert a.steps["loss"].tolist() == pytest.approx(b.steps["loss"].tolist(), rel=1e-5)


def test_max_relative_difference():
    from nbkit.labs.ch06_stability import max_relative_difference
    assert max_relative_difference([1.0, 2.0, 4.0], [1.0, 2.2, 4.0]) == pytest.approx(1 - 2 / 2.2)
    assert max_relative_difference([3.0], [3.0]) == 0.0
    with pytest.raises(ValueError, match="one length"):
        max_relative_difference([1.0, 2.0], [1.0])


# ---------------------------------------------------------------- the checks' evidence tables

@pytest.fixture(scope="module")
def clip_sweep(tmp_path_factory):
    """SGD at an LR that diverges unclipped, without clipping and clipped at 1.0, on seeds 0 and 1: 4 steps each."""
    from nbkit.core.sweep import sweep

    cfg = tiny_config(tmp_path_factory.mktemp("clips"), num_train_epochs=1, lr_scheduler_type="constant", optim="sgd",
                      learning_rate=3.0)
    return sweep(cfg, {"max_grad_norm": [None, 1.0], "seed": [0, 1]}, progress=False)


def test_clipping_evidence_is_a_row_per_seed_with_a_column_per_clip_value(clip_sweep):
    from nbkit.labs.ch06_stability import clipped_fraction, clipping_evidence, runs_by

    evidence = clipping_evidence(clip_sweep)
    by = runs_by(clip_sweep, "max_grad_norm", "seed")
    assert list(evidence.index) == [0, 1] and list(evidence["final_eval_loss"].columns) == [1.0]
    for seed in (0, 1):
        without, clipped = by[None, seed], by[1.0, seed]
        assert evidence["status_without"][seed] == without.status
        assert evidence["diverged_at_step"][seed] == without.summary.get("diverged_at_step")
        assert evidence["base_eval_loss"][seed] == without.summary["base_eval_loss"]
        assert evidence["status"][1.0][seed] == clipped.status
        assert evidence["final_eval_loss"][1.0][seed] == clipped.summary["final_eval_loss"]
        assert evidence["clipped_fraction"][1.0][seed] == clipped_fraction(clipped)
        assert evidence["grad_norm_p50"][1.0][seed] == clipped.steps["grad_norm"].median()
    assert set(evidence["status_without"]) == {"diverged"}  # the LR is high enough: the test can tell the runs apart
    assert all(isinstance(step, int) for step in evidence["diverged_at_step"])  # steps stay whole numbers


def test_loss_jump_table_reads_the_first_steps_and_the_highest_loss_of_each_seed(clip_sweep):
    from nbkit.labs.ch06_stability import loss_jump_table, runs_by

    jump = loss_jump_table(clip_sweep, clip=1.0)
    by = runs_by(clip_sweep, "max_grad_norm", "seed")
    assert list(jump.index) == [0, 1]
    for seed in (0, 1):
        without, clipped = by[None, seed].steps["loss"], by[1.0, seed].steps["loss"]
        assert jump.loc[seed].to_dict() == {"first_loss": without.iloc[0],
                                            "loss_after_first_update_without": without.iloc[1],
                                            "loss_after_first_update_clipped": clipped.iloc[1],
                                            "max_loss_without": without.max(), "max_loss_clipped": clipped.max()}


def test_paired_differences_pair_each_run_with_the_reference_of_its_seed(runs):
    from nbkit.labs.ch06_stability import loss_curve_gaps, max_relative_difference, paired_differences

    pairs = paired_differences([runs["clipped"], runs["b"]], [runs["b"], runs["a"]])  # references in another order
    assert list(pairs.index) == [0, 1]
    final = {k: r.summary["final_eval_loss"] for k, r in runs.items()}
    assert pairs["reference_final_eval_loss"].tolist() == [final["a"], final["b"]]
    assert pairs["difference_to_reference"].tolist() == [final["clipped"] - final["a"], 0.0]
    gaps = loss_curve_gaps([runs["clipped"], runs["a_again"]], [runs["a"]])
    assert gaps["max_relative_loss_difference"].tolist() == [
        max_relative_difference(runs["clipped"].steps["loss"], runs["a"].steps["loss"]), 0.0]
    assert gaps["max_relative_loss_difference"].iloc[0] > 0  # clipping at 1e-3 changed the curve


def test_curve_repeats_counts_the_runs_sharing_a_curve(runs):
    from nbkit.labs.ch06_stability import curve_repeats

    repeats = curve_repeats([runs["a"], runs["a_again"], runs["b"]])
    assert repeats["runs_with_this_curve"].tolist() == [2, 2, 1] and list(repeats.index) == [0, 0, 1]


def test_underflow_table_keeps_the_demos_passes_in_their_order():
    import pandas as pd

    from nbkit.labs.ch06_stability import underflow_table

    def demo(zero_fp16):
        return pd.DataFrame({"backward": ["fp32", "fp16", "fp16, loss x 65536"],
                             "zero_fraction": [0.0, zero_fp16, 0.01], "relative_error": [0.0, 0.9, 0.001]})
    table = underflow_table({42: demo(0.5), 43: demo(0.7)})
    assert list(table.index) == [42, 43] and list(table["zero_fraction"].columns) == ["fp32", "fp16", "fp16_scaled"]
    assert table["zero_fraction"].to_numpy().tolist() == [[0.0, 0.5, 0.01], [0.0, 0.7, 0.01]]
    assert table["relative_error"]["fp16_scaled"].tolist() == [0.001, 0.001]


def test_scaler_table_finds_the_overflows_and_whether_the_scaler_halved_and_skipped_them():
    import pandas as pd

    from nbkit.labs.ch06_stability import scaler_table

    good = pd.DataFrame({"step": [1, 2, 3, 4], "scale": [8.0, 4.0, 2.0, 2.0],
                         "gradients_finite": [False, False, True, True], "weights_changed": [False, False, True, True]})
    moved = good.assign(weights_changed=[True, False, True, True])  # a step with inf gradients moved the weights
    stuck = good.assign(scale=[8.0, 8.0, 4.0, 4.0])  # no halving after the first overflow
    never = good.assign(gradients_finite=[False] * 4, weights_changed=[False] * 4)
    table = scaler_table({1: good, 2: moved, 3: stuck, 4: never})
    assert table["overflow_steps"].tolist()[:3] == [2, 2, 2] and pd.isna(table["overflow_steps"][4])
    assert table["steps_skipped_exactly"].tolist() == [True, False, True, True]
    assert table["halved_each_overflow"].tolist() == [True, True, False, False]
    assert table["scales"][1] == [8.0, 4.0, 2.0, 2.0] and table["gradients_finite"][4] == [False] * 4
