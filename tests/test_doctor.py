"""nbkit.views.doctor: each diagnosis on constructed curves (exact, fast), then on real tiny runs made
to show it (the doctor must read what training really produces, not only our idea of it)."""
import math

import numpy as np
import pandas as pd
import pytest

from nbkit import TrainConfig, train
from nbkit.core.runs import Run
from nbkit.views.doctor import (FLAT_FRACTION, IMPROVING_FALL, NOISY_SCATTER, OVERFIT_RISE, best_evaluation, diagnose,
                                report, scatter, verdicts)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def fake_run(step_losses, eval_losses, train_losses=None, status="completed", accuracy=None, **summary) -> Run:
    """A Run from curves: eval_losses[0] is the base model (epoch 0), one more per epoch."""
    steps = pd.DataFrame({"step": range(1, len(step_losses) + 1), "loss": step_losses})
    epochs = pd.DataFrame()  # before the first evaluation: no rows yet
    if eval_losses:
        epochs = pd.DataFrame({"epoch": range(len(eval_losses)), "eval_loss": eval_losses,
                               "train_loss": [math.nan] + list(train_losses or [math.nan] * (len(eval_losses) - 1))})
    if accuracy is not None:
        epochs["eval_accuracy"] = accuracy
    config = {"learning_rate": 1e-3, "per_device_train_batch_size": 16, "num_train_epochs": len(eval_losses) - 1}
    return Run(path=None, config=config, steps=steps, epochs=epochs, summary={"status": status, **summary})


def names(run) -> list[str]:
    return [d.name for d in diagnose(run)]


def smooth_fall(n=40, start=4.0, end=0.5) -> list[float]:
    """A noiseless exponential fall from start towards end over n steps."""
    return list(end + (start - end) * np.exp(-np.arange(n) / (n / 6)))


# ------------------------------------------------------------------ constructed curves

def test_diverged_names_the_step_and_says_lower_the_lr():
    run = fake_run([4.0, 3.5, 90.0], [4.2], status="diverged", diverged_at_step=3)
    [d] = diagnose(run)
    assert d.name == "diverged"
    assert "step 3" in d.message and "90" in d.message
    assert "lower the learning rate" in d.advice and "warmup" in d.advice and "clipping" in d.advice


def test_a_non_finite_loss_is_divergence_even_without_the_status():
    assert names(fake_run([4.0, 3.0, math.nan], [4.2])) == ["diverged"]


def test_flat_from_the_start_says_raise_the_lr():
    losses = [4.0 - 0.001 * i for i in range(30)]  # 0.7% of the loss gone: far under FLAT_FRACTION
    run = fake_run(losses, [4.1, 4.09, 4.08], [4.0, 3.99])
    [d] = diagnose(run)
    assert d.name == "flat" and "raise the learning rate" in d.advice
    assert "4.1" in d.message  # the validation evidence is named


def test_slow_validation_progress_is_not_flat():
    losses = [4.0 - 0.001 * i for i in range(30)]
    base = 4.1
    run = fake_run(losses, [base, base * (1 - 2 * FLAT_FRACTION)], [4.0])
    assert "flat" not in names(run)


def test_overfitting_names_the_best_epoch_the_rise_and_the_first_bad_epoch():
    run = fake_run(smooth_fall(), [4.0, 1.0, 0.6, 0.7, 0.9], [2.0, 0.8, 0.5, 0.3])
    [d] = diagnose(run)
    assert d.name == "over-fitting"
    assert "epoch 2 (0.6)" in d.message and "0.9" in d.message and "from epoch 3" in d.message
    assert "stop at epoch 2" in d.advice and "regularisation" in d.advice


def test_an_early_stopped_run_is_told_whether_its_best_weights_came_back():
    curves = (smooth_fall(), [4.0, 1.0, 0.6, 0.7, 0.9], [2.0, 0.8, 0.5, 0.3])
    [restored] = diagnose(fake_run(*curves, status="early_stopped", best_epoch=2, restored_best=True))
    assert "early stopping ended the run at epoch 4" in restored.message
    assert "nothing to change" in restored.advice and "epoch 2's" in restored.advice
    [last] = diagnose(fake_run(*curves, status="early_stopped", best_epoch=2, restored_best=False))
    assert "load_best_model_at_end=True" in last.advice
    threshold = fake_run(*curves, status="early_stopped", best_epoch=1, restored_best=True)
    threshold.config["early_stopping_threshold"] = 0.5
    assert "early_stopping_threshold=0.5 did not count that gain" in diagnose(threshold)[0].advice


