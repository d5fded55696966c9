"""How long does each chapter take, run headless at its defaults?

    .venv/bin/python bench/chapter_speed.py                      # every notebooks/*.ipynb
    .venv/bin/python bench/chapter_speed.py notebooks/00_quickstart.ipynb --repeats 3
    .venv/bin/python bench/chapter_speed.py --against 0b9d645   # side by side with that commit's chapters
    .venv/bin/python bench/chapter_speed.py --against 2513d2b --keep /tmp/both   # and keep both results.json

`--against REF` checks REF out in a temporary git worktree and runs its chapter of the same name
right before each of today's (its kernel imports REF's nbkit, through PYTHONPATH), then prints
both times and today/REF: the cost of a change measured in one invocation, on one machine state.
0b9d645 is the last commit before seed sets (issue 16): every verdict computed on one seed.

Runs each chapter with papermill (from notebooks/, as the tests do) into a temporary folder:
only `output_dir` is set, to that folder, so nothing lands in the repository. Prints per chapter
the wall time (median over repeats, kernel start included), every repeat, the target and
pass/fail. Target (issue 16): <= 180 s per chapter on 2 CPU cores, the quickstart 60 s. Leave
OMP_NUM_THREADS unset, as `make test` does: with OMP_NUM_THREADS=2 the quickstart at 2513d2b took
355 s instead of 50 s here (one of its runs 285 s instead of 20; OpenMP threads oversubscribing the
two cores beside the pool's workers, we think). A machine shared with other jobs runs slower:
compare chapters measured in the same invocation. Not part of the tests.
"""
import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import papermill

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
# per chapter, headless at its defaults, on 2 CPU cores, with every verdict on its seed set (issue 16)
TARGET_SECONDS = 180.0
TARGETS = {"00_quickstart": 60.0, "07_capstone": 600.0}  # given by their issues; the rest: TARGET_SECONDS
# the capstone's default model is SmolLM2 (tens of minutes for its seed set): measured on the tiny model,
# as `make test` runs it, unless --capstone-model says otherwise
PARAMETERS = {"07_capstone": {"model": "tiny"}}


def run_once(notebook: Path, parameters: dict, repo: Path = REPO, keep: Path | None = None) -> float:
    """Wall seconds for one headless run of `notebook` from repo's notebooks/ and with repo's nbkit;
    raises papermill's error if a cell fails. `keep`: the folder its runs and results.json go to
    (default: a temporary one, removed)."""
    old_path = os.environ.get("PYTHONPATH")
    if repo != REPO:  # the kernel inherits this: it imports that checkout's nbkit, not the installed one
        os.environ["PYTHONPATH"] = str(repo)
    try:
        with tempfile.TemporaryDirectory(prefix="nbkit-speed-") as tmp:
            start = time.perf_counter()
            papermill.execute_notebook(str(notebook), str(Path(tmp) / "out.ipynb"), cwd=str(repo / "notebooks"),
                                       parameters={"output_dir": str(keep or Path(tmp) / "runs"), **parameters},
                                       kernel_name="python3", progress_bar=False)
            return time.perf_counter() - start
    finally:
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path


def worktree(ref: str, folder: Path) -> Path:
    """A checkout of `ref` in `folder` (git worktree, detached); raises if git cannot make it."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), ref], check=True,
                   capture_output=True, text=True)
    return folder


def timed(notebook: Path, parameters: dict, repeats: int, repo: Path = REPO, keep: Path | None = None):
    """(times, error) for `repeats` runs; the first failure ends them, named. `keep`: the first run's
    output folder (its results.json, for bench/chapter_results.py compare); the others' are removed."""
    times = []
    for repeat in range(repeats):
        try:
            times.append(run_once(notebook, parameters, repo, keep=keep if repeat == 0 else None))
        except Exception as err:  # noqa: BLE001 - report it in the table, go on with the others
            message = str(err).strip().splitlines()[-1] if str(err).strip() else ""
            return times, f"{type(err).__name__}: {message}"
        print(f"  {notebook.stem}{'' if repo == REPO else ' (' + repo.name + ')'}: {times[-1]:.1f} s", flush=True)
    return times, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--against", metavar="REF", help="also run each chapter as it was at this git commit")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep each chapter's first run in DIR/now/ (and DIR/REF/ with --against), to compare "
                             "their results.json with bench/chapter_results.py compare DIR/REF DIR/now")
    parser.add_argument("--capstone-model", default=PARAMETERS["07_capstone"]["model"],
                        help="the capstone's model (default: tiny; its own default is smollm2-135m)")
    args = parser.parse_args()
    notebooks = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    if not notebooks:
        print(f"no notebooks in {NOTEBOOKS_DIR}")
        return 1
    parameters = {**PARAMETERS, "07_capstone": {"model": args.capstone_model}}
    logging.getLogger("papermill").setLevel(logging.WARNING)  # not its per-run "Input Notebook: ..." lines
    os.environ.pop("MPLBACKEND", None)  # the kernel inherits it; Agg would drop the images (docs/DESIGN.md)
    print(f"{len(notebooks)} chapter(s), {args.repeats} repeat(s); {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
          + (f"; against {args.against}" if args.against else ""), flush=True)

    with tempfile.TemporaryDirectory(prefix="nbkit-against-") as tmp:
        old_repo = worktree(args.against, Path(tmp) / args.against) if args.against else None
        try:
            rows = []
            for notebook in notebooks:
                chapter_parameters = parameters.get(notebook.stem, {})
                old = None
                if old_repo is not None:
                    old_notebook = old_repo / "notebooks" / notebook.name
                    old_keep = args.keep.resolve() / args.against if args.keep else None
                    old = timed(old_notebook, chapter_parameters, args.repeats, old_repo, old_keep) \
                        if old_notebook.exists() else ([], "not in that commit")
                times, error = timed(notebook, chapter_parameters, args.repeats,
                                     keep=args.keep.resolve() / "now" if args.keep else None)
                median = statistics.median(times) if times else None
                ok = error is None and median is not None and median <= TARGETS.get(notebook.stem, TARGET_SECONDS)
                rows.append((notebook.stem, median, times, "pass" if ok else "FAIL", error, old))
        finally:
            if old_repo is not None:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_repo)],
                               capture_output=True)

    width = max(len(r[0]) for r in rows + [("chapter",)])
    against = f"  {args.against:>8}  {'ratio':>6}" if args.against else ""
    print(f"\n{'chapter':<{width}}  {'seconds':>8}{against}  {'target':>8}  result  repeats")
    for name, median, times, verdict, error, old in rows:
        shown = f"{median:.1f}" if median is not None else "-"
        target = TARGETS.get(name, TARGET_SECONDS)
        repeats = ", ".join(f"{t:.1f}" for t in times)
        columns = ""
        if old is not None:
            old_median = statistics.median(old[0]) if old[0] else None
            ratio = f"{median / old_median:.2f}x" if median and old_median else "-"
            columns = f"  {old_median if old_median is None else format(old_median, '.1f'):>8}  {ratio:>6}"
            if old[1]:
                error = (error + "; " if error else "") + f"{args.against}: {old[1]}"
        print(f"{name:<{width}}  {shown:>8}{columns}  {'<= ' + format(target, 'g'):>8}  {verdict:<6}  {repeats}"
              + (f"  ({error})" if error else ""))
    return 0 if all(r[3] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
