"""Unit tests of nbkit.core.data: built-in tasks, file loaders, label masking, split, collate."""

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from nbkit.core import data
from nbkit.core.i18n import set_language

TINY = Path(__file__).resolve().parents[1] / "data" / "tiny"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY)


def _user(example):
    return example["messages"][0]["content"]


def _answer(example):
    return example["messages"][-1]["content"]


# ---------------------------------------------------------------- generation

@pytest.mark.parametrize("task", sorted(data.TASKS))
def test_tasks_are_deterministic_and_seeded(task):
    assert data.load_examples(task, seed=0) == data.load_examples(task, seed=0)
    assert data.load_examples(task, seed=0) != data.load_examples(task, seed=1)


def test_corpus_text_is_deterministic_and_seeded():
    assert data.corpus_text(200, seed=0) == data.corpus_text(200, seed=0)
    assert data.corpus_text(200, seed=0) != data.corpus_text(200, seed=1)
    assert len(data.corpus_text(200, seed=0, sep="\x00").split("\x00")) == 200


def test_generation_does_not_touch_global_rng():
    import random
    random.seed(123)
    expected = random.random()
    random.seed(123)
    data.load_examples("reviews", seed=5)
    data.corpus_text(50, seed=5)
    assert random.random() == expected


def test_arithmetic_answers_are_the_sums_of_distinct_pairs():
    examples = data.load_examples("arithmetic")
    pairs = []
    for ex in examples:
        a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", _user(ex)).groups())
        assert 0 <= a <= 99 and 0 <= b <= 99
        assert _answer(ex) == str(a + b)
        pairs.append((a, b))
    assert len(set(pairs)) == len(pairs) == data.ARITHMETIC_SIZE


def test_corpus_states_sums_declaratively_and_never_asks():
    text = data.corpus_text(5000, seed=0)
    assert "?" not in text and "What is" not in text
    facts = re.findall(r"(\d+) plus (\d+) is (\d+)\.", text)
    assert facts, "the corpus should contain addition facts"
    assert all(int(a) + int(b) == int(c) for a, b, c in facts)
    for word in data.FOOD_GOOD + data.FOOD_BAD + data.STAFF_GOOD + data.STAFF_BAD:
        assert re.search(rf"\b{word}\b", text, re.IGNORECASE), f"review word {word!r} not in corpus"


def test_corpus_reviews_are_labelled_correctly():
    docs = data.corpus_text(3000, seed=0, sep="\x00").split("\x00")
    labelled = [d.removeprefix("Review: ").split("\n") for d in docs if d.startswith("Review: ")]
    assert labelled, "the corpus should contain labelled reviews"
    assert all(data.review_sentiment(review) == label for review, label in labelled)


def test_reviews_label_noise_is_the_stated_fraction():
    examples = data.load_examples("reviews")
    reviews = [_user(ex).split("\n")[0].removeprefix("Review: ") for ex in examples]
    wrong = sum(data.review_sentiment(r) != _answer(ex) for r, ex in zip(reviews, examples))
    assert wrong == round(data.REVIEWS_LABEL_NOISE * len(examples))
    assert {_answer(ex) for ex in examples} == {"positive", "negative"}
    clean_positive = sum(data.review_sentiment(r) == "positive" for r in reviews)
    assert clean_positive == len(examples) // 2  # balanced before the flips


def test_corpus_task_is_held_out_text():
    examples = data.load_examples("corpus")
    pretraining = set(data.corpus_text(20000, seed=0).split("\n"))
    for ex in examples:
        assert _user(ex).startswith("Continue the text: ") and _answer(ex)
    # Its passages come from another seed: most of their sentences are not pretraining lines
    # (short facts like "23 plus 45 is 68." can coincide by chance).
    sentences = [s + "." for ex in examples for s in _answer(ex).split(". ")
                 if s.endswith(tuple("abcdefghijklmnopqrstuvwxyz"))]
    seen = sum(s.rstrip(".") + "." in pretraining for s in sentences)
    assert seen < len(sentences) / 2


