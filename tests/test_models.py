"""Pretraining cards (nbkit.models.pretraining_card): what chapter 1 compares the fine-tuning LR with."""
import pytest

from nbkit.models import pretraining_card

CHAPTER_1_READS = {"peak_learning_rate", "lr_scheduler_type", "steps"}


def test_the_tiny_base_and_smollm2_have_a_card_with_what_chapter_1_reads():
    for model in ("tiny", "smollm2-135m"):
        card = pretraining_card(model)
        assert CHAPTER_1_READS <= set(card) and card["peak_learning_rate"] > 0
    # SmolLM2-135M's published nanotron config: AdamW at 3e-3, 2M steps of 512 x 2048 tokens
    assert pretraining_card("smollm2-135m")["peak_learning_rate"] == 3e-3
    assert pretraining_card("smollm2-135m")["tokens_seen"] == 2_000_000 * 512 * 2048


def test_another_model_has_no_card_and_says_which_do():
    with pytest.raises(ValueError, match=r"model: 'Qwen/Qwen2.5-0.5B-Instruct' has no pretraining card here; "
                                         r"allowed: 'tiny', 'smollm2-135m'"):
        pretraining_card("Qwen/Qwen2.5-0.5B-Instruct")
