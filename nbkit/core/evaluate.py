"""Evaluation: token-weighted loss on a data loader, exact match by greedy generation, and a
small table of a model's answers for notebooks (answers_table).

Used by the trainer at every epoch end, and by chapters that re-evaluate a model (the base
before fine-tuning, the weights restored to the best epoch, forgetting on another task).
"""
from __future__ import annotations

import contextlib

import pandas as pd
import torch
import torch.nn.functional as F

from nbkit.core.data import CORPUS_SEED_OFFSET, corpus_text, exact_match, prompt_and_reference
from nbkit.core.models import weight_norm

HELDOUT_DOCUMENTS = 200  # held-out pretraining-style documents: a stable loss in well under a second


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the labelled (response) tokens, and their count.
    Summing, not averaging, lets the caller divide by the tokens of a whole accumulated batch."""
    shift_logits = logits[:, :-1, :].float()  # the loss itself stays in fp32 under autocast
    shift_labels = labels[:, 1:]
    loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                           ignore_index=-100, reduction="sum")
    return loss, int((shift_labels != -100).sum())


def autocast_context(device: torch.device, bf16: bool, fp16: bool):
    """Mixed precision as a switch: matmuls in bf16/fp16, reductions and the loss in fp32."""
    if bf16 or fp16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if bf16 else torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate_loss(model, loader, device, bf16: bool = False, fp16: bool = False) -> float:
    """Mean loss per response token over the whole loader (not a mean of batch means)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast_context(device, bf16, fp16):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss_sum, n = token_loss_sum(logits, batch["labels"])
        total += float(loss_sum)
        tokens += n
    model.train(was_training)
    return total / max(tokens, 1)


