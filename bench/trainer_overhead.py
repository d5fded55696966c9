"""How much does nbkit's trainer cost over a bare PyTorch loop, and over HF Trainer?

The same tiny model, data and batch size, trained for the same number of optimizer steps by
  bare    a minimal loop: forward, loss, backward, clip, AdamW step, scheduler step
  nbkit   nbkit.core.train (recording, events, run store; evaluation time subtracted)
  hf      transformers.Trainer (evaluation, saving and logging off)
interleaved round by round (this machine is noisy; absolute times drift, ratios less so).
Prints ms per optimizer step (median over rounds) and the ratios nbkit/bare and nbkit/hf.

    python bench/trainer_overhead.py [--rounds 5] [--steps 60]
"""
import argparse
import tempfile
import time
from functools import partial

import torch
from common import hf_trainer, interleaved_medians
from torch.utils.data import DataLoader

from nbkit import TrainConfig, train
from nbkit.core.data import collate
from nbkit.core.models import load_model
from nbkit.core.train import build_datasets, build_scheduler


def bench_config(steps: int, out: str) -> TrainConfig:
    return TrainConfig(model="tiny", dataset="arithmetic", max_steps=steps, predict_with_generate=False,
                       disable_tqdm=True, output_dir=out)


def bare_loop(cfg: TrainConfig) -> float:
    """ms per step of the smallest honest loop over the same batches."""
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model(cfg)
    features, _, _ = build_datasets(cfg, tokenizer)
    loader = DataLoader(features, batch_size=cfg.per_device_train_batch_size, shuffle=True,
                        collate_fn=partial(collate, pad_token_id=tokenizer.pad_token_id),
                        generator=torch.Generator().manual_seed(cfg.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    scheduler = build_scheduler(cfg, optimizer, cfg.max_steps, len(loader))
    model.train()
    step, start = 0, time.perf_counter()
    while step < cfg.max_steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step == cfg.max_steps:
                break
    return 1000 * (time.perf_counter() - start) / cfg.max_steps


def nbkit_loop(cfg: TrainConfig) -> float:
    run = train(cfg)
    s = run.summary
    return 1000 * (s["train_seconds"] - s["eval_seconds"]) / s["steps_completed"]


def hf_loop(cfg: TrainConfig) -> float:
    model, tokenizer = load_model(cfg)
    trainer = hf_trainer(cfg, model, tokenizer, partial(collate, pad_token_id=tokenizer.pad_token_id))
    start = time.perf_counter()
    trainer.train()
    return 1000 * (time.perf_counter() - start) / cfg.max_steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    cfg = bench_config(args.steps, tempfile.mkdtemp())
    bare_loop(cfg)  # warm-up: first-call costs (imports, allocator) are not the loop's
    med = interleaved_medians({name: partial(fn, cfg) for name, fn in
                               (("bare", bare_loop), ("nbkit", nbkit_loop), ("hf", hf_loop))}, args.rounds, "ms/step")
    print(f"\n{args.steps} steps x {args.rounds} rounds, batch {cfg.per_device_train_batch_size}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| loop  | ms/step (median) |")
    print("|-------|------------------|")
    for n, m in med.items():
        print(f"| {n:<5} | {m:16.2f} |")
    print(f"\nnbkit / bare = {med['nbkit'] / med['bare']:.3f}   (target <= 1.05)")
    print(f"nbkit / hf   = {med['nbkit'] / med['hf']:.3f}   (target < 1)")


if __name__ == "__main__":
    main()
