"""Datasets: a small generated "world" of English text, the built-in tasks, user files.

Everything here is seeded and deterministic: each generator takes a `seed` and draws from its
own `random.Random(seed)`, never from global RNG state.

The world text (`corpus_text`) is what the tiny base model is pretrained on (`nbkit.core.pretrain`).
It states addition facts in declarative forms only ("23 plus 45 is 68."), talks about food and
staff in restaurants, and tells short stories. The instruction tasks reuse that vocabulary in a
chat format the base model has never seen, so fine-tuning has something real to teach.
"""

import difflib
import json
import os
import random

from nbkit.core.i18n import N_, _

IGNORE_INDEX = -100  # label value that torch's cross-entropy skips (Hugging Face convention)

TASKS = {
    "arithmetic": "add two numbers 0..99 ('What is 23 + 45?' -> '68'); metric: exact match",
    "reviews": "small, noisy sentiment task (some labels flipped) that over-fits; metric: exact match",
    "corpus": "held-out world text ('Continue the text: ...'); measures forgetting; no metric",
    "facts": "knowledge-heavy: invented facts to memorise ('How many books does Mia have?' -> '37'), "
             "each fact asked in 3 phrasings; metric: exact match",
}

# --------------------------------------------------------------------------------------------
# The world: vocabulary and sentence templates

NAMES = ["Anna", "Ben", "Mia", "Tom", "Lena", "Omar", "Sara", "Leo", "Nora", "Sam", "Ivy", "Max"]
PLACES = ["the market", "the park", "the school", "the river", "the library", "the beach",
          "the garden", "the station", "the bakery", "the farm"]
THINGS = ["apples", "books", "flowers", "eggs", "pens", "cookies", "shells", "stamps", "cards"]
ANIMALS = ["cat", "dog", "bird", "horse", "fox", "rabbit", "duck", "goat"]
COLORS = ["red", "blue", "green", "yellow", "white", "black", "brown"]
ACTIONS = ["ran to", "walked to", "looked at", "slept near", "played in", "jumped over"]
TIMES = ["In the morning", "After lunch", "In the evening", "On Sunday", "Later that day"]

FOODS = ["soup", "pizza", "bread", "salad", "pasta", "fish", "steak", "cake", "coffee", "tea",
         "rice", "burger", "pie", "curry", "noodles"]
STAFF = ["staff", "waiter", "waitress", "chef", "owner", "manager", "service", "host"]
PLACES_TO_EAT = ["the cafe", "the diner", "the restaurant", "the bistro", "the pub", "the bar"]
FOOD_GOOD = ["delicious", "fresh", "hot", "tasty", "perfect", "great", "lovely", "excellent"]
FOOD_BAD = ["cold", "stale", "bland", "burnt", "awful", "salty", "soggy", "terrible"]
STAFF_GOOD = ["kind", "friendly", "polite", "helpful", "quick", "warm", "cheerful", "patient"]
STAFF_BAD = ["rude", "slow", "careless", "unfriendly", "lazy", "grumpy", "impolite", "late"]


SMALL_OPERAND_SHARE = 0.25  # operands 0..9 are 1% of uniform pairs; oversampled so "3 + 4" works too


def _operand(rng):
    return rng.randint(0, 9) if rng.random() < SMALL_OPERAND_SHARE else rng.randint(0, 99)


def _addition_fact(rng):
    """A declarative addition fact. Never a question: the chat Q/A format is for fine-tuning."""
    a, b = _operand(rng), _operand(rng)
    form = rng.randrange(5)
    if form == 0:
        return f"{a} plus {b} is {a + b}."
    if form == 1:
        return f"The sum of {a} and {b} is {a + b}."
    if form == 2:
        return f"{a} + {b} = {a + b}."
    if form == 3:
        return f"Adding {a} and {b} gives {a + b}."
    return f"If you add {b} to {a}, you get {a + b}."


