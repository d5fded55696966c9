"""Does a change keep every chapter's behaviour? Runs the chapters at two commits and compares
their results.json: each check's verdict and its numbers.

    .venv/bin/python bench/chapter_results.py run --out /tmp/behave/now                  # this checkout
    .venv/bin/python bench/chapter_results.py run --ref 2513d2b --out /tmp/behave/base   # another commit
    .venv/bin/python bench/chapter_results.py compare /tmp/behave/base /tmp/behave/now [04_epochs_early_stopping]

`run` executes each chapter headless at its defaults (the capstone on the tiny model, as `make test`
does), through chapter_speed.run_once, and keeps `<out>/<chapter>/results.json`. `compare` pairs the
checks of each chapter by claim and text (`says`) and prints, per chapter, the checks whose verdict or
numbers differ and the checks found on one side only; numbers named in TIMINGS (wall-clock
measurements) are left out, since no two runs share them. Not part of the tests.
"""
import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from chapter_speed import PARAMETERS, REPO, run_once, worktree

TIMINGS = ("seconds", "per_second", "per_step", "time", "ratio_bf16", "speedup", "wall", "_MB", "MB")
TOLERANCE = 1e-9  # relative: the same seeds on the same CPU give the same numbers


def run(ref: str | None, out: Path, names: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="nbkit-results-") as tmp:
        repo = worktree(ref, Path(tmp) / ref) if ref else REPO
        try:
            failed = 0
            for notebook in sorted((repo / "notebooks").glob("*.ipynb")):
                if names and notebook.stem not in names:
                    continue
                try:
                    seconds = run_once(notebook, PARAMETERS.get(notebook.stem, {}), repo, keep=out)
                    print(f"{notebook.stem}: {seconds:.0f} s", flush=True)
                except Exception as err:  # noqa: BLE001 - named, the others still run
                    failed += 1
                    print(f"{notebook.stem}: FAILED {type(err).__name__}: {str(err).strip()[-300:]}", flush=True)
        finally:
            if ref:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(repo)],
                               capture_output=True)
    return 1 if failed else 0


def is_timing(key: str) -> bool:
    return any(part in key for part in TIMINGS)


def differences(old, new, where: str = "") -> list[str]:
    """Where two numbers records differ, timings aside."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            if is_timing(str(key)):
                continue
            if key not in old or key not in new:
                found.append(f"{where}.{key}: only in {'new' if key in new else 'old'}")
            else:
                found += differences(old[key], new[key], f"{where}.{key}")
        return found
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{where}: {len(old)} items, now {len(new)}"]
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{where}[{i}]")]
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        same = (math.isclose(old, new, rel_tol=TOLERANCE, abs_tol=1e-12)
                or (math.isnan(old) and math.isnan(new)))
        return [] if same else [f"{where}: {old!r} -> {new!r}"]
    return [] if old == new else [f"{where}: {str(old)[:80]!r} -> {str(new)[:80]!r}"]


def paired(old_checks: list, new_checks: list) -> list[tuple]:
    """(old, new) checks paired by claim and text (`says`), in the new order; a check found on one side
    only is paired with None."""
    left = list(old_checks)
    pairs = []
    for b in new_checks:
        match = next((a for a in left if a["claim"] == b["claim"] and a["says"] == b["says"]), None)
        if match is not None:
            left.remove(match)
        pairs.append((match, b))
    return pairs + [(a, None) for a in left]


def compare(old_dir: Path, new_dir: Path, names: list[str]) -> int:
    changed = 0
    for old_file in sorted(old_dir.glob("*/results.json")):
        chapter = old_file.parent.name
        if names and chapter not in names:
            continue
        new_file = new_dir / chapter / "results.json"
        if not new_file.exists():
            print(f"{chapter}: no results.json in {new_dir}")
            changed += 1
            continue
        old, new = json.loads(old_file.read_text()), json.loads(new_file.read_text())
        lines = []
        old_checks, new_checks = old.get("checks", []), new.get("checks", [])
        for a, b in paired(old_checks, new_checks):
            if b is None:
                lines.append(f"{a['claim']}: a check is gone: {a['says'][:100]!r}")
                continue
            if a is None:
                lines.append(f"{b['claim']}: a new check: {b['says'][:100]!r}")
                continue
            label = f"{a['claim']} {a['says'][:40]!r}"
            for key in ("holds", "holds_per_seed", "seeds"):
                if a.get(key) != b.get(key):
                    lines.append(f"{label}: {key} {a.get(key)} -> {b.get(key)}")
            lines += [f"{label}: {d}" for d in differences(a.get("numbers"), b.get("numbers"), "numbers")]
        verdicts = sum(c.get("holds") is True for c in new_checks)
        print(f"{chapter}: {len(new_checks)} checks, {verdicts} hold; "
              + ("same verdicts and numbers (timings aside)" if not lines else f"{len(lines)} difference(s)"))
        for line in lines:
            print(f"    {line}")
        changed += bool(lines)
    return 1 if changed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="run the chapters, keep their results.json")
    go.add_argument("--ref", help="a git commit (default: this checkout)")
    go.add_argument("--out", type=Path, required=True)
    go.add_argument("chapters", nargs="*", help="chapter names (default: every one)")
    diff = sub.add_parser("compare", help="compare two folders written by run")
    diff.add_argument("old", type=Path)
    diff.add_argument("new", type=Path)
    diff.add_argument("chapters", nargs="*", help="chapter names (default: every one in old)")
    args = parser.parse_args()
    logging.getLogger("papermill").setLevel(logging.WARNING)
    os.environ.pop("MPLBACKEND", None)  # the kernel inherits it; Agg would drop the images (docs/DESIGN.md)
    if args.command == "run":
        return run(args.ref, args.out.resolve(), args.chapters)
    return compare(args.old, args.new, args.chapters)


if __name__ == "__main__":
    sys.exit(main())
