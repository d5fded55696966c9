"""A room of students on one class (nbkit.core.classroom), measured on this machine, on SQLite and PostgreSQL:

  students  `--students` - 1 terminal students (`python -m nbkit class join`, one torch thread each), all
            started at once, training tiny one-epoch runs until the design (`--configurations`) is done, at
            each CPU priority of `--nice` (class join's default, 19, and 0, the usual priority, side by side);
  board     the instructor's live board (nbkit.views.board.Board, reading every 0.5 s) in this process: for
            every finished run, the time from its end (Optuna's datetime_complete) to the board showing it;
  panel     one more student in a chapter's panel (nbkit.views.ui, in its own process), pressing Train next
            three times while the room runs (in a small class of its own in the same database, so the room
            cannot have taken every configuration first): from the click to the first plotted point.

It prints, per database and priority: trials per minute for the whole room, the board's median and slowest delay
(target <= 2 s) and the panel's Train next to first point (target <= 3 s, as the panel's Train). As in
bench/panel_latency.py, the first press in the fresh process also pays for the trainer's lazy imports and
first-call set-up (in a chapter, its headless runs paid them before the panel): it is shown ("cold") and the
target applies to the presses after it.

Not a test: tests/test_classroom_load.py checks that a room of students runs every configuration once; this
measures how it feels while it does.

    python bench/classroom_load.py [--students 30] [--configurations 40] [--databases sqlite postgresql] [--nice 19 0]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the PostgreSQL server the tests start (study_helpers)

TINY = dict(model="tiny", dataset="arithmetic", max_samples=80, predict_with_generate=False, num_train_epochs=1)
PANEL_STUDENT = """
import json, sys
from nbkit import TrainConfig
from nbkit.views.ui import panel
name, storage = sys.argv[1], sys.argv[2]
p = panel(TrainConfig(model="tiny"), ["learning_rate", "warmup_ratio"], join=name + "@" + storage, student="panel")
seconds = []
for _ in range(3):
    p._on_train_next()
    if not p.join(600) or p.first_plot_seconds is None:
        break
    seconds.append(p.first_plot_seconds)
print(json.dumps(seconds))
"""


def make_class(name: str, storage: str, configurations: int):
    from nbkit.core.classroom import create_class
    from nbkit.core.study import StudySpec

    rates = [float(f"{10 ** (-4 + 3 * i / max(1, configurations // 2 - 1)):.3g}") for i in range(configurations // 2)]
    spec = StudySpec.from_dict(dict(study_name=name, base=TINY, sampler="grid", storage=storage,
                                    scientific={"learning_rate": rates, "warmup_ratio": [0.0, 0.1]}))
    return create_class(spec, "01_learning_rate")


def start_students(name: str, storage: str, n: int, folder: Path, nice: int) -> list[subprocess.Popen]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-m", "nbkit", "class", "join", name, "--storage", storage, "--student",
                              f"student{i:02d}", "--threads", "1", "--output-dir", str(folder / "runs"),
                              "--nice", str(nice)],
                             cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            for i in range(n)]


def done_so_far(study) -> int:
    """The class's finished configurations; -1 while the database keeps this reader waiting past its timeout."""
    import optuna

    from nbkit.core.classroom import class_counts

    try:
        return class_counts(study)["done"]
    except optuna.exceptions.StorageInternalError:
        print("  (the bench's reader waited past the database's timeout)", flush=True)
        return -1


def room(storage: str, students: int, configurations: int, folder: Path, nice: int) -> dict:
    """Run one room to its end; the measurements."""
    from nbkit.core.classroom import class_runs, open_class
    from nbkit.views.board import Board

    name = f"bench_{int(time.time())}"
    make_class(name, storage, configurations)
    make_class(name + "_panel", storage, 6)
    board = Board(open_class(name, storage, read_only=True), every=0.5)  # as `class board` opens it
    started = time.time()
    processes = start_students(name, storage, students - 1, folder, nice)
    study = open_class(name, storage, read_only=True)
    while done_so_far(study) < min(5, configurations // 4):  # the room is busy: now the panel student
        time.sleep(0.5)
    panel = subprocess.run([sys.executable, "-c", PANEL_STUDENT, name + "_panel", storage], cwd=folder,
                           capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    codes = [p.wait() for p in processes]
    elapsed = time.time() - started
    time.sleep(2)  # the board's last look
    board.close()
    rows = [r for r in class_runs(study) if r["state"] == "COMPLETE"]
    delays = [board.shown_at[(r["kind"], r["student"], r["trial"])] - r["finished"] for r in rows
              if (r["kind"], r["student"], r["trial"]) in board.shown_at]
    panel_seconds = json.loads(panel.stdout.strip().splitlines()[-1]) if panel.returncode == 0 else []
    return {"trials": len(rows), "minutes": elapsed / 60, "failed students": sum(c != 0 for c in codes),
            "board delays": delays, "unseen": len(rows) - len(delays), "panel": panel_seconds,
            "panel error": "" if panel.returncode == 0 else panel.stderr.strip().splitlines()[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--configurations", type=int, default=40)
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--nice", nargs="+", type=int, default=[19, 0],
                        help="the students' CPU priorities to compare (class join --nice; 19 is its default)")
    args = parser.parse_args()
    print(f"{args.students} students, {args.configurations} configurations of a tiny one-epoch run, "
          f"{os.cpu_count()} CPUs", flush=True)
    results = {}
    for database in args.databases:
        for nice in args.nice:
            with tempfile.TemporaryDirectory(prefix="nbkit-room-") as tmp:
                if database == "sqlite":
                    result = room(f"sqlite:///{tmp}/class.db", args.students, args.configurations, Path(tmp), nice)
                else:
                    from study_helpers import postgresql_server
                    with postgresql_server() as url:
                        result = room(url, args.students, args.configurations, Path(tmp), nice)
            results[f"{database}, nice {nice}"] = result
            print(f"  {database}, students at nice {nice}: done", flush=True)
    print()
    print(f"{'database, students':<20}{'trials':>7}{'trials/min':>11}{'board median':>13}{'board max':>10}{'target':>8}"
          f"{'panel next->1st point':>27}{'target':>8}  notes")
    for database, r in results.items():
        delays, panel = r["board delays"], r["panel"]
        board_max = max(delays) if delays else float("nan")
        notes = [f"{r['failed students']} students failed" if r["failed students"] else "",
                 f"{r['unseen']} runs never seen by the board" if r["unseen"] else "", " ".join(r["panel error"])]
        shown = (f"cold {panel[0]:.2f}; " + ", ".join(f"{s:.2f}" for s in panel[1:]) + " s") if panel else "none"
        print(f"{database:<20}{r['trials']:>7}{r['trials'] / r['minutes']:>11.1f}"
              f"{statistics.median(delays) if delays else float('nan'):>12.2f}s{board_max:>9.2f}s"
              f"{'pass' if board_max <= 2 else 'miss':>8}{shown:>27}"
              f"{'pass' if panel[1:] and max(panel[1:]) <= 3 else 'miss':>8}  {'; '.join(n for n in notes if n)}")


if __name__ == "__main__":
    main()
