"""nbkit.labs.ch03_batch_size: the two loss normalisations under gradient accumulation, the gradient spread
across batch sizes, the gradient noise scale (McCandlish et al. 2018, Appendix A), the batch-size and
accumulation experiments, and the evidence tables chapter 3's checks read (on small hand-built tables)."""
import math

import pandas as pd
import pytest
import torch

from conftest import tiny_config
from nbkit import train
from nbkit.core.memory import readable_bytes
from nbkit.core.models import load_model
from nbkit.core.runs import Run, as_runs
from nbkit.core.train import build_datasets
from nbkit.labs.ch03_batch_size import (NoiseScaleProbe, accumulation_configs, accumulation_table, best_batch_table,
                                        compare_normalisations, exact_token_mean, gradient_spread, kept_vs_scaled,
                                        length_grouped_micro_batches, mean_of_micro_means, measure_noise_scale,
                                        noise_scale_estimate, pace_table, per_batch_and_seed, plans_per_card,
                                        seed_band, spread_drop)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_and_rows(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("runs"), max_samples=200)
    model, tokenizer = load_model(cfg)
    return model, build_datasets(cfg, tokenizer)[0], tokenizer.pad_token_id


# ---------------------------------------------------------------- normalisation, by hand

def test_exact_token_mean_weights_every_token_equally():
    # micro-batch 1: 2 tokens summing to 2.0 (1.0 each); micro-batch 2: 6 tokens summing to 18.0 (3.0 each)
    assert exact_token_mean([2.0, 18.0], [2, 6]) == pytest.approx(20.0 / 8)
    assert mean_of_micro_means([2.0, 18.0], [2, 6]) == pytest.approx((1.0 + 3.0) / 2)


def test_the_two_agree_when_micro_batches_have_equal_tokens():
    assert exact_token_mean([3.0, 5.0, 7.0], [4, 4, 4]) == pytest.approx(
        mean_of_micro_means([3.0, 5.0, 7.0], [4, 4, 4]))


@pytest.mark.parametrize("sums, counts", [([1.0], []), ([], []), ([1.0, 2.0], [3, 0])])
def test_bad_micro_batches_are_refused(sums, counts):
    with pytest.raises(ValueError, match="token_counts"):
        exact_token_mean(sums, counts)


def test_exact_accumulation_matches_the_full_batch_and_the_mean_of_means_does_not(model_and_rows):
    model, rows, pad = model_and_rows
    micro = length_grouped_micro_batches(rows, micro_batch_size=4, count=4)
    tokens = [sum(sum(label != -100 for label in r["labels"]) for r in batch) for batch in micro]
    assert len(set(tokens)) > 1  # the micro-batches really differ in length
    result = compare_normalisations(model, micro, pad)
    assert result["loss_exact"] == pytest.approx(result["loss_full_batch"], rel=1e-5)
    assert result["grad_error_exact"] < 1e-4
    assert abs(result["loss_mean_of_means"] - result["loss_full_batch"]) > 1e-3
    assert result["grad_error_mean_of_means"] > 100 * result["grad_error_exact"]


def test_length_grouped_micro_batches_go_from_short_to_long(model_and_rows):
    _, rows, _ = model_and_rows
    micro = length_grouped_micro_batches(rows, micro_batch_size=4, count=3)
    lengths = [sum(sum(label != -100 for label in r["labels"]) for r in batch) for batch in micro]
    assert [len(b) for b in micro] == [4, 4, 4] and lengths == sorted(lengths)


# ---------------------------------------------------------------- the noise scale, by hand

def test_noise_scale_estimate_recovers_a_known_signal_and_noise():
    # |G|^2 = 4, tr(Sigma) = 32: E|G_B|^2 = 4 + 32 / B
    g_small, g_big = 4 + 32 / 2, 4 + 32 / 16
    est = noise_scale_estimate(g_small, g_big, b_small=2, b_big=16)
    assert est["grad_norm_sq"] == pytest.approx(4)
    assert est["trace_sigma"] == pytest.approx(32)
    assert est["b_simple"] == pytest.approx(8)


def test_noise_scale_is_inf_when_noise_swamps_the_signal():
    assert math.isinf(noise_scale_estimate(10.0, 0.1, 2, 4)["b_simple"])


def test_noise_scale_needs_two_ordered_batch_sizes():
    with pytest.raises(ValueError, match="b_small"):
        noise_scale_estimate(1.0, 1.0, 8, 8)


