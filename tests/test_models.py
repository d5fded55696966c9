"""Pretraining cards (nbkit.core.models.pretraining_card): what chapter 1 compares the fine-tuning LR with."""
import json

import pytest

from nbkit.core.models import TINY_PATH, pretraining_card

CHAPTER_1_READS = {"peak_learning_rate", "lr_scheduler_type", "steps"}


def test_the_tiny_base_and_smollm2_have_a_card_with_what_chapter_1_reads():
    for model in ("tiny", "smollm2-135m"):
        card = pretraining_card(model)
        assert CHAPTER_1_READS <= set(card) and card["peak_learning_rate"] > 0 and card["steps"] > 0


def test_the_tiny_card_is_the_one_its_pretraining_script_wrote():
    assert pretraining_card("tiny") == json.loads((TINY_PATH / "pretrain.json").read_text())


def test_smollm2s_card_is_self_consistent_and_cites_its_source():
    card = pretraining_card("smollm2-135m")
    assert card["tokens_seen"] == card["steps"] * card["batch"] * card["seq_len"]
    assert card["warmup_steps"] + card["decay_steps"] < card["steps"]  # warmup, a stable phase, then decay
    assert card["source"].startswith("https://github.com/huggingface/smollm/")
    card["peak_learning_rate"] = 0  # a copy: the module's card stays as published
    assert pretraining_card("smollm2-135m")["peak_learning_rate"] > 0


def test_another_model_has_no_card_and_says_which_do():
    with pytest.raises(ValueError, match=r"model: 'Qwen/Qwen2.5-0.5B-Instruct' has no pretraining card here; "
                                         r"allowed: 'tiny', 'smollm2-135m'"):
        pretraining_card("Qwen/Qwen2.5-0.5B-Instruct")


def test_loading_a_model_draws_no_progress_bar_even_with_progress_bars_on(capfd):
    from transformers.utils import logging as hf_logging

    from nbkit.core.config import TrainConfig
    from nbkit.core.models import load_model

    was_on = hf_logging.is_progress_bar_enabled()
    model, _ = load_model(TrainConfig(disable_tqdm=False))  # what chapter 3's memory plan loads
    captured = capfd.readouterr()
    assert model is not None
    assert "Loading weights" not in captured.err + captured.out
    assert hf_logging.is_progress_bar_enabled() == was_on  # the global switch is put back


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_gradients_reach_the_first_layer_after_an_evaluation(bits):
    """bitsandbytes repacks 4-bit weights for a backward-less CPU kernel at the first no-grad pass
    (nbkit.core.models.keep_4bit_weights_trainable stops it): an epoch-0 evaluation must not cut the
    gradient of every later training step."""
    import torch

    from nbkit.core.config import TrainConfig
    from nbkit.core.models import load_model

    model, _ = load_model(TrainConfig(finetuning_type="lora", quantization_bit=bits, lora_rank=4))
    tokens = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))

    def first_layer_grad_norms():
        model.train()
        model.zero_grad()
        model(input_ids=tokens, labels=tokens).loss.backward()
        return [p.grad.norm().item() for n, p in model.named_parameters() if "layers.0." in n and "lora_B" in n]

    before = first_layer_grad_norms()
    model.eval()
    with torch.no_grad():
        model(input_ids=tokens)
    after = first_layer_grad_norms()
    assert before and all(b > 0 for b in before)
    assert after == pytest.approx(before, rel=1e-4)