def test_task_metric():
    assert data.task_metric("arithmetic") == "exact_match"
    assert data.task_metric("reviews") == "exact_match"
    assert data.task_metric("corpus") is None
    assert data.task_metric("my_file.jsonl") is None


# ---------------------------------------------------------------- loading

def _write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_load_alpaca(tmp_path):
    path = _write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "Translate", "input": "hello", "output": "bonjour"},
        {"instruction": "Say hi", "output": "hi", "system": "Be brief."},
    ])
    examples = data.load_examples(path)
    assert examples[0]["messages"] == [{"role": "user", "content": "Translate\n\nhello"},
                                       {"role": "assistant", "content": "bonjour"}]
    assert [m["role"] for m in examples[1]["messages"]] == ["system", "user", "assistant"]


def test_load_sharegpt_and_messages(tmp_path):
    path = _write_jsonl(tmp_path / "s.jsonl", [
        {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q1"},
                           {"from": "gpt", "value": "A1"}, {"from": "human", "value": "Q2"},
                           {"from": "gpt", "value": "A2"}]},
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
    ])
    examples = data.load_examples(path)
    assert [m["role"] for m in examples[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert [m["content"] for m in examples[0]["messages"]] == ["S", "Q1", "A1", "Q2", "A2"]
    assert examples[1]["messages"][1] == {"role": "assistant", "content": "A"}


@pytest.mark.parametrize("bad", ['{"instruction": "x"', '{"instruction": "x"}', '[1, 2]',
                                 '{"conversations": [{"from": "robot", "value": "x"}]}',
                                 '{"messages": [{"role": "user", "content": "only a question"}]}'])
def test_malformed_line_names_file_and_line(tmp_path, bad):
    good = json.dumps({"instruction": "a", "output": "b"})
    path = _write_jsonl(tmp_path / "bad.jsonl", [good, "", bad])
    with pytest.raises(ValueError, match=re.escape(f"{path}:3:")) as info:
        data.load_examples(path)
    assert "expected" in str(info.value)


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(ValueError) as info:
        data.load_examples("arithmetc")
    message = str(info.value)
    assert all(name in message for name in data.TASKS)
    assert "Did you mean 'arithmetic'" in message


# ---------------------------------------------------------------- split, tokenize, collate

def test_split_sizes_and_determinism():
    examples = data.load_examples("reviews")
    n = len(examples)
    train, val = data.split_examples(examples, 0.2, seed=0)
    assert len(val) == round(0.2 * n) and len(train) + len(val) == n
    assert sorted(map(json.dumps, train + val)) == sorted(map(json.dumps, examples))
    assert data.split_examples(examples, 0.2, seed=0) == (train, val)
    assert data.split_examples(examples, 0.2, seed=1) != (train, val)
    train, val = data.split_examples(examples, 7, seed=0)
    assert len(val) == 7 and len(train) == n - 7
    for bad in (0.0, 1.0, 0, n, -3, True):
        with pytest.raises(ValueError, match="val_size"):
            data.split_examples(examples, bad, seed=0)


def _unmasked(feature):
    return [t for t, label in zip(feature["input_ids"], feature["labels"]) if label != data.IGNORE_INDEX]


@pytest.mark.parametrize("task", ["arithmetic", "reviews", "corpus", "facts"])
def test_labels_cover_exactly_the_answer_and_its_end_token(tokenizer, task):
    for ex in data.load_examples(task)[:20]:
        feature = data.tokenize_example(ex, tokenizer, max_seq_length=256)
        assert len(feature["input_ids"]) == len(feature["labels"])
        assert tokenizer.decode(_unmasked(feature)) == _answer(ex) + tokenizer.eos_token
        assert tokenizer.decode(feature["input_ids"]) == tokenizer.apply_chat_template(ex["messages"], tokenize=False)


def test_labels_in_a_multi_turn_conversation(tokenizer):
    ex = {"messages": [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "first answer"},
                       {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "second answer"}]}
    feature = data.tokenize_example(ex, tokenizer, max_seq_length=256)
    eos = tokenizer.eos_token
    assert tokenizer.decode(_unmasked(feature)) == f"first answer{eos}second answer{eos}"


def test_prompt_tokens_match_generation_time(tokenizer):
    ex = data.load_examples("arithmetic")[0]
    prompt, reference = data.prompt_and_reference(ex)
    feature = data.tokenize_example(ex, tokenizer, max_seq_length=256)
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys"):
        prompt_ids = prompt_ids["input_ids"]
    assert feature["input_ids"][: len(prompt_ids)] == list(prompt_ids)
    assert all(label == data.IGNORE_INDEX for label in feature["labels"][: len(prompt_ids)])


def test_truncation(tokenizer):
    ex = data.load_examples("corpus")[0]
    full = data.tokenize_example(ex, tokenizer, max_seq_length=10_000)
    short = data.tokenize_example(ex, tokenizer, max_seq_length=len(full["input_ids"]) - 3)
    assert short["input_ids"] == full["input_ids"][:-3] and short["labels"] == full["labels"][:-3]


def test_collate_right_pads(tokenizer):
    features = [data.tokenize_example(ex, tokenizer, 256) for ex in data.load_examples("corpus")[:4]]
    batch = data.collate(features, tokenizer.pad_token_id)
    width = max(len(f["input_ids"]) for f in features)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (4, width)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == f["input_ids"]
        assert batch["labels"][row, :n].tolist() == f["labels"]
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        assert (batch["labels"][row, n:] == data.IGNORE_INDEX).all()
    assert batch["input_ids"].dtype == torch.long


# ---------------------------------------------------------------- evaluation helpers

def test_prompt_and_reference_and_exact_match():
    ex = {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                       {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}
    prompt, reference = data.prompt_and_reference(ex)
    assert prompt == ex["messages"][:3] and reference == "A2"
    assert data.exact_match("  Negative \n", "negative")
    assert data.exact_match("68.", "68")
    assert not data.exact_match("69", "68")
    assert not data.exact_match("6 8", "68")


def test_chat_template_format(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == \
        "<|user|>\nhi<|end|>\n<|assistant|>\nyo<|end|>\n"
    assert tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True) == \
        "<|user|>\nhi<|end|>\n<|assistant|>\n"
    assert tokenizer.eos_token == "<|end|>" and tokenizer.pad_token == "<|pad|>"


# ---------------------------------------------------------------- the tiny tokenizer

def test_tokenizer_round_trips_any_text_and_splits_digits(tokenizer):
    text = "Crème brûlée, 東京 and 😀: 12345 + 678 = 13023."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    digits = [t for t in tokenizer.tokenize("12345 + 678") if any(c.isdigit() for c in t)]
    assert digits == list("12345678")


def test_tokenizer_special_tokens(tokenizer):
    for token in ("<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id or token == tokenizer.unk_token
        assert tokenizer.tokenize(token) == [token]


def test_refusals_in_chinese(tmp_path):
    """In Chinese (nbkit.po) a bad file's message still starts with FILE:LINE and shows the formats' JSON as is."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": []}\n')
    set_language("zh")
    try:
        with pytest.raises(data.DataFileError) as info:
            data.load_jsonl(path)
        assert str(info.value) == (f"{path}:1: 'messages' 必须是非空列表（应为每行一个 JSON 对象：Alpaca "
                                   '{"instruction", "input"?, "output", "system"?}、ShareGPT {"conversations": '
                                   '[{"from", "value"}]} 或 {"messages": [{"role", "content"}]}）')
        with pytest.raises(ValueError) as info:
            data.load_examples("arithmatic")
        assert str(info.value) == ("未知的数据集 'arithmatic'：请使用 ['arithmetic', 'corpus', 'facts', 'reviews'] "
                                   "之一，或 .jsonl 文件的路径。你是不是想写 'arithmetic'？")
    finally:
        set_language("en")