def test_noise_scale_on_synthetic_gradients_is_close_to_the_truth():
    # per-example gradients G + noise with tr(Sigma) = dim * sigma^2; estimate from the sample means
    torch.manual_seed(0)
    dim, sigma, g = 200, 1.0, torch.full((200,), 0.1)  # |G|^2 = 2, tr = 200, B_simple = 100
    b_small, n_micro, repeats = 8, 16, 200
    small, big = [], []
    for _ in range(repeats):
        grads = g + sigma * torch.randn(n_micro, b_small, dim)
        means = grads.mean(1)
        small.append(float((means ** 2).sum(1).mean()))
        big.append(float(means.mean(0).norm() ** 2))
    est = noise_scale_estimate(sum(small) / repeats, sum(big) / repeats, b_small, b_small * n_micro)
    assert est["trace_sigma"] == pytest.approx(200, rel=0.1)
    assert est["b_simple"] == pytest.approx(100, rel=0.3)


# ---------------------------------------------------------------- on the tiny model

def test_gradient_spread_falls_with_the_batch_size(model_and_rows):
    model, rows, pad = model_and_rows
    spread = gradient_spread(model, rows, pad, [2, 32], draws=4)
    small, big = spread["gradient_variance"]
    assert big < small / 4  # tr(Sigma)/B predicts 16x; ask for 4x


def test_gradient_spread_refuses_a_batch_larger_than_the_rows(model_and_rows):
    model, rows, pad = model_and_rows
    with pytest.raises(ValueError, match="batch_sizes"):
        gradient_spread(model, rows, pad, [len(rows) + 1])


def test_measure_noise_scale_gives_a_positive_trace(model_and_rows):
    model, rows, pad = model_and_rows
    est = measure_noise_scale(model, rows, pad, b_small=2, n_micro=4, generator=torch.Generator().manual_seed(0))
    assert est["trace_sigma"] > 0


def test_measure_noise_scale_refuses_more_rows_than_the_training_set(model_and_rows):
    model, rows, pad = model_and_rows
    with pytest.raises(ValueError, match=rf"b_small=4 x n_micro=8: 32 distinct rows needed, "
                                         rf"the training set has {len(rows[:20])}"):
        measure_noise_scale(model, rows[:20], pad, b_small=4, n_micro=8)


def test_probe_records_and_does_not_change_the_run(tmp_path):
    cfg = tiny_config(tmp_path, num_train_epochs=1)  # 4 steps
    probe = NoiseScaleProbe(every=2, b_small=2, n_micro=4)
    probed = train(cfg, callbacks=[probe])
    plain = train(cfg)
    table = probe.table()
    assert list(table["step"]) == [0, 2, 4]
    assert list(table["samples_seen"]) == [0, 32, 64]
    assert list(probed.steps["loss"]) == list(plain.steps["loss"])  # bit for bit


def test_probe_refuses_a_bad_interval():
    with pytest.raises(ValueError, match="every"):
        NoiseScaleProbe(every=0)


# ---------------------------------------------------------------- the same, on a seed set

def test_loss_draws_take_the_loss_spread_from_forward_passes(model_and_rows):
    model, rows, pad = model_and_rows
    few = gradient_spread(model, rows, pad, [4, 32], draws=2, seed=1)
    many = gradient_spread(model, rows, pad, [4, 32], draws=2, seed=1, loss_draws=16)
    assert list(few["gradient_variance"]) == list(many["gradient_variance"])  # the gradient draws come first, alike
    assert list(few["loss_std"]) != list(many["loss_std"])
    assert many["loss_std"].iloc[1] < many["loss_std"].iloc[0]  # 1/sqrt(B) predicts 2.8x; ask only for a fall
    with pytest.raises(ValueError, match="loss_draws"):
        gradient_spread(model, rows, pad, [4], draws=2, loss_draws=1)


def test_averaged_noise_scale_is_the_ratio_of_the_averages(model_and_rows, monkeypatch):
    import nbkit.labs.ch03_batch_size as batching
    estimates = iter([{"grad_norm_sq": 1.0, "trace_sigma": 10.0, "b_simple": 10.0},
                      {"grad_norm_sq": -0.5, "trace_sigma": 20.0, "b_simple": math.inf}])
    monkeypatch.setattr(batching, "measure_noise_scale", lambda *a, **k: next(estimates))
    model, rows, pad = model_and_rows
    result = batching.averaged_noise_scale(model, rows, pad, repeats=2)
    assert result == {"grad_norm_sq": 0.25, "trace_sigma": 15.0, "b_simple": 60.0}
    with pytest.raises(ValueError, match="repeats"):
        batching.averaged_noise_scale(model, rows, pad, repeats=0)


