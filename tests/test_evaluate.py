"""Measures the chapters read off models and runs: held-out text loss (forgetting) and the
early rise of the loss (what warmup prevents)."""
import pandas as pd
import pytest
import torch

from nbkit import TrainConfig
from nbkit.evaluate import early_damage, early_loss_rise, heldout_text_loss, text_loss
from nbkit.models import load_model
from nbkit.runs import Run


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
    weighted = sum(l * n for l, n in zip(one_by_one, n_tokens)) / sum(n_tokens)
    assert text_loss(model, tokenizer, texts, batch_size=2) == pytest.approx(weighted, rel=1e-4)
    assert tokenizer.padding_side == side  # text_loss pads on the right, then puts it back


def fake_run(losses) -> Run:
    steps = pd.DataFrame({"step": range(1, len(losses) + 1), "loss": losses})
    return Run(path=None, config={}, steps=steps, epochs=pd.DataFrame(), summary={"status": "completed"})


def test_early_loss_rise_measures_the_jump_above_the_first_loss_in_the_first_quarter():
    assert early_loss_rise(fake_run([5.0, 7.5, 6.0, 4.0] + [3.0] * 12)) == pytest.approx(2.5)
    assert early_loss_rise(fake_run([5.0, 4.0, 3.0, 2.0] + [9.0] * 12)) == pytest.approx(-1.0)  # later jumps don't count


def test_early_damage_reads_the_smoothed_climb_and_the_mean_of_the_first_quarter():
    # 16 steps: the first quarter after step 1 is steps 2-4 (3 losses), averaged over windows of 3
    damage = early_damage(fake_run([5.0, 9.0, 6.0, 9.0] + [1.0] * 12))
    assert damage["steps"] == 3
    assert damage["rise"] == pytest.approx(8.0 - 5.0)  # (9 + 6 + 9) / 3, not the single 9
    assert damage["mean_ratio"] == pytest.approx(8.0 / 5.0)
    falling = early_damage(fake_run([5.0, 4.0, 3.0, 2.0] + [9.0] * 12))  # later jumps don't count
    assert falling["rise"] == pytest.approx(-2.0) and falling["mean_ratio"] == pytest.approx(0.6)


def test_early_damage_of_a_short_run_uses_the_steps_it_has():
    damage = early_damage(fake_run([4.0, 6.0, 1.0, 1.0]))  # a quarter of 4 steps: step 2 alone
    assert damage == {"rise": pytest.approx(2.0), "mean_ratio": pytest.approx(1.5), "steps": 1}
    with pytest.raises(ValueError, match="window"):
        early_damage(fake_run([4.0, 6.0]), window=0)