def test_a_rise_within_the_threshold_is_not_overfitting():
    best = 0.6
    run = fake_run(smooth_fall(), [4.0, 1.0, best, best * (1 + OVERFIT_RISE / 2)], [2.0, 0.8, 0.5])
    assert "over-fitting" not in names(run)


def test_validation_up_while_training_also_up_is_not_overfitting():
    run = fake_run(smooth_fall(), [4.0, 1.0, 0.6, 0.9], [2.0, 0.8, 0.9])
    assert "over-fitting" not in names(run)


def test_overfitting_notes_where_accuracy_disagrees_on_the_best_epoch():
    run = fake_run(smooth_fall(), [4.0, 1.0, 0.6, 0.9], [2.0, 0.8, 0.4], accuracy=[0.0, 0.5, 0.6, 0.7])
    [d] = diagnose(run)
    assert "accuracy peaked later, at epoch 3" in d.message and "disagree" in d.message
    agree = fake_run(smooth_fall(), [4.0, 1.0, 0.6, 0.9], [2.0, 0.8, 0.4], accuracy=[0.0, 0.5, 0.7, 0.6])
    assert "disagree" not in diagnose(agree)[0].message


def test_still_improving_at_the_end_says_train_longer():
    run = fake_run(smooth_fall(), [4.0, 2.0, 1.5, 1.2], [3.0, 1.8, 1.3])
    [d] = diagnose(run)
    assert d.name == "still improving"
    assert "1.5" in d.message and "1.2" in d.message and "epoch 3" in d.message
    assert "train longer" in d.advice and "3" in d.advice


def test_a_run_in_flight_that_improves_is_told_to_go_on():
    run = fake_run(smooth_fall(), [4.0, 2.0], [3.0], status="running")
    [d] = diagnose(run)
    assert d.name == "still improving" and "let it run" in d.advice


def test_a_run_stopped_while_improving_is_told_to_let_it_finish():
    run = fake_run(smooth_fall(), [4.0, 2.0, 1.5], [3.0, 1.8], status="interrupted")
    assert "let it finish" in diagnose(run)[0].advice


def test_levelled_off_is_healthy_and_names_the_best_epoch():
    last = 1.0 * (1 - IMPROVING_FALL / 2)  # better than before, but by less than IMPROVING_FALL
    run = fake_run(smooth_fall(), [4.0, 1.5, 1.0, last], [2.0, 1.2, 1.0])
    [d] = diagnose(run)
    assert d.name == "healthy" and "epoch 3" in d.message


def test_noisy_measures_scatter_against_the_fall_of_the_loss():
    rng = np.random.default_rng(0)
    clean = smooth_fall(60)
    fall = np.mean(clean[:3]) - np.mean(clean[30:])
    noisy = list(np.array(clean) + rng.normal(0, 2 * NOISY_SCATTER * fall, 60) * (np.arange(60) >= 30))
    assert scatter(clean) < NOISY_SCATTER < scatter(noisy)
    run = fake_run(noisy, [4.0, 1.5, 1.0, 1.0], [2.0, 1.2, 1.0])
    assert "noisy" in names(run)
    d = next(d for d in diagnose(run) if d.name == "noisy")
    assert "step 31" in d.message and "bigger batch" in d.advice and "lower learning rate" in d.advice
    assert "noisy" not in names(fake_run(clean, [4.0, 1.5, 1.0, 1.0], [2.0, 1.2, 1.0]))


def test_too_few_steps_to_judge_noise():
    assert math.isnan(scatter([4.0, 1.0, 3.0, 0.5]))


def test_best_evaluation_and_report():
    run = fake_run(smooth_fall(), [4.0, 1.0, 0.6, 0.9], [2.0, 0.8, 0.4])
    assert best_evaluation(run) == (2, 0.6)
    assert report(run).startswith("over-fitting: ")
    assert best_evaluation(fake_run([4.0], [])) is None


def test_a_run_before_any_evaluation_gets_a_verdict():
    [d] = diagnose(fake_run([4.0, 3.9], [], status="running"))
    assert d.name == "healthy" and "let it run" in d.advice


