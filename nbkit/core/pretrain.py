"""Build the embedded tiny base model from scratch: corpus -> tokenizer -> pretraining -> data/tiny.

    python -m nbkit.core.pretrain --out data/tiny

Reproducible: the corpus comes from `nbkit.core.data.corpus_sentences` (seeded), the tokenizer is trained
on it, and a Llama-architecture causal LM is pretrained with one plain PyTorch loop
(AdamW, linear warmup then cosine decay). The model card and pretrain.json record every fact.
"""

import argparse
import itertools
import json
import math
import os
import random
import sys
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from nbkit.core.data import corpus_sentences, load_examples
from nbkit.core.i18n import _

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
VOCAB_SIZE = 1024  # 256 bytes + specials + ~760 merges: whole words of the world text, small embedding
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


# --------------------------------------------------------------------------------------------
# Tokenizer

def train_tokenizer(text, vocab_size=VOCAB_SIZE):
    """Byte-level BPE: any text tokenizes; digits are split one per token (arithmetic needs it)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(text.split("\n"), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|end|>",
        unk_token="<|endoftext|>", pad_token="<|pad|>", chat_template=CHAT_TEMPLATE,
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        model_max_length=256)


# The tasks whose words the committed tokenizer (data/tiny) learned. Later tasks (facts) reuse the
# world's words; listing them here would change the tokenizer, so the base would no longer rebuild.
TOKENIZER_TASKS = ("arithmetic", "reviews", "corpus")


def task_text():
    """The words of the built-in tasks' messages. The tokenizer learns them (so "What" or
    "Continue" are tokens, not letters); the model does not: they are not pretraining data."""
    return "\n".join(m["content"] for task in TOKENIZER_TASKS for ex in load_examples(task)
                     for m in ex["messages"])


# --------------------------------------------------------------------------------------------
# Model

def make_config(tokenizer, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                intermediate_size=384, max_position_embeddings=256):
    # hidden 128 x 4 layers is about 1M parameters: a fine-tuning step takes milliseconds on a CPU.
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, num_key_value_heads=num_attention_heads,
        intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,  # the embedding is a big share of a tiny model: share it
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)


def lr_at(step, peak_lr, warmup_steps, total_steps, min_ratio):
    """Linear warmup to peak_lr, then cosine decay to min_ratio * peak_lr."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def get_batch(data, batch_size, seq_len, rng):
    """Random windows of the packed token stream; the target is the next token."""
    starts = [rng.randrange(len(data) - seq_len - 1) for _ in range(batch_size)]
    x = torch.stack([data[s: s + seq_len] for s in starts])
    y = torch.stack([data[s + 1: s + seq_len + 1] for s in starts])
    return x, y


@torch.no_grad()
def arithmetic_probe(model, tokenizer, n=256, seed=1, pairs=None):
    """Share of 'The sum of a and b is' prompts the model completes greedily with 'a+b.'.
    `pairs` defaults to n random pairs of numbers 0..99.

    One teacher-forced forward pass: greedy decoding produces the answer exactly when the
    argmax at every answer position is the right token, so this equals greedy exact match.
    """
    rng = random.Random(seed)
    was_training = model.training
    model.eval()
    if pairs is None:
        pairs = [(rng.randint(0, 99), rng.randint(0, 99)) for _ in range(n)]
    rows, spans = [], []
    for a, b in pairs:
        prompt = tokenizer(f"The sum of {a} and {b} is", add_special_tokens=False)["input_ids"]
        answer = tokenizer(f" {a + b}.", add_special_tokens=False)["input_ids"]
        rows.append(prompt + answer)
        spans.append((len(prompt), len(prompt) + len(answer)))
    width = max(map(len, rows))
    x = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    pred = model(input_ids=x).logits.argmax(-1)  # right padding: earlier positions are unaffected
    correct = sum(pred[i, s - 1: e - 1].tolist() == rows[i][s:e] for i, (s, e) in enumerate(spans))
    model.train(was_training)
    return correct / len(pairs)


# --------------------------------------------------------------------------------------------
# Pretraining

