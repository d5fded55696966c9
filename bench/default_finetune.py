"""How long does a default fine-tune of the tiny base take here, and does it help?

    python bench/default_finetune.py [--repeats 3]

Prints wall time (median over repeats) split into training and evaluation, ms per optimizer
step, and exact match before vs after. Target (issue: nbkit core): <= 20 s on 2 CPU cores.
"""
import argparse
import statistics
import tempfile
import time

import torch

from nbkit import TrainConfig, train


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run = train(TrainConfig(disable_tqdm=True, output_dir=tempfile.mkdtemp()))
        s = run.summary
        rows.append({"wall": time.perf_counter() - start, "eval": s["eval_seconds"],
                     "ms_per_step": 1000 * (s["train_seconds"] - s["eval_seconds"]) / s["steps_completed"],
                     "before": s["base_eval_accuracy"], "after": s["final_eval_accuracy"]})
        print({k: round(v, 3) for k, v in rows[-1].items()}, flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"\ndefault fine-tune ({s['total_steps']} steps, {s['num_train_examples']} examples, "
          f"{torch.get_num_threads()} threads): {med['wall']:.1f} s wall (median of {args.repeats}), "
          f"of which evaluation {med['eval']:.1f} s; {med['ms_per_step']:.1f} ms/step")
    print(f"exact match before {med['before']:.1%} -> after {med['after']:.1%}   (target: <= 20 s)")


if __name__ == "__main__":
    main()