# ------------------------------------------------------------------ real runs made to show each


def real(tmp_path, **kw):
    base = dict(dataset="reviews", disable_tqdm=True, predict_with_generate=False, lr_scheduler_type="constant",
                output_dir=str(tmp_path / "runs"))
    return train(TrainConfig(**{**base, **kw}))


def test_real_huge_lr_is_diagnosed_diverged(tmp_path):
    run = real(tmp_path, learning_rate=1.0, num_train_epochs=1)
    assert names(run) == ["diverged"]


def test_real_tiny_lr_is_diagnosed_flat(tmp_path):
    run = real(tmp_path, learning_rate=1e-7, num_train_epochs=2)
    assert names(run) == ["flat"]


def test_real_long_reviews_run_is_diagnosed_overfitting(tmp_path):
    # reviews (25% flipped labels) over-fits within a few epochs at the default LR
    run = real(tmp_path, num_train_epochs=8)
    assert "over-fitting" in names(run)
    d = diagnose(run)[0]
    assert f"lowest at epoch {run.best_epoch} " in d.message


def test_real_one_epoch_of_arithmetic_is_still_improving(tmp_path):
    run = real(tmp_path, dataset="arithmetic", max_samples=400, num_train_epochs=1)
    assert names(run) == ["still improving"]


def test_real_batch_size_one_is_diagnosed_noisy(tmp_path):
    run = real(tmp_path, per_device_train_batch_size=1, max_samples=40, num_train_epochs=1)
    assert "noisy" in names(run)


def test_real_default_batch_is_not_noisy(tmp_path):
    run = real(tmp_path, max_samples=40, num_train_epochs=4)
    assert "noisy" not in names(run)


def test_real_levelled_off_lora_run_is_healthy(tmp_path):
    # LoRA at 10x the full fine-tune's LR, linear decay over 10 epochs: it reaches the label-noise
    # floor and the decayed LR keeps it there (last gain ~0.03%, no rise: far from both limits)
    run = real(tmp_path, finetuning_type="lora", learning_rate=1e-2, lr_scheduler_type="linear", num_train_epochs=10)
    assert names(run) == ["healthy"]


def test_verdicts_table_has_a_row_per_run():
    runs = [fake_run(smooth_fall(), [4.0, 1.0, 0.6, 0.9], [2.0, 0.8, 0.4], best_epoch=2),
            fake_run([4.0, 3.5, 90.0], [4.2], status="diverged", diverged_at_step=3)]
    for i, run in enumerate(runs):
        run.config["run_name"] = f"r{i}"
    table = verdicts(runs)
    assert list(table["diagnosis"]) == ["over-fitting", "diverged"]
    assert list(table["run"]) == ["r0", "r1"] and table.loc[0, "best_epoch"] == 2
    assert table.loc[1, "advice"].startswith("lower the learning rate")
    from nbkit.core.i18n import set_language

    set_language("zh")
    try:
        chinese = verdicts(runs)
    finally:
        set_language("en")
    assert list(chinese["diagnosis"]) == ["过拟合", "发散"] and chinese.loc[1, "status"] == "发散"  # a table to read


def test_the_doctor_speaks_chinese():
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): words in Chinese, names and epochs as keys."""
    from nbkit.core.i18n import set_language

    run = fake_run(smooth_fall(), [4.0, 1.0, 0.6, 0.7, 0.9], [2.0, 0.8, 0.5, 0.3])
    set_language("zh")
    try:
        [d] = diagnose(run)
        assert d.name == "over-fitting" and d.label == "过拟合"  # the name stays the key code compares
        assert (d.best_epoch, d.from_epoch) == (2, 3)  # what code checks, whatever the language of the words
        assert "在第 2 轮次最低" in d.message and "从第 3 轮次起过拟合" in d.message
        assert "在第 2 轮次停止" in d.advice and "正则化" in d.advice
        assert report(run).startswith("过拟合：")
        [diverged] = diagnose(fake_run([4.0, 3.5, 90.0], [4.2], status="diverged", diverged_at_step=3))
        assert "损失在第 3 步爆炸" in diverged.message and diverged.advice.startswith("降低学习率（原为 0.001）")
        set_language("en")
        assert report(run).startswith("over-fitting: validation loss was lowest at epoch 2 (0.6)")
    finally:
        set_language("en")