def _food_sentence(rng):
    """Restaurant talk: the words of the `reviews` task, and which of them are good or bad."""
    food, staff, place = rng.choice(FOODS), rng.choice(STAFF), rng.choice(PLACES_TO_EAT)
    form = rng.randrange(5)
    if form == 0:
        return f"At {place}, the {food} was {rng.choice(FOOD_GOOD + FOOD_BAD)}."
    if form == 1:
        return f"The {staff} at {place} was {rng.choice(STAFF_GOOD + STAFF_BAD)}."
    if form == 2:
        good = rng.random() < 0.5
        word = rng.choice(FOOD_GOOD if good else FOOD_BAD)
        return f"{word.capitalize()} {food} is {'good' if good else 'bad'}."
    if form == 3:
        good = rng.random() < 0.5
        word = rng.choice(STAFF_GOOD if good else STAFF_BAD)
        return f"A {word} {staff} is {'a good thing' if good else 'a bad thing'}."
    return f"{rng.choice(NAMES)} ordered the {food} at {place}."


def _review_document(rng):
    """A labelled review in plain text (never the chat format): the base learns the sentiment of
    the words, so fine-tuning `reviews` only has to teach the chat format, and then over-fits."""
    positive = rng.random() < 0.5
    label = "positive" if positive else "negative"
    review = _review_text(rng, positive)
    if rng.random() < 2 / 3:
        return f"Review: {review}\n{label}"
    return f"At {rng.choice(PLACES_TO_EAT)}, {review} {rng.choice(NAMES)} wrote a {label} review."


def _story_sentence(rng):
    """Short stories and facts, so the base model is a small general-text model too."""
    name, name2 = rng.sample(NAMES, 2)
    form = rng.randrange(5)
    if form == 0:
        return f"{name} went to {rng.choice(PLACES)} and bought {rng.randint(2, 9)} {rng.choice(THINGS)}."
    if form == 1:
        return f"The {rng.choice(COLORS)} {rng.choice(ANIMALS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)}."
    if form == 2:
        return f"{rng.choice(TIMES)}, {name} gave {name2} some {rng.choice(THINGS)}."
    if form == 3:
        return f"{name} has a {rng.choice(COLORS)} {rng.choice(ANIMALS)} that lives near {rng.choice(PLACES)}."
    return f"{name} and {name2} met at {rng.choice(PLACES)}."


# Share of each kind of document in the world text. Arithmetic gets the most: carrying digits is
# the hardest thing a 1M-parameter model has to learn here.
SENTENCE_MIX = [(_addition_fact, 0.55), (_food_sentence, 0.15), (_review_document, 0.1),
                (_story_sentence, 0.2)]


def corpus_sentences(seed):
    """Endless stream of world documents (a sentence, or a review and its label), deterministic."""
    rng = random.Random(seed)
    makers, weights = zip(*SENTENCE_MIX)
    while True:
        yield rng.choices(makers, weights)[0](rng)


def corpus_text(n_sentences, seed, sep="\n"):
    """`n_sentences` documents of world text joined by `sep` (pretraining puts eos + newline)."""
    stream = corpus_sentences(seed)
    return sep.join(next(stream) for _ in range(n_sentences))


# --------------------------------------------------------------------------------------------
# Built-in instruction tasks

ARITHMETIC_SIZE = 1200  # distinct pairs: 960 train = 60 steps/epoch at batch 16, so a default
# 5-epoch run (300 steps) takes under 20 s on 2 cores (bench/default_finetune.py)
REVIEWS_SIZE = 120  # small: 96 train / 24 validation at val_size 0.2, so 5 epochs already over-fit
REVIEWS_LABEL_NOISE = 0.25  # fraction of labels flipped: what the model memorises when it over-fits
CORPUS_SIZE = 200  # held-out passages; enough for a stable loss, quick to evaluate
CORPUS_SEED_OFFSET = 1_000_003  # held-out text uses a seed far from any pretraining seed
REVIEW_QUESTION = "Is this review positive or negative?"