def test_noise_scale_by_seed_measures_the_base_model_and_the_run(tmp_path, model_and_rows):
    from nbkit.labs.ch03_batch_size import noise_scale_by_seed
    run = train(tiny_config(tmp_path, num_train_epochs=1, seed=3))
    table = noise_scale_by_seed([run], model_and_rows[0], repeats=1, b_small=2, n_micro=4)
    assert list(table["seed"]) == [3]
    assert {"b_simple_base", "b_simple_end", "trace_sigma_base", "grad_norm_sq_end"} <= set(table.columns)
    assert table["trace_sigma_base"].iloc[0] > 0 and table["trace_sigma_end"].iloc[0] > 0
    in_workers = noise_scale_by_seed([run, run], model_and_rows[0], repeats=1, b_small=2, n_micro=4, workers=2)
    assert in_workers.iloc[1].to_dict() == pytest.approx(table.iloc[0].to_dict())  # the same numbers, elsewhere
    run.model = None
    with pytest.raises(ValueError, match="keep_model"):
        noise_scale_by_seed([run], model_and_rows[0])


def test_batch_size_runs_scale_or_keep_the_lr_and_keep_only_the_base_weights(tmp_path):
    from nbkit.labs.ch03_batch_size import batch_size_runs
    cfg = tiny_config(tmp_path, num_train_epochs=1, learning_rate=1e-3)
    table = batch_size_runs(cfg, [8, 16, 32], seeds=[1, 2], base_batch=16, exponent=1.0)
    assert len(table) == 3 * 2 + 1 * 2  # every batch at both seeds, and batch 32 again with the LR kept
    scaled = table[table["rule"] == "scaled"].set_index(["batch_size", "seed"])["learning_rate"]
    assert scaled[8, 1] == pytest.approx(5e-4) and scaled[32, 2] == pytest.approx(2e-3)
    assert set(table.loc[table["rule"] == "kept", "learning_rate"]) == {1e-3}
    assert list(table["steps"].iloc[:2]) == [8, 8]  # 64 rows at batch 8
    runs = as_runs(table)  # by the path column, weights and all where kept
    assert table["train_loss_mean"].iloc[0] == pytest.approx(runs[0].steps["loss"].mean())
    kept = [r.model is not None for r in runs]
    assert kept == [rule == "scaled" and b == 16 for rule, b in zip(table["rule"], table["batch_size"])]


@pytest.mark.parametrize("batch_sizes", [[4, 8], [8, 16], [32, 64]])
def test_batch_size_runs_refuse_batches_without_the_base_or_a_larger_one(tmp_path, batch_sizes):
    from nbkit.labs.ch03_batch_size import batch_size_runs
    with pytest.raises(ValueError, match=r"batch_sizes: .* base_batch \(16\)"):
        batch_size_runs(tiny_config(tmp_path), batch_sizes, seeds=[1], base_batch=16)
    assert not any(tmp_path.rglob("*.json")), "a refused experiment must not train"


def test_accumulation_configs_name_each_case_and_keep_one_effective_batch(tmp_path):
    from nbkit.labs.ch03_batch_size import accumulation_configs
    cfgs = accumulation_configs(tiny_config(tmp_path), [[32, 1], [8, 4], [4, 8]])
    assert list(cfgs) == ["32 x 1", "8 x 4", "4 x 8"]
    assert {c.per_device_train_batch_size * c.gradient_accumulation_steps for c in cfgs.values()} == {32}


@pytest.mark.parametrize("accumulation", [[[8, 1], [4, 2]], [[8, 1], [4, 2], [2, 3]], [[8, 2], [4, 4], [2, 8]],
                                          [[8, 1], [2, 4], [4, 2]], [[8, 1], [4, 2], [8]]])
def test_accumulation_configs_refuse_what_the_checks_cannot_compare(tmp_path, accumulation):
    from nbkit.labs.ch03_batch_size import accumulation_configs
    with pytest.raises(ValueError, match=r"accumulation: .* allowed: three \[per-device batch"):
        accumulation_configs(tiny_config(tmp_path), accumulation)


