"""Studies (nbkit.core.study), measured side by side in one run (absolute times drift here; ratios less):

  workers   wall seconds of the same 12 tiny-model trials run one after another in this process
            (backend "inprocess") and by 2 workers pulling trials from one SQLite study (backend
            "local", --workers 2: this process and a spawned one), and their ratio.
            Target: >= 1.6x on 2 cores.
  pruning   one question (learning_rate x warmup_ratio, a grid of 12 configurations), answered by the
            full grid and by the same grid with ASHA pruning (Optuna's SuccessiveHalvingPruner): the
            compute each used (epochs trained) and each best validation loss, at three training
            seeds (42 and two drawn at random once: a verdict about ASHA, not about one seed).
            Target: ASHA's best within 2% of the grid's best at <= 40% of its compute.
            Then the grid's own curves are replayed through the same Optuna pruner in --orders random
            orders (no training: each trial reports the epochs the grid measured, one trial after
            another as one worker would, until the pruner stops it): how often the target is met
            depends on the order the trials arrive in, which the live run above samples only once.
  cli       a CLI that answers at once: wall seconds of `python -m nbkit --help`, of a refused config and
            of a refused study spec, in fresh processes, for this working tree and for --against COMMIT
            (default HEAD: the last commit, so the change in progress against it), interleaved, median of
            --repeats; and a spawned study worker's start-up, `from nbkit.core.study import work`, then with
            what a trial of a full fine-tune imports first (`import nbkit.core.train`), then with all that
            train() imports (transformers' set_seed and get_scheduler, Accelerate); then the largest
            top-level imports of the first and the last (`python -X importtime`) in each tree.
            Target: a refusal in <= 1.5 s on 2 cores.

Not a test: the tests check that studies run every trial once, prune, resume and retry; this measures.

    python bench/study_speed.py [--rounds 1] [--epochs 6] [--part workers|pruning|cli] [--orders 500]
                                [--against COMMIT] [--repeats 5]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from nbkit.core.study import StudySpec, make_pruner, run_study
from nbkit.core.study_analysis import compute_saved, orders_summary, pruning_over_orders

# a tiny-model run of a few seconds: 320 arithmetic rows to train on, 20 steps an epoch
BASE = dict(model="tiny", dataset="arithmetic", max_samples=400, predict_with_generate=False)
LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]  # two and a half decades around the tiny model's best
WARMUP_RATIOS = [0.0, 0.1]
SEEDS = [42, 98468, 36804]  # 98468 and 36804 drawn with random.randint(100, 99999), never changed
PARTS = ("workers", "pruning", "cli")


def spec(name: str, folder: Path, epochs: int, pruner: str = "none", seed: int = 42) -> dict:
    return dict(study_name=name, base=dict(BASE, num_train_epochs=epochs, seed=seed), sampler="grid",
                scientific={"warmup_ratio": WARMUP_RATIOS}, nuisance={"learning_rate": LEARNING_RATES},
                pruner=pruner, pruner_settings={"reduction_factor": 3} if pruner == "asha" else {},
                storage=f"sqlite:///{folder}/studies.db", output_dir=str(folder / name))


def timed_study(study_spec: dict, workers: int, backend: str) -> tuple[float, optuna.Study]:
    start = time.perf_counter()
    study = run_study(study_spec, workers=workers, backend=backend, progress=False)
    return time.perf_counter() - start, study


def trial_seconds(study: optuna.Study) -> float:
    """The trials' own time, summed: what is left of a study's wall time is start-up and waiting."""
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials)


def workers_round(folder: Path, r: int, epochs: int) -> tuple[float, float]:
    serial, one = timed_study(spec(f"serial_{r}", folder, epochs), 1, "inprocess")
    parallel, two = timed_study(spec(f"parallel_{r}", folder, epochs), 2, "local")
    print(f"round {r + 1}: 12 trials in process {serial:.1f} s (trials {trial_seconds(one):.1f} s), "
          f"2 worker processes {parallel:.1f} s (trials {trial_seconds(two):.1f} s over both), "
          f"ratio {serial / parallel:.2f}x; with no start-up and no wait the ratio would be "
          f"{2 * trial_seconds(one) / trial_seconds(two):.2f}x (two 1-thread trials at a time against one "
          "2-thread trial)", flush=True)
    return serial, parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=6, help="epochs of every trial (the grid's full length)")
    parser.add_argument("--part", choices=PARTS, help="measure only this part (default: all)")
    parser.add_argument("--orders", type=int, default=500, help="random orders the grid's curves are replayed in")
    parser.add_argument("--against", default="HEAD", metavar="COMMIT", help="cli: the commit to compare with")
    parser.add_argument("--repeats", type=int, default=5, help="cli: fresh processes per command and tree")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{os.cpu_count()} cores; {len(LEARNING_RATES) * len(WARMUP_RATIOS)} trials of {args.epochs} epochs",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for part in [args.part] if args.part else PARTS:
            {"workers": workers_part, "pruning": pruning_part, "cli": cli_part}[part](folder, args)


def workers_part(folder: Path, args) -> None:
    times = [workers_round(folder, r, args.epochs) for r in range(args.rounds)]
    serial, parallel = (sorted(t[i] for t in times)[len(times) // 2] for i in (0, 1))
    print(f"workers: in process {serial:.1f} s, --workers 2 {parallel:.1f} s: "
          f"{serial / parallel:.2f}x (target >= 1.6x)", flush=True)


def pruning_part(folder: Path, args) -> None:
    met = 0
    for seed in SEEDS:
        _, grid = timed_study(spec(f"grid_s{seed}", folder, args.epochs, seed=seed), 2, "local")
        asha_spec = spec(f"asha_s{seed}", folder, args.epochs, pruner="asha", seed=seed)
        _, asha = timed_study(asha_spec, 2, "local")
        saved = compute_saved(grid, asha, labels=("grid", "ASHA"))
        met += saved["compute_ratio"] <= 0.40 and saved["relative_gap"] <= 0.02
        print(f"seed {seed}: {saved['summary']}", flush=True)
        print(f"pruning at seed {seed}: ASHA used {saved['compute_ratio']:.0%} of the grid's compute "
              f"(target <= 40%), best {saved['relative_gap']:+.2%} from the grid's (target within 2%)", flush=True)
        print(f"  {orders_line(grid, asha_spec, args.orders, seed)}", flush=True)
    print(f"pruning: the target met at {met} of {len(SEEDS)} seeds")


def orders_line(grid: optuna.Study, asha_spec: dict, orders: int, seed: int) -> str:
    """The target over `orders` random arrival orders of the grid's curves (pruning_over_orders)."""
    table = pruning_over_orders(grid, lambda: make_pruner(StudySpec.from_dict(asha_spec)), orders, seed)
    s = orders_summary(table, within=0.02, share=0.40)
    return (f"replayed in {orders} random orders: compute median {s['median_share']:.0%} "
            f"(10-90%: {s['share_10']:.0%}-{s['share_90']:.0%}), within 2% of the grid's best "
            f"in {s['within']:.0%} of orders, target (both) met in {s['target_met']:.0%}")



