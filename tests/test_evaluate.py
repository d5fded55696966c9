"""Measures the chapters read off models and runs: held-out text loss (forgetting)."""
import pandas as pd
import pytest
import torch

from nbkit import TrainConfig
from nbkit.core.evaluate import heldout_text_loss, text_loss
from nbkit.core.models import load_model
from nbkit.core.runs import Run


@pytest.fixture(scope="module")
def tiny():
    return load_model(TrainConfig(disable_tqdm=True))


def test_the_base_knows_held_out_text_far_better_than_a_scrambled_copy(tiny):
    model, tokenizer = tiny
    base = heldout_text_loss(model, tokenizer)
    scrambled = load_model(TrainConfig(disable_tqdm=True))[0]
    with torch.no_grad():
        for p in scrambled.parameters():
            p.copy_(p[torch.randperm(p.shape[0])] if p.dim() > 1 else p)
    assert base < heldout_text_loss(scrambled, tokenizer) - 1.0  # at least one nat per token apart


def test_text_loss_does_not_depend_on_padding_or_batching(tiny):
    model, tokenizer = tiny
    texts = ["Ann ate the soup.", "The sum of 12 and 30 is 42. Bob met Ann at the park."]
    side = tokenizer.padding_side
    one_by_one = [text_loss(model, tokenizer, [t]) for t in texts]
    n_tokens = [len(tokenizer(t + tokenizer.eos_token, add_special_tokens=False)["input_ids"]) - 1 for t in texts]
    weighted = sum(loss * n for loss, n in zip(one_by_one, n_tokens)) / sum(n_tokens)
    assert text_loss(model, tokenizer, texts, batch_size=2) == pytest.approx(weighted, rel=1e-4)
    assert tokenizer.padding_side == side  # text_loss pads on the right, then puts it back


# ---------------------------------------------------------------- chapter 4: the curves of an epochs run

from nbkit.core.evaluate import best_per_seed, curve_facts, curve_table, stopping_table  # noqa: E402


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


# ---------------------------------------------------------------- chapter 2: weight decay in a sweep

def test_decay_effect_reads_each_decay_against_no_decay_at_the_same_lr_and_seed():
    from nbkit.core.evaluate import decay_effect
    grid = pd.DataFrame({"seed": [1, 1, 1, 1, 2, 2, 2, 2], "learning_rate": [1e-3, 1e-3, 1e-2, 1e-2] * 2,
                         "weight_decay": [0.0, 0.1] * 4, "best_eval_loss": [2.0, 3.0, 1.0, 1.5, 4.0, 4.0, 2.0, 1.0]})
    shift, cost = decay_effect(grid), decay_effect(grid, relative=True)
    assert shift.loc[(1, 0.1)].tolist() == [1.0, 0.5] and shift.loc[(2, 0.1)].tolist() == [0.0, -1.0]
    assert cost.loc[(1, 0.1)].tolist() == [0.5, 0.5] and cost.loc[(2, 0.1)].tolist() == [0.0, -0.5]
    assert list(shift.columns) == [1e-3, 1e-2]
    assert decay_effect(grid.drop(columns="seed").iloc[:4]).loc[(0, 0.1)].tolist() == [1.0, 0.5]  # one seed, no column
    with pytest.raises(ValueError, match="weight_decay 0"):
        decay_effect(grid[grid["weight_decay"] > 0])
    with pytest.raises(ValueError, match="learning_rate"):
        decay_effect(grid.drop(columns="learning_rate"))


def test_with_weight_norms_reads_the_weights_then_drops_them(tiny):
    from nbkit.core.evaluate import with_weight_norms
    from nbkit.core.models import weight_norm
    model, tokenizer = tiny
    run = Run(path="r", config={}, steps=pd.DataFrame(), epochs=pd.DataFrame(), summary={},
              model=model, tokenizer=tokenizer)
    table = pd.DataFrame({"weight_decay": [0.0]})
    table.attrs["runs"] = [run]
    out = with_weight_norms(table)
    assert out["weight_norm"].iloc[0] == pytest.approx(weight_norm(model)) and run.model is None
    with pytest.raises(ValueError, match="keep_models=True"):
        with_weight_norms(out)
