"""nbkit.labs.ch00_quickstart: the quickstart's table of what fine-tuning changed (on hand-built runs)."""
import pandas as pd
import pytest

from nbkit.core.runs import Run
from nbkit.labs.ch00_quickstart import questions_scored, quickstart_table


def quick_run(seed, train_losses, cap=200, held_out=60) -> Run:
    epochs = pd.DataFrame({"epoch": range(len(train_losses) + 1), "train_loss": [float("nan")] + train_losses})
    summary = {"base_eval_accuracy": 0.1, "final_eval_accuracy": 0.1 * seed, "base_eval_loss": 3.0,
               "final_eval_loss": 1.0 + seed, "num_val_examples": held_out}
    return Run(path=f"/runs/seed{seed}", config={"seed": seed, "eval_generate_samples": cap}, steps=pd.DataFrame(),
               epochs=epochs, summary=summary)


def test_questions_scored_is_capped_by_eval_generate_samples_and_by_the_questions_there_are():
    assert questions_scored(quick_run(1, [1.0], cap=200, held_out=60)) == 60
    assert questions_scored(quick_run(1, [1.0], cap=20, held_out=60)) == 20
    assert questions_scored(quick_run(1, [1.0], cap=None, held_out=60)) == 60  # None: every question


def test_quickstart_table_has_a_row_per_seed_in_the_runs_order():
    runs = [quick_run(43, [2.0, 1.5, 1.2]), quick_run(42, [2.5, 2.6])]
    table = pd.DataFrame({"seed": [42, 43], "path": [runs[1].path, runs[0].path]})  # a sweep's rows, found by path
    table.attrs["runs"] = runs
    facts = quickstart_table(table)
    assert facts.index.tolist() == [42, 43]
    assert facts["first_epoch_train_loss"].tolist() == [2.5, 2.0]  # epoch 0, the base model, has none
    assert facts["final_train_loss"].tolist() == [2.6, 1.2]
    assert facts["final_eval_accuracy"].tolist() == pytest.approx([4.2, 4.3])
    assert facts["final_eval_loss"].tolist() == [43.0, 44.0] and facts["questions_scored"].tolist() == [60, 60]
