"""nbkit.labs.ch04_epochs: what epoch curves say about under- and over-fitting, and the per-seed tables
chapter 4's checks read off early stopping, reduce-on-plateau and LoRA (on hand-built runs)."""
import pandas as pd
import pytest

from nbkit.core.runs import Run
from nbkit.labs.ch04_epochs import (best_per_seed, curve_facts, curve_table, long_returns, lora_vs_full,
                                    minimum_spread, patience_table, per_patience, plateau_table, stopping_table,
                                    threshold_table, worse_with_more_patience)



def epochs_run(eval_losses, train_losses, accuracy=None, seed=1, steps_per_epoch=4, **summary) -> Run:
    """A run with these per-epoch curves: eval_losses from epoch 0 (the base), train_losses from epoch 1."""
    epochs = pd.DataFrame({"epoch": range(len(eval_losses)), "eval_loss": eval_losses,
                           "train_loss": [float("nan")] + list(train_losses)})
    if accuracy is not None:
        epochs["eval_accuracy"] = accuracy
    done = len(eval_losses) - 1
    best = int(pd.Series(eval_losses).idxmin())
    return Run(path=f"/runs/seed{seed}-{summary.get('patience')}", steps=pd.DataFrame(), epochs=epochs,
               config={"seed": seed, "finetuning_type": "full", "learning_rate": 1e-3, "lr_scheduler_type": "constant",
                       "early_stopping_patience": summary.pop("patience", None),
                       "early_stopping_threshold": summary.pop("threshold", 0.0)},
               summary={"status": "completed", "best_epoch": best, "best_eval_loss": min(eval_losses),
                        "final_eval_loss": eval_losses[-1], "epochs_completed": done,
                        "steps_completed": done * steps_per_epoch, **summary})


def test_curve_facts_reads_under_and_over_fitting_off_the_epochs():
    run = epochs_run([4.0, 0.5, 0.3, 0.35, 0.6], [2.0, 0.4, 0.2, 0.1], accuracy=[0.0, 0.5, 0.8, 0.8, 0.7])
    facts = curve_facts(run)
    assert facts["best_epoch"] == 2 and facts["last_epoch"] == 4 and facts["train_min_epoch"] == 4
    assert facts["eval_loss_epoch_1"] == 0.5 and facts["eval_loss_best"] == 0.3 and facts["eval_loss_last"] == 0.6
    assert facts["train_loss_epoch_1"] == 2.0 and facts["train_loss_best"] == 0.4 and facts["train_loss_last"] == 0.1
    assert facts["train_loss_min"] == 0.1 and facts["eval_loss_at_train_min"] == 0.6
    assert facts["loss_rise"] == pytest.approx(1.0)  # 0.6 is twice 0.3
    assert facts["error_rise"] == pytest.approx(0.5)  # error rate 0.2 -> 0.3
    assert facts["last_over_best"] == pytest.approx(2.0)
    assert facts["seed"] == 1 and facts["path"] == run.path


def test_curve_facts_takes_the_first_of_tied_minima_and_copes_without_accuracy():
    facts = curve_facts(epochs_run([4.0, 0.3, 0.5, 0.3], [1.0, 0.5, 0.4]))
    assert facts["best_epoch"] == 1  # where the curve doctor puts it too
    assert pd.isna(facts["accuracy_best"]) and pd.isna(facts["error_rise"])
    with pytest.raises(ValueError, match="no validation loss"):
        curve_facts(epochs_run([4.0], []))


def test_curve_table_has_a_row_per_run_in_order():
    runs = [epochs_run([4.0, 0.5, 0.3], [1.0, 0.5], seed=s) for s in (7, 5)]
    assert curve_table(runs)["seed"].tolist() == [7, 5]


def test_best_per_seed_picks_each_seeds_own_best_row():
    df = pd.DataFrame({"learning_rate": [1e-3, 1e-3, 3e-3, 3e-3], "seed": [2, 1, 2, 1],
                       "best_eval_loss": [0.3, 0.5, 0.4, 0.2]})
    picked = best_per_seed(df)
    assert picked["seed"].tolist() == [1, 2] and picked["learning_rate"].tolist() == [3e-3, 1e-3]
    with pytest.raises(ValueError, match="'seed'"):
        best_per_seed(df.drop(columns="seed"))


def test_stopping_table_reads_each_stopped_run_beside_its_seeds_long_run():
    long = epochs_run([4.0, 0.5, 0.3, 0.4, 0.45, 0.6, 0.7], [2.0, 0.4, 0.3, 0.2, 0.1, 0.05], seed=3)
    stopped = epochs_run([4.0, 0.5, 0.3, 0.4], [2.0, 0.4, 0.3], seed=3, patience=1, status="early_stopped")
    other = epochs_run([4.0, 0.5, 0.31, 0.4], [2.0, 0.4, 0.3], seed=3, patience=1, status="early_stopped")
    table = stopping_table([stopped, other], [long], returned=[0.3, 0.31])
    row = table.iloc[0]
    assert (row["seed"], row["patience"], row["stopped_at_epoch"], row["best_epoch"]) == (3, 1, 3, 2)
    assert row["compute_saved"] == pytest.approx(0.5)  # 12 of the long run's 24 steps
    assert row["long_best_eval_loss"] == 0.3 and row["long_final_eval_loss"] == 0.7 and row["long_last_epoch"] == 6
    assert row["returned_eval_loss"] == 0.3
    assert table["follows_long"].tolist() == [True, False]  # a different curve is not the long run's
    assert pd.isna(stopping_table([stopped], [long])["returned_eval_loss"].iloc[0])
    with pytest.raises(ValueError, match="no long run with seed 3"):
        stopping_table([stopped], [epochs_run([4.0, 0.5], [1.0], seed=4)])
    with pytest.raises(ValueError, match="2 returned losses for 1 runs"):
        stopping_table([stopped], [long], returned=[0.3, 0.3])