# ---------------------------------------------------------------- cli: start-up, this tree against a commit

REPO = Path(__file__).resolve().parent.parent
BAD_SPEC = "study_name: bad\nbase: {model: tiny}\nscientific: {learning_rat: [1.0e-3, 3.0e-3]}\nsampler: grid\n"
CLI_COMMANDS = {  # name: arguments of a fresh `python`
    "--help": ["-m", "nbkit", "--help"],
    "refused config": ["-m", "nbkit", "train", "--set", "learning_rate=-1"],
    "refused study spec": ["-m", "nbkit", "study", "run", "bad.yaml"],
    "worker start": ["-c", "from nbkit.core.study import work"],
    "worker + import nbkit.core.train": ["-c", "from nbkit.core.study import work; import nbkit.core.train"],
    # what train() itself imports next, whatever the method: transformers' set_seed and get_scheduler live in
    # (or import) transformers.trainer_utils, which imports peft (and so bitsandbytes) whenever peft is installed
    "worker + all a full-FT trial imports": ["-c", "from nbkit.core.study import work; import nbkit.core.train; "
                                             "from transformers import get_scheduler, set_seed; "
                                             "from accelerate import Accelerator"],
}
IMPORTTIME_OF = ("worker start", "worker + all a full-FT trial imports")


def cli_part(folder: Path, args) -> None:
    """Each command in a fresh process, for this tree and for args.against, interleaved; medians and ratios."""
    base = folder / "base"
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.against], capture_output=True, text=True,
                            check=True).stdout.strip()
    base.mkdir()  # the commit's package only, from git itself: no worktree, nothing in the repository changes
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "nbkit"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
    (folder / "bad.yaml").write_text(BAD_SPEC)
    trees = {"this tree": REPO, f"{commit[:8]}": base}
    print(f"cli: {args.repeats} fresh processes per command and tree, interleaved; {sys.executable}", flush=True)
    times = {(name, tree): [] for name in CLI_COMMANDS for tree in trees}
    for _ in range(args.repeats):
        for name, argv in CLI_COMMANDS.items():
            for tree, path in trees.items():
                times[name, tree].append(timed_python(argv, path, folder))
    print(f"{'command':38s}" + "".join(f"{t:>14s}" for t in trees) + "   ratio")
    for name in CLI_COMMANDS:
        medians = [statistics.median(times[name, tree]) for tree in trees]
        print(f"{name:38s}" + "".join(f"{m:12.2f} s" for m in medians) + f"   {medians[1] / medians[0]:5.1f}x",
              flush=True)
    print("python -X importtime: the largest top-level imports (cumulative s, nested ones included)")
    for name in IMPORTTIME_OF:
        for tree, path in trees.items():
            print(f"  {name}, {tree}: {importtime_top(CLI_COMMANDS[name], path, folder)}", flush=True)


def tree_env(path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(path)}


def timed_python(argv: list, path: Path, cwd: Path) -> float:
    """Wall seconds of `python ARGV` with the package from `path`; a refusal must exit 2, the rest 0."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=tree_env(path), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    expected = 2 if "train" in argv or "study" in argv else 0
    if done.returncode != expected:
        print(f"  note: {' '.join(argv)} in {path} exited {done.returncode}: {done.stderr.strip()[-200:]}")
    return seconds


def importtime_top(argv: list, path: Path, cwd: Path, n: int = 7) -> str:
    """The n top-level packages with the largest cumulative import time, from `python -X importtime ARGV`."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=cwd, env=tree_env(path),
                          capture_output=True, text=True)
    cumulative = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, total, name = line.split("|")
        name = name.strip()
        if "." not in name:  # a top-level package, counted once with all it imported
            cumulative[name] = max(cumulative.get(name, 0), int(total) / 1e6)
    top = sorted(cumulative.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in top)


if __name__ == "__main__":
    main()
