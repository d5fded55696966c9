"""Chapter 6's speed questions, measured side by side, round by round (this machine is noisy;
absolute times drift, ratios less so):

  precision   ms per optimizer step of the same config in fp32, bf16 autocast and fp16 autocast
              with loss scaling (median over rounds), and the ratios bf16/fp32, fp16/fp32
  workers     tokens/s of one DataLoader pass over the lazily tokenised dataset with 0, 1, 2, 4
              workers (median over rounds), and each against 0 workers
  processes   wall seconds of the same short run on 1 process and under `accelerate launch`
              with 2 (start-up included: what the chapter's two-process cell costs)

Not part of the tests: the chapter asserts only robust statements about these (bf16 slower than
fp32 on a CPU without bf16 instructions, no gain from workers beyond the cores).

    python bench/stability_speed.py [--rounds 3] [--steps 8]
"""
import argparse
import os
import statistics
import tempfile
import time

from nbkit import TrainConfig, train
from nbkit.core.data import load_examples
from nbkit.core.distributed import launch
from nbkit.core.models import load_model
from nbkit.labs.ch06_stability import (LazyTokenizedDataset, cpu_has_bf16, loader_throughput, step_seconds,
                                       usable_cores, write_jsonl)

PRECISIONS = {"fp32": {}, "bf16": {"bf16": True}, "fp16": {"fp16": True}}
WORKERS = (0, 1, 2, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rows", type=int, default=2400)
    args = parser.parse_args()
    print(f"{usable_cores()} cores, bf16 instructions: {cpu_has_bf16()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    with tempfile.TemporaryDirectory(prefix="nbkit-ch6-") as out:
        cfg = TrainConfig(max_samples=400, max_steps=args.steps, predict_with_generate=False, disable_tqdm=True,
                          output_dir=out)
        _, tokenizer = load_model(cfg)
        rows = (load_examples("arithmetic") * (args.rows // 1200 + 1))[:args.rows]
        lazy = LazyTokenizedDataset(write_jsonl(rows, os.path.join(out, "rows.jsonl")), tokenizer, cfg.max_seq_length)
        step_ms = {name: [] for name in PRECISIONS}
        tokens_per_s = {w: [] for w in WORKERS}
        launch_s = {"1 process": [], "2 processes": []}
        for r in range(args.rounds):
            for name, flags in PRECISIONS.items():
                step_ms[name].append(1000 * step_seconds(train(cfg.replace(**flags))))
            for w in WORKERS:
                tokens_per_s[w].append(loader_throughput(lazy, w,
                                                         pad_token_id=tokenizer.pad_token_id)["tokens_per_second"])
            start = time.perf_counter()
            train(cfg.replace(run_name=f"one-{r}"))
            launch_s["1 process"].append(time.perf_counter() - start)
            start = time.perf_counter()
            launch(cfg.replace(run_name=f"two-{r}"), num_processes=2)
            launch_s["2 processes"].append(time.perf_counter() - start)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    ms = {k: statistics.median(v) for k, v in step_ms.items()}
    print("\nprecision   ms/step   x fp32")
    for name, value in ms.items():
        print(f"{name:<10} {value:8.1f}   {value / ms['fp32']:6.2f}")
    tps = {k: statistics.median(v) for k, v in tokens_per_s.items()}
    print("\nworkers   tokens/s   x 0 workers")
    for w, value in tps.items():
        print(f"{w:<8} {value:9.0f}   {value / tps[0]:6.2f}")
    print("\nrun (start-up included)   seconds")
    for name, values in launch_s.items():
        print(f"{name:<24} {statistics.median(values):8.1f}")


if __name__ == "__main__":
    main()
