"""How long does each chapter take, run headless at its defaults?

    OMP_NUM_THREADS=2 .venv/bin/python bench/chapter_speed.py                      # every notebooks/*.ipynb
    .venv/bin/python bench/chapter_speed.py notebooks/00_quickstart.ipynb --repeats 3

Runs each chapter with papermill (from notebooks/, as the tests do) into a temporary folder:
only `output_dir` is set, to that folder, so nothing lands in the repository. Prints per chapter
the wall time (median over repeats, kernel start included), every repeat, the target and
pass/fail. Target (product brief): <= 120 s per chapter on 2 CPU cores, or the chapter's own
entry in TARGETS. A machine shared with
other jobs runs slower: compare chapters measured in the same invocation. Not part of the tests.
"""
import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import papermill

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
TARGET_SECONDS = 120.0  # per chapter, headless at its defaults, on 2 CPU cores
TARGETS = {"02_optimizer": 180.0, "03_batch_size": 180.0, "04_epochs_early_stopping": 180.0,
           "05_peft_lora_qlora": 180.0, "06_stability_reproducibility_speed": 180.0,
           "07_capstone": 600.0}  # longer budgets given by their issues; the rest: TARGET_SECONDS


def run_once(notebook: Path) -> float:
    """Wall seconds for one headless run; raises papermill's error if a cell fails."""
    with tempfile.TemporaryDirectory(prefix="nbkit-speed-") as tmp:
        start = time.perf_counter()
        papermill.execute_notebook(str(notebook), str(Path(tmp) / "out.ipynb"), cwd=str(NOTEBOOKS_DIR),
                                   parameters={"output_dir": str(Path(tmp) / "runs")}, kernel_name="python3",
                                   progress_bar=False)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    notebooks = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    if not notebooks:
        print(f"no notebooks in {NOTEBOOKS_DIR}")
        return 1
    logging.getLogger("papermill").setLevel(logging.WARNING)  # not its per-run "Input Notebook: ..." lines
    os.environ.pop("MPLBACKEND", None)  # the kernel inherits it; Agg would drop the images (DESIGN.md)
    print(f"{len(notebooks)} chapter(s), {args.repeats} repeat(s); {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)

    rows = []
    for notebook in notebooks:
        times, error = [], None
        for _ in range(args.repeats):
            try:
                times.append(run_once(notebook))
            except Exception as err:  # noqa: BLE001 - report it in the table, go on with the others
                error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
                break
            print(f"  {notebook.stem}: {times[-1]:.1f} s", flush=True)
        median = statistics.median(times) if times else None
        ok = error is None and median is not None and median <= TARGETS.get(notebook.stem, TARGET_SECONDS)
        rows.append((notebook.stem, median, times, "pass" if ok else "FAIL", error))

    width = max(len(r[0]) for r in rows + [("chapter",)])
    print(f"\n{'chapter':<{width}}  {'seconds':>8}  {'target':>8}  result  repeats")
    for name, median, times, verdict, error in rows:
        shown = f"{median:.1f}" if median is not None else "-"
        target = TARGETS.get(name, TARGET_SECONDS)
        repeats = ", ".join(f"{t:.1f}" for t in times)
        print(f"{name:<{width}}  {shown:>8}  {'<= ' + format(target, 'g'):>8}  {verdict:<6}  {repeats}"
              + (f"  ({error})" if error else ""))
    return 0 if all(r[3] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