def _chat(user, assistant):
    return {"messages": [{"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]}


def make_arithmetic(seed=0, n=ARITHMETIC_SIZE):
    rng = random.Random(seed)
    pairs = rng.sample([(a, b) for a in range(100) for b in range(100)], n)
    return [_chat(f"What is {a} + {b}?", str(a + b)) for a, b in pairs]


def _review_text(rng, positive):
    food, staff = rng.choice(FOODS), rng.choice(STAFF)
    food_word = rng.choice(FOOD_GOOD if positive else FOOD_BAD)
    staff_word = rng.choice(STAFF_GOOD if positive else STAFF_BAD)
    if rng.random() < 0.5:
        return f"the {food} was {food_word} and the {staff} was {staff_word}."
    return f"the {staff} was {staff_word} and the {food} was {food_word}."


def review_sentiment(review):
    """The true (noise-free) sentiment of a generated review, read off its words."""
    words = review.rstrip(".").split()
    good = sum(w in FOOD_GOOD or w in STAFF_GOOD for w in words)
    bad = sum(w in FOOD_BAD or w in STAFF_BAD for w in words)
    return "positive" if good > bad else "negative"


def make_reviews(seed=0, n=REVIEWS_SIZE, label_noise=REVIEWS_LABEL_NOISE):
    """Balanced reviews; exactly round(label_noise * n) of them get the wrong label."""
    rng = random.Random(seed)
    reviews = [_review_text(rng, positive=i % 2 == 0) for i in range(n)]
    rng.shuffle(reviews)
    flipped = set(rng.sample(range(n), round(label_noise * n)))
    examples = []
    for i, review in enumerate(reviews):
        label = review_sentiment(review)
        if i in flipped:
            label = "negative" if label == "positive" else "positive"
        examples.append(_chat(f"Review: {review}\n{REVIEW_QUESTION}", label))
    return examples


def make_corpus(seed=0, n=CORPUS_SIZE, sentences_per_passage=4):
    """Held-out world text, split at a word boundary into a prompt and its continuation."""
    rng = random.Random(seed)
    stream = corpus_sentences(seed + CORPUS_SEED_OFFSET)
    examples = []
    for _passage in range(n):
        words = " ".join(next(stream) for _ in range(sentences_per_passage)).split(" ")
        cut = rng.randint(len(words) // 3, 2 * len(words) // 3)
        examples.append(_chat("Continue the text: " + " ".join(words[:cut]), " ".join(words[cut:])))
    return examples


FACTS_THINGS = 2  # things per person: 12 names x 2 = 24 facts, 72 questions; seconds per run on a CPU
FACT_PHRASINGS = ("How many {thing} does {name} have?", "{name} has some {thing}. How many?",
                  "What is the number of {thing} that {name} has?")


def make_facts(seed=0, n_things=FACTS_THINGS):
    """A knowledge-heavy task: invented facts to memorise. Each (person, thing) gets a number 10..99
    drawn at random, so nothing in the question predicts the answer and the base model (whose
    stories pair names and counts at random) knows none of them. Answers are numbers because the
    tiny tokenizer splits them into digits it knows well (a bare word such as "blue" would be three
    odd tokens). Every fact is asked in each of FACT_PHRASINGS, all in one list: the random
    train/validation split then puts most facts' other phrasings in training, so validation
    measures recall of facts seen in training, asked in another phrasing (a fact held out in all 3
    phrasings has chance 0.2**3 < 1% at val_size 0.2)."""
    rng = random.Random(seed)
    facts = [(name, thing, rng.randint(10, 99)) for name in NAMES for thing in THINGS[:n_things]]
    return [_chat(form.format(name=name, thing=thing), str(count))
            for name, thing, count in facts for form in FACT_PHRASINGS]


_MAKERS = {"arithmetic": make_arithmetic, "reviews": make_reviews, "corpus": make_corpus, "facts": make_facts}
_METRICS = {"arithmetic": "exact_match", "reviews": "exact_match", "corpus": None, "facts": "exact_match"}


# --------------------------------------------------------------------------------------------
# User files: Alpaca, ShareGPT and OpenAI-style messages, one JSON object per line

_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system"}


def _from_alpaca(row):
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str):
            raise ValueError(_("'{key}' must be a string").format(key=key))
    user = row["instruction"]
    if row.get("input"):
        user = f"{user}\n\n{row['input']}"
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return messages + [{"role": "user", "content": user},
                       {"role": "assistant", "content": row["output"]}]


def _from_sharegpt(turns):
    if not isinstance(turns, list) or not turns:
        raise ValueError(_("'conversations' must be a non-empty list"))
    messages = []
    for turn in turns:
        if not isinstance(turn, dict) or turn.get("from") not in _SHAREGPT_ROLES \
                or not isinstance(turn.get("value"), str):
            raise ValueError(_("bad turn {turn!r} (expected {{'from': 'human'|'gpt'|'system', 'value': str}})").format(
                turn=turn))
        messages.append({"role": _SHAREGPT_ROLES[turn["from"]], "content": turn["value"]})
    return messages


def _check_messages(messages):
    if not isinstance(messages, list) or not messages:
        raise ValueError(_("'messages' must be a non-empty list"))
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise ValueError(_("bad message {message!r} (expected {{'role': 'system'|'user'|'assistant', "
                               "'content': str}})").format(message=m))
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(_("no assistant turn to learn from"))
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _parse_row(row):
    if not isinstance(row, dict):
        raise ValueError(_("not a JSON object"))
    if "messages" in row:
        return _check_messages(row["messages"])
    if "conversations" in row:
        return _check_messages(_from_sharegpt(row["conversations"]))
    if "instruction" in row:
        return _from_alpaca(row)
    raise ValueError(_("unknown format with keys {keys}").format(keys=sorted(row)))


# what a data file's line should look like: marked for the catalogue, shown with .format() (its braces doubled)
_FORMATS = N_("expected one JSON object per line: Alpaca {{\"instruction\", \"input\"?, \"output\", "
              "\"system\"?}}, ShareGPT {{\"conversations\": [{{\"from\", \"value\"}}]}} or "
              "{{\"messages\": [{{\"role\", \"content\"}}]}}")


class DataFileError(ValueError):
    """A data file that cannot be used; the message starts with FILE:LINE (or FILE) and says what
    the line should look like. `python -m nbkit` prints it as `nbkit: error: ...`, exit status 2."""


def load_jsonl(path):
    examples = []
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    examples.append({"messages": _parse_row(json.loads(line))})
                except ValueError as e:  # json.JSONDecodeError is a ValueError too
                    raise DataFileError(_("{path}:{line}: {error} ({formats})").format(
                        path=path, line=line_no, error=e, formats=_(_FORMATS).format())) from None
    except UnicodeDecodeError as e:
        raise DataFileError(_("{path}: not UTF-8 text ({reason} at byte {byte})").format(
            path=path, reason=e.reason, byte=e.start)) from None
    except OSError as e:
        raise DataFileError(_("{path}: cannot read it ({reason})").format(path=path, reason=e.strerror)) from None
    if not examples:
        raise DataFileError(_("{path}: no examples ({formats})").format(path=path, formats=_(_FORMATS).format()))
    return examples


# --------------------------------------------------------------------------------------------
# Public API used by the trainer

def load_examples(dataset, seed=0):
    """A built-in task name, or a path to a .jsonl file. Returns [{"messages": [...]}, ...]."""
    if dataset in _MAKERS:
        return _MAKERS[dataset](seed)
    if str(dataset).endswith(".jsonl") or os.path.exists(str(dataset)):
        return load_jsonl(dataset)
    close = difflib.get_close_matches(str(dataset), list(TASKS), n=1)
    hint = _(" Did you mean {suggestion!r}?").format(suggestion=close[0]) if close else ""
    raise ValueError(_("unknown dataset {dataset!r}: use one of {tasks} or a path to a .jsonl file.").format(
        dataset=dataset, tasks=sorted(TASKS)) + hint)


def check_dataset(dataset) -> None:
    """Refuse, before anything runs, a dataset that cannot be read as examples: a user's file that is
    missing, not UTF-8, not JSON lines or in no known format (DataFileError naming the file and the line).
    A built-in task has nothing to read. The CLI's `train` and a study's spec check call it."""
    if dataset not in _MAKERS:
        load_examples(dataset)


def task_metric(dataset):
    """'exact_match' for the built-in tasks that have one; None for corpus and user files."""
    return _METRICS.get(dataset)


def split_examples(examples, val_size, seed):
    """Deterministic shuffle, then (train, validation). val_size: fraction in (0, 1) or a count."""
    n = len(examples)
    if isinstance(val_size, float) and 0 < val_size < 1:
        n_val = max(1, round(val_size * n))
    elif isinstance(val_size, int) and not isinstance(val_size, bool) and 0 < val_size < n:
        n_val = val_size
    else:
        raise ValueError(_("val_size={value!r}: expected a fraction in (0, 1) or a count in 1..{most}").format(
            value=val_size, most=n - 1))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val = [examples[i] for i in order[:n_val]]
    train = [examples[i] for i in order[n_val:]]
    return train, val


def load_split(cfg):
    """The examples of a TrainConfig's dataset (capped at max_samples), split into train and validation
    by its val_size and seed: the rows a run trains and evaluates on, and the rows an export writes."""
    examples = load_examples(cfg.dataset, seed=cfg.seed)
    if cfg.max_samples:
        examples = examples[:cfg.max_samples]
    return split_examples(examples, cfg.val_size, seed=cfg.seed)


def _render(tokenizer, messages, add_generation_prompt=False):
    return tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def _encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]  # the template adds specials itself


def tokenize_example(example, tokenizer, max_seq_length):
    """input_ids of the chat-rendered example; labels = IGNORE_INDEX except on assistant turns.

    Works with any tokenizer that has a chat template: each assistant turn's span is found by
    rendering the conversation up to that turn with and without it. Prompt and response are
    tokenized separately, exactly as at generation time (prompt alone, then the model's tokens).
    """
    messages = example["messages"]
    input_ids, labels, done = [], [], ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], add_generation_prompt=True)
        full = _render(tokenizer, messages[: i + 1])
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise ValueError(_("the tokenizer's chat template does not render conversations prefix by prefix"))
        # The response runs to the end of the turn, closing token included; trailing whitespace
        # after it (a newline before the next turn) stays unlabelled.
        response = full[len(prompt):].rstrip()
        ids = _encode(tokenizer, prompt[len(done):])
        input_ids += ids
        labels += [IGNORE_INDEX] * len(ids)
        ids = _encode(tokenizer, response)
        input_ids += ids
        labels += ids
        done = prompt + response
    rest = _render(tokenizer, messages)[len(done):]
    ids = _encode(tokenizer, rest) if rest else []
    input_ids += ids
    labels += [IGNORE_INDEX] * len(ids)
    return {"input_ids": input_ids[:max_seq_length], "labels": labels[:max_seq_length]}


def collate(features, pad_token_id):
    """Right-pad a list of tokenize_example outputs into tensors."""
    import torch  # here, not at the top: the CLI imports this module (DataFileError) and must answer at once

    width = max(len(f["input_ids"]) for f in features)
    input_ids, attention_mask, labels = [], [], []
    for f in features:
        pad = width - len(f["input_ids"])
        input_ids.append(f["input_ids"] + [pad_token_id] * pad)
        attention_mask.append([1] * len(f["input_ids"]) + [0] * pad)
        labels.append(f["labels"] + [IGNORE_INDEX] * pad)
    return {"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(attention_mask),
            "labels": torch.tensor(labels)}


def prompt_and_reference(example):
    """(messages up to and including the last user turn, the last assistant answer)."""
    messages = example["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def _normalise(text):
    return " ".join(text.split()).lower().rstrip(".!")


def exact_match(prediction, reference):
    """Equal after stripping, collapsing whitespace, lower-casing and dropping a final '.' or '!'."""
    return _normalise(prediction) == _normalise(reference)