def test_curve_table_takes_a_sweep_table_and_finds_its_runs_by_path():
    runs = [epochs_run([4.0, 0.5, 0.3], [1.0, 0.5], seed=s) for s in (7, 5)]
    table = pd.DataFrame({"seed": [5, 7], "path": [runs[1].path, runs[0].path]})  # rows in another order
    table.attrs["runs"] = runs
    assert curve_table(table)["seed"].tolist() == [5, 7]


def test_minimum_spread_is_the_range_of_the_seeds_minima():
    fits = pd.DataFrame({"seed": [1, 2, 3], "eval_loss_best": [0.30, 0.25, 0.32]})
    assert minimum_spread(fits) == pytest.approx(0.07)


def stops_of(*rows) -> pd.DataFrame:
    columns = ["seed", "patience", "threshold", "stopped_at_epoch", "best_eval_loss", "returned_eval_loss",
               "long_final_eval_loss"]
    return pd.DataFrame([dict(zip(columns, row)) for row in rows])


STOPS = stops_of((1, 2, 0.0, 5, 0.30, 0.30, 0.70), (1, 1, 0.0, 3, 0.32, 0.32, 0.70), (1, 2, 0.05, 4, 0.31, None, 0.70),
                 (2, 1, 0.0, 4, 0.40, 0.40, 0.60), (2, 2, 0.0, 4, 0.40, 0.41, 0.60), (2, 2, 0.05, 5, 0.40, None, 0.60))


def test_patience_table_orders_the_runs_without_threshold_and_reads_each():
    plain = patience_table(STOPS)
    assert list(zip(plain["seed"], plain["patience"])) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert plain["more_epochs"].tolist() == [True, True, True, False]  # seed 2: patience 2 stopped no later
    assert plain["returned_best"].tolist() == [True, True, True, False]  # 0.41 is not the best 0.40
    assert plain["gain"].tolist() == pytest.approx([0.38, 0.40, 0.20, 0.19])
    assert per_patience(plain, "stopped_at_epoch") == {1: {1: 3, 2: 5}, 2: {1: 4, 2: 4}}


def test_worse_with_more_patience_compares_each_patience_with_the_smaller_ones_of_its_seed():
    # seed 1 as a learner expects (3 then 2: no worse); seed 2: patience 3 returned worse than patience 1
    plain = pd.DataFrame({"seed": [1, 1, 1, 2, 2, 2], "patience": [3, 1, 2, 1, 2, 3],
                          "returned_eval_loss": [0.30, 0.40, 0.30, 0.35, 0.35, 0.36]})
    worse = worse_with_more_patience(plain)
    assert worse.index.tolist() == [1, 2] and worse.tolist() == [False, True]
    same = plain.assign(returned_eval_loss=0.3)  # equal within float noise is not worse
    assert not worse_with_more_patience(same).any()


def test_threshold_table_puts_the_thresholded_run_beside_the_same_patience_without():
    versus = threshold_table(STOPS, patience=2)
    assert versus.index.tolist() == [1, 2]
    assert versus["stopped_with_threshold"].tolist() == [4, 5] and versus["stopped_without"].tolist() == [5, 4]


def test_long_returns_says_whether_each_long_run_returned_its_last_weights():
    runs = [epochs_run([4.0, 0.5, 0.6], [1.0, 0.5], seed=s) for s in (1, 2)]  # final eval loss 0.6
    back = long_returns(runs, [0.6, 0.5])
    assert back.index.tolist() == [1, 2] and back["returned_last"].tolist() == [True, False]
    assert back["final_eval_loss"].tolist() == [0.6, 0.6]


def test_plateau_table_reads_final_and_lowest_loss_per_seed_and_schedule():
    curves = pd.DataFrame({"seed": [1, 2, 1, 2], "lr_scheduler_type": ["constant"] * 2 + ["reduce_lr_on_plateau"] * 2,
                           "eval_loss_last": [0.9, 0.8, 0.5, 0.6], "eval_loss_best": [0.4, 0.45, 0.41, 0.44]})
    table = plateau_table(curves)
    assert table.index.tolist() == [1, 2]
    assert table["final_plateau"].tolist() == [0.5, 0.6] and table["final_constant"].tolist() == [0.9, 0.8]
    assert table["final_gain"].tolist() == pytest.approx([0.4, 0.2])
    assert table["minimum_gain"].tolist() == pytest.approx([-0.01, 0.01])


def test_lora_vs_full_puts_each_seeds_two_runs_side_by_side():
    full = curve_table([epochs_run([4.0, 0.5, 0.3, 0.6], [1.0, 0.4, 0.1], seed=s) for s in (1, 2)])
    lora = curve_table([epochs_run([4.0, 0.8, 0.5, 0.45], [2.0, 0.9, 0.6], seed=s) for s in (2, 1)])  # other order
    versus = lora_vs_full(full, lora)
    assert versus.index.tolist() == [1, 2]
    assert versus["lora_train_loss_epoch_1"].tolist() == [2.0, 2.0]
    assert versus["full_train_loss_min"].tolist() == [0.1, 0.1]
    assert versus["lora_best_epoch"].tolist() == [3, 3]
    assert versus["full_last_over_best"].tolist() == pytest.approx([2.0, 2.0])