@torch.no_grad()
def generate_answers(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 16,
                     batch_size: int = 64) -> list[str]:
    """Greedy answers to chat prompts (each a list of messages ending with a user turn)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # so every prompt ends where generation starts
    answers = []
    try:
        for i in range(0, len(conversations), batch_size):
            texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                     for c in conversations[i:i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            answers += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return [a.strip() for a in answers]


def exact_match_accuracy(model, tokenizer, examples: list[dict], max_new_tokens: int = 16,
                         batch_size: int = 64) -> float:
    """Fraction of examples whose greedy answer equals the reference answer."""
    prompts, references = zip(*(prompt_and_reference(ex) for ex in examples))
    answers = generate_answers(model, tokenizer, list(prompts), max_new_tokens, batch_size)
    return sum(exact_match(a, r) for a, r in zip(answers, references)) / len(examples)


def answers_table(model, tokenizer, examples: list[dict], n: int = 5, max_new_tokens: int = 16) -> pd.DataFrame:
    """The model's greedy answers to the first n examples, as a table a notebook shows:
    question (the last user turn), reference, answer, correct (exact match, as scored in training)."""
    prompts, references = zip(*(prompt_and_reference(ex) for ex in examples[:n]))
    answers = generate_answers(model, tokenizer, list(prompts), max_new_tokens)
    return pd.DataFrame({"question": [p[-1]["content"] for p in prompts], "reference": references,
                         "answer": answers, "correct": [exact_match(a, r) for a, r in zip(answers, references)]})


# ---------------------------------------------------------------- forgetting

@torch.no_grad()
def text_loss(model, tokenizer, texts: list[str], batch_size: int = 32, max_length: int = 256) -> float:
    """Mean next-token loss over every token of plain texts (no chat template), each ended by
    eos as the pretraining documents are: how well a model still models such text."""
    was_training, old_side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "right"  # padding after the text: positions match an unpadded run
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    try:
        for i in range(0, len(texts), batch_size):
            chunk = [t + tokenizer.eos_token for t in texts[i:i + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                            add_special_tokens=False).to(device)
            labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            loss_sum, n = token_loss_sum(logits, labels)
            total, tokens = total + float(loss_sum), tokens + n
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return total / max(tokens, 1)


def heldout_text_loss(model, tokenizer, n_documents: int = HELDOUT_DOCUMENTS) -> float:
    """text_loss on documents drawn like the tiny base's pretraining corpus but from a seed it
    never saw (nor the `corpus` task): it rises after fine-tuning when the model forgets."""
    docs = corpus_text(n_documents, seed=CORPUS_SEED_OFFSET + 1, sep="\x00").split("\x00")
    return text_loss(model, tokenizer, docs)


def decay_effect(df: pd.DataFrame, metric: str = "best_eval_loss", relative: bool = False) -> pd.DataFrame:
    """What weight decay does in a sweep over learning_rate x weight_decay (and seed, if it has that
    column): per seed and weight decay > 0 (the rows) and learning rate (the columns), the metric minus
    the same seed's metric at weight decay 0 and the same LR; relative=True: the ratio to it, minus 1
    (0.5: 50% higher). Used by chapter 2 to read a heat map by numbers, not colours."""
    missing = [c for c in ("learning_rate", "weight_decay", metric) if c not in df]
    if missing:
        raise ValueError(f"decay_effect: {missing} are not columns of the sweep table; "
                         f"allowed: {', '.join(df.columns)}")
    if not (df["weight_decay"] == 0).any():
        raise ValueError("decay_effect: the sweep has no run at weight_decay 0 to measure the decay against")
    table = df.assign(seed=df["seed"] if "seed" in df else 0).pivot_table(
        index=["seed", "weight_decay"], columns="learning_rate", values=metric, aggfunc="first")
    none = table.xs(0.0, level="weight_decay")
    decayed = table.drop(index=0.0, level="weight_decay")
    reference = none.reindex(decayed.index.get_level_values("seed")).set_axis(decayed.index)
    return decayed / reference - 1 if relative else decayed - reference


def with_weight_norms(df: pd.DataFrame) -> pd.DataFrame:
    """A sweep table made with keep_models=True, plus a weight_norm column (nbkit.core.models.weight_norm of
    each run's final weights: what weight decay shrinks); the models are then dropped from the runs, so
    a sweep per seed holds only one seed's weights at a time (a real LLM's are ~0.5 GB a run)."""
    runs = df.attrs.get("runs", [])
    if len(runs) != len(df) or any(r.model is None for r in runs):
        raise ValueError("with_weight_norms: the table's runs have no weights; "
                         "make it with sweep(..., keep_models=True)")
    norms = [weight_norm(r.model) for r in runs]
    for r in runs:
        r.drop_weights()
    return df.assign(weight_norm=norms)


# ---------------------------------------------------------------- epochs: under- and over-fitting (chapter 4)

def _at(epochs: pd.DataFrame, column: str, epoch) -> float:
    """epochs[column] at that epoch (NaN when the run has no such column, e.g. no accuracy)."""
    return float(epochs.loc[epoch, column]) if column in epochs else float("nan")


def _relative(new: float, old: float) -> float:
    """new / old - 1 (NaN when old is 0: nothing to compare against)."""
    return new / old - 1 if old else float("nan")


def curve_facts(run) -> dict:
    """What one run's epoch curves say about under- and over-fitting, as numbers (chapter 4):
    best_epoch        the epoch of the lowest validation loss (the first if tied: where the curve
                      doctor puts it), last_epoch the last one evaluated
    eval_loss_*       validation loss after epoch 1, at the best epoch, at the last
    train_loss_*      training loss (mean over the epoch's steps) after epoch 1, at the best, at the last
    accuracy_*        greedy exact-match accuracy after epoch 1, at the best, at the last
    train_min_epoch   the epoch with the lowest training loss, train_loss_min that loss, and
                      eval_loss_at_train_min the validation loss there
    loss_rise         eval_loss_last / eval_loss_best - 1: how far the validation loss climbed
    error_rise        the same for the error rate (1 - accuracy): what greedy accuracy sees of it
    last_over_best    eval_loss_last / eval_loss_best
    with the run's seed, finetuning_type, learning_rate and lr_scheduler_type, and its folder."""
    ep = run.epochs.set_index("epoch")
    if "eval_loss" not in ep or ep["eval_loss"].notna().sum() < 2:
        raise ValueError(f"curve_facts: run {run.path} has no validation loss after an epoch of training")
    trained = ep.loc[ep.index > 0]
    best, first, last = ep["eval_loss"].idxmin(), trained.index.min(), trained.index.max()
    train_min = trained["train_loss"].idxmin()
    facts = {k: run.config.get(k) for k in ("seed", "finetuning_type", "learning_rate", "lr_scheduler_type")}
    facts.update(best_epoch=int(best), last_epoch=int(last), train_min_epoch=int(train_min))
    for name, epoch in (("epoch_1", first), ("best", best), ("last", last)):
        facts[f"eval_loss_{name}"] = _at(ep, "eval_loss", epoch)
        facts[f"train_loss_{name}"] = _at(ep, "train_loss", epoch)
        facts[f"accuracy_{name}"] = _at(ep, "eval_accuracy", epoch)
    facts["train_loss_min"] = _at(ep, "train_loss", train_min)
    facts["eval_loss_at_train_min"] = _at(ep, "eval_loss", train_min)
    facts["loss_rise"] = _relative(facts["eval_loss_last"], facts["eval_loss_best"])
    facts["error_rise"] = _relative(1 - facts["accuracy_last"], 1 - facts["accuracy_best"])
    facts["last_over_best"] = facts["eval_loss_last"] / facts["eval_loss_best"]
    facts["path"] = str(run.path)
    return facts


def curve_table(runs) -> pd.DataFrame:
    """curve_facts of each run (Run objects, e.g. a sweep's df.attrs["runs"]), a row per run in their order."""
    return pd.DataFrame([curve_facts(r) for r in runs])


def best_per_seed(df: pd.DataFrame, metric: str = "best_eval_loss") -> pd.DataFrame:
    """Per seed, the row of a sweep table (with a seed column) where `metric` is lowest: each seed's
    own best setting of the swept knob (its own best LR, say), in seed order."""
    if "seed" not in df or metric not in df:
        raise ValueError(f"best_per_seed: the table needs columns 'seed' and {metric!r}; "
                         f"it has {', '.join(df.columns)}")
    return df.loc[df.groupby("seed")[metric].idxmin()].sort_values("seed")


def stopping_table(stopped, long_runs, returned=None) -> pd.DataFrame:
    """A row per early-stopped run (Run objects), read beside the long run of its seed: the same config
    without early stopping. Columns: seed, patience, threshold, status, stopped_at_epoch, best_epoch
    (the trainer's: with a threshold, only gains larger than it count), best_eval_loss, returned_eval_loss
    (`returned`: the loss of each run's returned model re-evaluated from scratch, e.g.
    nbkit.core.train.validation_loss(run); NaN if not given), the long run's best and final eval loss and
    its last epoch, compute_saved (the share of the long run's steps it did not take) and follows_long
    (its validation losses equal the long run's at every epoch it ran: same seed, same curve)."""
    longs = {r.config["seed"]: r for r in long_runs}
    returned = list(returned) if returned is not None else [float("nan")] * len(stopped)
    if len(returned) != len(stopped):
        raise ValueError(f"stopping_table: {len(returned)} returned losses for {len(stopped)} runs")
    rows = []
    for run, loss in zip(stopped, returned):
        seed = run.config["seed"]
        if seed not in longs:
            raise ValueError(f"stopping_table: no long run with seed {seed}; long runs have seeds {sorted(longs)}")
        long, s = longs[seed], run.summary
        mine = run.epochs.set_index("epoch")["eval_loss"]
        theirs = long.epochs.set_index("epoch")["eval_loss"].reindex(mine.index)
        rows.append(dict(seed=seed, patience=run.config["early_stopping_patience"],
                         threshold=run.config["early_stopping_threshold"], status=run.status,
                         stopped_at_epoch=s["epochs_completed"], best_epoch=run.best_epoch,
                         best_eval_loss=run.best_eval_loss, returned_eval_loss=loss,
                         long_best_eval_loss=long.best_eval_loss, long_final_eval_loss=long.summary["final_eval_loss"],
                         long_last_epoch=long.summary["epochs_completed"],
                         compute_saved=1 - s["steps_completed"] / long.summary["steps_completed"],
                         follows_long=bool(((mine - theirs).abs() <= 1e-6 * theirs.abs()).all())))
    return pd.DataFrame(rows)