def test_train_side_by_side_wants_one_keep_flag_per_config(tmp_path):
    from nbkit.labs.ch03_batch_size import train_side_by_side
    with pytest.raises(ValueError, match="keep_models"):
        train_side_by_side([tiny_config(tmp_path)], keep_models=[True, False])


def test_step_throughput_times_every_batch_size(tmp_path):
    from nbkit.labs.ch03_batch_size import step_throughput
    speed = step_throughput(tiny_config(tmp_path), [2, 32], repeats=2)
    assert list(speed["batch_size"]) == [2, 32]
    assert (speed["tokens_per_second"] > 0).all()
    with pytest.raises(ValueError, match="repeats"):
        step_throughput(tiny_config(tmp_path), [2], repeats=0)


# ---------------------------------------------------------------- the evidence of the checks

def batch_table(best_eval_loss: dict, train_loss_mean: dict) -> pd.DataFrame:
    """A hand-built batch_size_runs table: {(rule, batch_size, seed): value} for each metric."""
    return pd.DataFrame([dict(rule=rule, batch_size=b, seed=seed, best_eval_loss=loss,
                              train_loss_mean=train_loss_mean[rule, b, seed], path=f"/runs/{rule}{b}-{seed}")
                         for (rule, b, seed), loss in best_eval_loss.items()])


# seeds 2 and 1 (in that order), base batch 16; batches 32 and 64 both scaled and kept
EVAL = {("scaled", 8, 2): 1.05, ("scaled", 16, 2): 1.0, ("scaled", 32, 2): 1.1, ("scaled", 64, 2): 1.5,
        ("kept", 32, 2): 1.2, ("kept", 64, 2): 1.3,
        ("scaled", 8, 1): 0.9, ("scaled", 16, 1): 0.96, ("scaled", 32, 1): 0.95, ("scaled", 64, 1): 1.1,
        ("kept", 32, 1): 0.94, ("kept", 64, 1): 1.0}
TRAIN = {("scaled", 8, 2): 0.5, ("scaled", 16, 2): 0.6, ("scaled", 32, 2): 0.7, ("scaled", 64, 2): 0.95,
         ("kept", 32, 2): 0.8, ("kept", 64, 2): 0.9,
         ("scaled", 8, 1): 0.4, ("scaled", 16, 1): 0.45, ("scaled", 32, 1): 0.44, ("scaled", 64, 1): 0.9,
         ("kept", 32, 1): 0.5, ("kept", 64, 1): 0.85}


def test_per_batch_and_seed_lays_a_metric_out_by_rule_and_batch_against_the_seeds():
    table = per_batch_and_seed(batch_table(EVAL, TRAIN), "best_eval_loss")
    assert table.loc[("kept", 64), 2] == 1.3 and table.loc[("scaled", 8), 1] == 0.9
    assert len(table) == 6 and set(table.columns) == {1, 2}
    both = per_batch_and_seed(batch_table(EVAL, TRAIN), ["train_loss_mean", "best_eval_loss"])
    assert both.loc[("scaled", 16), ("train_loss_mean", 1)] == 0.45


def test_seed_band_is_the_spread_of_the_scaled_runs_at_one_batch():
    assert seed_band(batch_table(EVAL, TRAIN), 16) == pytest.approx(1.0 - 0.96)
    assert seed_band(batch_table(EVAL, TRAIN), 32) == pytest.approx(1.1 - 0.95)  # the kept runs do not count


def test_kept_vs_scaled_sets_both_lrs_of_one_batch_side_by_side_per_seed():
    at = kept_vs_scaled(batch_table(EVAL, TRAIN), 64)
    assert at.index.tolist() == [2, 1]  # the table's order of seeds
    assert at.loc[2].tolist() == [1.3, 1.5, 0.9, 0.95]
    assert at.columns.tolist() == ["eval_loss_kept", "eval_loss_scaled", "train_loss_mean_kept",
                                   "train_loss_mean_scaled"]


