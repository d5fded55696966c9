"""nbkit.core.evaluate: the held-out text loss (forgetting) the chapters read off a model."""
import pytest
import torch

from nbkit import TrainConfig
from nbkit.core.evaluate import heldout_text_loss, text_loss
from nbkit.core.models import load_model


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
