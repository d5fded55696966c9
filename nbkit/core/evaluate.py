"""The trainer's evaluation: token-weighted loss on a data loader, exact match by greedy generation,
a small table of a model's answers for notebooks (answers_table), and the loss on plain text
(text_loss, heldout_text_loss: forgetting).

Used by the trainer at every epoch end, and by several chapters that re-evaluate a model (the base
before fine-tuning, the weights restored to the best epoch, forgetting on another task). What one
chapter reads off its runs lives in that chapter's lab (nbkit/labs/chNN_*.py), and the notebook text
helpers in the chapter harness (nbkit.interfaces.chapter).
"""
from __future__ import annotations

import contextlib

import pandas as pd
import torch
import torch.nn.functional as F

from nbkit.core.data import CORPUS_SEED_OFFSET, corpus_text, exact_match, prompt_and_reference

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

