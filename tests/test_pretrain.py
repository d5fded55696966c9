"""nbkit.core.pretrain, the script that built the embedded tiny base (data/tiny): its tokenizer (digits one
per token, any text round-trips, the chat template), its schedule, its batches, its arithmetic probe (equal
to greedy exact match, as it says), and the committed base's config and card being what it writes. Nothing
here pretrains: the pieces are checked on small inputs and on the committed model."""
import itertools
import json
import random

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from nbkit.core.data import corpus_sentences
from nbkit.core.models import TINY_PATH
from nbkit.core.pretrain import (SPECIAL_TOKENS, arithmetic_probe, get_batch, lr_at, make_config, model_card,
                                 train_tokenizer)


@pytest.fixture(scope="module")
def small_tokenizer():
    return train_tokenizer("\n".join(itertools.islice(corpus_sentences(0), 300)), vocab_size=400)


@pytest.fixture(scope="module")
def tiny():
    return AutoModelForCausalLM.from_pretrained(TINY_PATH), AutoTokenizer.from_pretrained(TINY_PATH)


def test_the_tokenizer_splits_digits_one_per_token(small_tokenizer):
    ids = small_tokenizer("12345", add_special_tokens=False)["input_ids"]
    assert [small_tokenizer.decode([i]) for i in ids] == list("12345")


@pytest.mark.parametrize("text", ["The sum of 23 and 45 is 68.", "naïve café, 東京 ✓", "  two  spaces\nand a tab\t"])
def test_any_text_round_trips_through_the_tokenizer(small_tokenizer, text):
    ids = small_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert small_tokenizer.decode(ids) == text


def test_special_tokens_are_single_tokens_and_the_chat_template_renders_each_role(small_tokenizer):
    for token in SPECIAL_TOKENS:
        assert len(small_tokenizer(token, add_special_tokens=False)["input_ids"]) == 1, token
    assert small_tokenizer.eos_token == "<|end|>" and small_tokenizer.pad_token == "<|pad|>"
    text = small_tokenizer.apply_chat_template([{"role": "user", "content": "2 + 2?"}], tokenize=False,
                                               add_generation_prompt=True)
    assert text == "<|user|>\n2 + 2?<|end|>\n<|assistant|>\n"


def test_the_schedule_warms_up_linearly_then_decays_by_a_cosine_to_its_floor():
    peak, warmup, total, floor = 3e-3, 10, 110, 0.1
    lrs = [lr_at(step, peak, warmup, total, floor) for step in range(total + 1)]
    assert lrs[:warmup] == pytest.approx([peak * (s + 1) / warmup for s in range(warmup)])
    assert lrs[warmup] == pytest.approx(peak) and lrs[-1] == pytest.approx(floor * peak)
    assert lrs[warmup + 50] == pytest.approx(peak * (floor + (1 - floor) / 2))  # half-way: the cosine's middle
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))


def test_a_batch_is_windows_of_the_stream_and_its_targets_the_next_tokens():
    data = torch.arange(100)
    x, y = get_batch(data, batch_size=8, seq_len=16, rng=random.Random(0))
    assert x.shape == y.shape == (8, 16)
    assert torch.equal(y, x + 1)  # on 0, 1, 2, ...: the target is the token after each input
    assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # contiguous windows


def test_the_committed_base_is_make_configs_default_shape(tiny):
    _, tokenizer = tiny
    made, committed = make_config(tokenizer), AutoConfig.from_pretrained(TINY_PATH)
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "max_position_embeddings", "tie_word_embeddings", "bos_token_id",
                "eos_token_id", "pad_token_id"):
        assert getattr(made, key) == getattr(committed, key), key


def test_the_committed_card_is_what_pretrain_writes_from_its_facts():
    facts = json.loads((TINY_PATH / "pretrain.json").read_text())
    assert model_card(facts) == (TINY_PATH / "README.md").read_text()


def greedy_sum_is_right(model, tokenizer, a, b) -> bool:
    ids = tokenizer(f"The sum of {a} and {b} is", return_tensors="pt", add_special_tokens=False).input_ids
    answer = tokenizer(f" {a + b}.", add_special_tokens=False)["input_ids"]
    out = model.generate(ids, max_new_tokens=len(answer), do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist() == answer


def test_the_arithmetic_probe_is_greedy_exact_match(tiny):
    model, tokenizer = tiny
    pairs = [(a, b) for a in (3, 27, 58, 91) for b in (0, 9, 44, 76)]
    expected = [greedy_sum_is_right(model, tokenizer, a, b) for a, b in pairs]
    assert [arithmetic_probe(model, tokenizer, pairs=[pair]) for pair in pairs] == [float(e) for e in expected]
    assert arithmetic_probe(model, tokenizer, pairs=pairs) == pytest.approx(sum(expected) / len(pairs))
    model.train()  # the probe evaluates, then leaves the model as it found it
    arithmetic_probe(model, tokenizer, pairs=pairs[:2])
    assert model.training