def test_pace_table_takes_the_better_lr_of_each_larger_batch_against_the_base():
    pace = pace_table(batch_table(EVAL, TRAIN), base_batch=16)
    assert pace.index.tolist() == [2, 1]
    assert pace.loc[2, "base_train_loss_mean"] == 0.6
    assert pace.loc[2, "best_of_kept_or_scaled"] == [0.7, 0.9]  # batch 32: scaled; batch 64: kept
    assert pace.loc[2, "lowest_larger"] == 0.7
    assert pace.loc[1, "lowest_larger"] == 0.44 < pace.loc[1, "base_train_loss_mean"]  # batch 32 kept the pace


def test_best_batch_table_finds_the_best_batch_and_the_ends_cost():
    best = best_batch_table(batch_table(EVAL, TRAIN))
    assert best.index.tolist() == [2, 1]
    assert best.loc[2, "best_eval_loss"] == [1.05, 1.0, 1.1, 1.5]  # scaled only, smallest batch first
    assert best.loc[2, "best_batch"] == 16 and best.loc[1, "best_batch"] == 8
    assert best.loc[2, "smallest_over_best"] == pytest.approx(0.05) and best.loc[1, "smallest_over_best"] == 0
    assert best.loc[2, "largest_over_best"] == pytest.approx(1.5) and best.loc[1, "largest_over_best"] == (
        pytest.approx(1.1 / 0.9))


def test_spread_drop_divides_the_smallest_batchs_spread_by_the_largests():
    spread = pd.DataFrame({"batch_size": [64, 4, 16] * 2, "seed": [5] * 3 + [6] * 3,
                           "gradient_variance": [1.0, 8.0, 3.0, 2.0, 4.0, 3.0],
                           "loss_std": [0.1, 0.3, 0.2, 0.2, 0.3, 0.25]})
    drops = spread_drop(spread)
    assert drops.index.tolist() == [5, 6]
    assert drops.loc[5].tolist() == pytest.approx([8.0, 3.0])  # batch 4 over batch 64, not first row over last
    assert drops.loc[6].tolist() == pytest.approx([2.0, 1.5])


def steps_run(losses) -> Run:
    return Run(path=None, config={}, steps=pd.DataFrame({"step": range(1, len(losses) + 1), "loss": losses}),
               epochs=pd.DataFrame(), summary={})


def test_accumulation_table_adds_each_runs_largest_loss_difference_from_the_first(tmp_path, monkeypatch):
    # the memory columns are nbkit.core.memory's (tests/test_memory.py); a profiled step per case costs a minute here
    monkeypatch.setattr("nbkit.labs.ch03_batch_size.planned_vs_measured_table",
                        lambda configs: pd.DataFrame({"case": list(configs), "measured_MB": [3.0, 2.0, 1.0]}))
    cfgs = accumulation_configs(tiny_config(tmp_path), [[8, 1], [4, 2], [2, 4]])
    runs = [steps_run([2.0, 1.5, 1.0]), steps_run([2.0, 1.4, 1.0]), steps_run([2.1, 1.5, 1.3])]
    table = accumulation_table(cfgs, runs)
    assert table["case"].tolist() == ["8 x 1", "4 x 2", "2 x 4"] and table["measured_MB"].tolist() == [3.0, 2.0, 1.0]
    assert table["max_loss_difference"].tolist() == pytest.approx([0.0, 0.1, 0.3])


def test_plans_per_card_reads_the_planner_for_each_card_and_setting():
    from nbkit.views.memory_panel import plan_report
    cards, settings = {"small": 24, "large": 80}, {"lora": dict(method="lora"), "qlora": dict(method="qlora4")}
    plans = plans_per_card(plan_report, "llama-2-7b", cards, settings, max_seq_length=2048)
    assert plans[["card", "setting"]].values.tolist() == [["small", "lora"], ["small", "qlora"], ["large", "lora"],
                                                          ["large", "qlora"]]
    report = plan_report("llama-2-7b", memory_gb=80, max_seq_length=2048, method="qlora4")
    row = plans.iloc[3]
    assert row["per_device_batch"] == report["to_reach_effective"]["per_device_train_batch_size"]
    assert row["accumulation"] == report["to_reach_effective"]["gradient_accumulation_steps"]
    assert row["largest_batch"] == report["largest_batch"]
    at_batch = plan_report("llama-2-7b", memory_gb=80, max_seq_length=2048, method="qlora4",
                           per_device_train_batch_size=row["per_device_batch"])
    assert row["planned_at_that_batch"] == readable_bytes(at_batch["plan"].total)
    assert plans.loc[0, "largest_batch"] < plans.loc[2, "largest_batch"]  # the larger card fits more rows