def pretrain(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    docs = list(itertools.islice(corpus_sentences(args.seed), args.corpus_sentences))
    tokenizer = train_tokenizer("\n".join(docs) + "\n" + task_text())
    # Each document ends with eos, so the base already knows when a text is over.
    eos = tokenizer.eos_token
    text = f"{eos}\n".join(docs) + eos
    data = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    print(_("corpus: {sentences} sentences, {tokens:,} tokens, vocab {vocab}").format(
        sentences=args.corpus_sentences, tokens=len(data), vocab=len(tokenizer)))

    model = LlamaForCausalLM(make_config(tokenizer))
    n_params = sum(p.numel() for p in model.parameters())
    print(_("model: {n:,} parameters").format(n=n_params))
    # No weight decay on norms and biases (the usual GPT recipe).
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.learning_rate, betas=(0.9, 0.95))
    rng = random.Random(args.seed)
    model.train()
    loss_ema = None
    for step in range(args.steps):
        lr = lr_at(step, args.learning_rate, args.warmup_steps, args.steps, args.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(data, args.batch_size, args.seq_len, rng)
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        if step % args.log_every == 0 or step == args.steps - 1:
            print(_("step {step:5d} | loss {loss:.4f} (ema {ema:.4f}) | lr {lr:.2e} | grad_norm {grad_norm:.2f} | "
                    "{seconds:.0f}s").format(step=step, loss=loss.item(), ema=loss_ema, lr=lr, grad_norm=grad_norm,
                                             seconds=time.time() - t0), flush=True)
        if args.probe_every and step % args.probe_every == 0:
            print("           " + _("declarative sum probe: {share:.1%}").format(
                share=arithmetic_probe(model, tokenizer)), flush=True)
    seconds = time.time() - t0
    probe = arithmetic_probe(model, tokenizer)
    probe_small = arithmetic_probe(model, tokenizer, pairs=[(a, b) for a in range(10) for b in range(10)])
    print(_("done in {seconds:.0f}s; declarative sum probe: {share:.1%}").format(seconds=seconds, share=probe))

    facts = {
        "parameters": n_params,
        "architecture": "LlamaForCausalLM",
        "hidden_size": model.config.hidden_size,
        "num_hidden_layers": model.config.num_hidden_layers,
        "num_attention_heads": model.config.num_attention_heads,
        "intermediate_size": model.config.intermediate_size,
        "vocab_size": model.config.vocab_size,
        "max_position_embeddings": model.config.max_position_embeddings,
        "corpus_sentences": args.corpus_sentences,
        "corpus_tokens": len(data),
        "peak_learning_rate": args.learning_rate,
        "lr_scheduler_type": "cosine",
        "min_lr_ratio": args.min_lr_ratio,
        "warmup_steps": args.warmup_steps,
        "steps": args.steps,
        "batch": args.batch_size,
        "seq_len": args.seq_len,
        "tokens_seen": args.steps * args.batch_size * args.seq_len,
        "optimizer": "AdamW",
        "adam_betas": [0.9, 0.95],
        "weight_decay": args.weight_decay,
        "max_grad_norm": args.max_grad_norm,
        "final_loss": round(loss_ema, 4),
        "declarative_sum_accuracy": probe,
        "declarative_sum_accuracy_single_digits": probe_small,
        "seconds": round(seconds, 1),
        "threads": args.threads,
        "seed": args.seed,
        "torch_version": torch.__version__,
        "command": _command(),
    }
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    with open(os.path.join(args.out, "pretrain.json"), "w") as f:
        json.dump(facts, f, indent=2)
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(model_card(facts))
    print(_("saved to {path}").format(path=args.out))
    return facts


def _command():
    env = "OMP_WAIT_POLICY=PASSIVE " if os.environ.get("OMP_WAIT_POLICY") == "PASSIVE" else ""
    return env + "python -m nbkit.core.pretrain " + " ".join(sys.argv[1:])


def model_card(f):
    return f"""# tiny: the embedded base model of nbkit

A {f['parameters']:,}-parameter Llama-architecture causal LM, pretrained from scratch on CPU by
`nbkit/core/pretrain.py` on English text that `nbkit/core/data.py` generates. No downloaded data or weights.

## Architecture
`{f['architecture']}`: {f['num_hidden_layers']} layers, hidden size {f['hidden_size']},
{f['num_attention_heads']} attention heads, MLP intermediate size {f['intermediate_size']},
vocabulary {f['vocab_size']}, max positions {f['max_position_embeddings']}, tied input/output embeddings.
{f['parameters']:,} parameters.

## Tokenizer
Byte-level BPE (Hugging Face `tokenizers`) trained on the same corpus plus the text of the
built-in tasks' messages (so their words are tokens; the model never trained on them), {f['vocab_size']} tokens,
digits split one per token, so any text tokenizes. Special tokens: `<|endoftext|>`, `<|pad|>`,
`<|system|>`, `<|user|>`, `<|assistant|>`, `<|end|>` (eos). The chat template renders each
message as `<|role|>\\n{{content}}<|end|>\\n`; the generation prompt is `<|assistant|>\\n`.
The base model never saw the chat format: fine-tuning teaches it.

## Corpus
{f['corpus_sentences']:,} generated documents, {f['corpus_tokens']:,} tokens (`nbkit.core.data.corpus_sentences`,
seed {f['seed']}), each ended by the eos token `<|end|>` and a newline:
- 55% addition facts of numbers 0..99 (a quarter of the operands drawn from 0..9) in declarative forms only \
("23 plus 45 is 68.",
  "The sum of 23 and 45 is 68.", "23 + 45 = 68.", ...);
- 15% restaurant talk (the food, staff and adjective words of the `reviews` task, and which of
  them are good or bad);
- 10% labelled reviews in plain text ("Review: the soup was cold and the staff was rude." then
  "negative" on the next line, or "... Sam wrote a negative review."), always correctly labelled;
- 20% short stories.

Never a question, never the chat format (`<|user|>`, `<|assistant|>` are unseen tokens).

## Pretraining
- Optimizer: AdamW, betas {tuple(f['adam_betas'])}, weight decay {f['weight_decay']}, \
gradient clipping {f['max_grad_norm']}
- **Peak learning rate: {f['peak_learning_rate']:g}**, linear warmup over {f['warmup_steps']} steps, then
  cosine decay to {f['min_lr_ratio']:g} x peak
- {f['steps']:,} steps of batch {f['batch']} x {f['seq_len']} tokens (packed sentences):
  {f['tokens_seen']:,} tokens seen
- Final train loss (exponential moving average): {f['final_loss']}
- Completes "The sum of a and b is" correctly (greedy): {f['declarative_sum_accuracy']:.1%} of 256 random
  pairs of numbers 0..99, {f['declarative_sum_accuracy_single_digits']:.0%} of the 100 pairs of numbers 0..9
- Wall time: {f['seconds']:.0f} s on {f['threads']} CPU threads, torch {f['torch_version']}
- Command: `{f['command']}`

The same facts, machine-readable: `pretrain.json`.

## Use
```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("data/tiny")
model = AutoModelForCausalLM.from_pretrained("data/tiny")
ids = tokenizer("The sum of 3 and 4 is", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=4, do_sample=False)[0]))
```
Pretraining windows are random crops of documents that each end with `<|end|>` and a newline, so a
prompt that starts with a number does best after that boundary (`"<|end|>\\n2 + 2 ="`: 99-100%
right, against about 40-65% with no prefix); prompts that start with a word ("The sum of") do not need it.

In nbkit: `TrainConfig(model="tiny")`.

## Limits
A teaching model: it knows only its generated world (sums of numbers 0..99, restaurant talk,
short stories). It is not an assistant until fine-tuned, and not useful outside this kit.
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="data/tiny")
    p.add_argument("--steps", type=int, default=1200)  # ~10 minutes on 2 CPU cores; sums >95% right
    p.add_argument("--learning_rate", type=float, default=3e-3)  # tiny models take a high peak LR
    p.add_argument("--warmup_steps", type=int, default=100)  # a short ramp avoids early blow-ups
    p.add_argument("--min_lr_ratio", type=float, default=0.1)  # cosine ends at 10% of the peak
    p.add_argument("--batch_size", type=int, default=32)  # smooth enough gradients, fast steps
    p.add_argument("--seq_len", type=int, default=128)  # several sentences per window
    p.add_argument("--weight_decay", type=float, default=0.1)  # the usual GPT pretraining value
    p.add_argument("--max_grad_norm", type=float, default=1.0)  # the usual clipping threshold
    p.add_argument("--corpus_sentences", type=int, default=200_000)  # ~2.5M tokens, each seen about twice
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)  # the target laptop / CI machine
    p.add_argument("--log_every", type=int, default=100)
    p.add_argument("--probe_every", type=int, default=200)  # how the arithmetic is coming along
    return p.parse_args(argv)


if __name__ == "__main__":
    pretrain(parse_args())
