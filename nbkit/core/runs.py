"""The run store: every training run is a folder of plain files.

    runs/<run id>/
        config.json    the TrainConfig, every field
        steps.csv      a row per optimizer step, appended line by line while training
                       (its eval_loss is filled every eval_steps steps, if asked)
        epochs.csv     a row per epoch-end evaluation (epoch 0 = the base model); its
                       learning_rate is the LR at that moment, i.e. what the next step uses
        summary.json   status, best epoch, best eval loss, timings, parameter counts

Crash safety: JSON and the epochs table are written to a temporary file and renamed over
the old one (a rename is atomic), and steps.csv only ever grows by whole lines. A run
killed with SIGKILL therefore leaves readable files; its summary still says "running" with
the pid of a process that no longer exists, so `load_run` reports it as "incomplete".
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import pandas as pd

from nbkit.core.config import TrainConfig
from nbkit.core.i18n import N_, _

# Fields that differ between runs without making them different experiments.
NOT_KNOBS = ("output_dir", "run_name", "disable_tqdm", "logging_steps", "dataloader_num_workers")

# "pruned": a study's pruner stopped the run at an epoch end (nbkit.core.study); its curves stop there
# Each status with its text as a reader sees it (a plot's title, the panel's and the board's tables): the value itself
# in English, translated in Chinese; the data (run.json, a DataFrame's status column) keeps the value.
STATUS_SHOWN = {"running": N_("running"), "completed": N_("completed"), "early_stopped": N_("early_stopped"),
                "diverged": N_("diverged"), "interrupted": N_("interrupted"), "incomplete": N_("incomplete"),
                "pruned": N_("pruned")}
STATUSES = tuple(STATUS_SHOWN)


def status_shown(status: str) -> str:
    """`status` in the reader's language ("completed" -> "已完成" in Chinese); an unknown one as it is."""
    return _(STATUS_SHOWN[status]) if status in STATUS_SHOWN else status


def write_json_atomic(path: Path, data: dict, nan_as_null: bool = False) -> None:
    """Write JSON so that a reader sees either the old file or the new one, never half. Run files keep
    NaN (Python's json reads it back, and a diverged run's losses are NaN); nan_as_null=True writes
    NaN and inf as null, for files other tools read (a chapter's results.json: JSON has no NaN)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(jsonable(data, nan_as_null), f, indent=2, allow_nan=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def jsonable(value, nan_as_null: bool = False):
    """numpy / torch scalars and paths as plain JSON values, in dicts and lists at any depth;
    nan_as_null: NaN and inf become None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v, nan_as_null) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, nan_as_null) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalar
        value = value.item()
    if nan_as_null and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def file_safe_label(text: str) -> str:
    """Free text as part of a file or folder name, still readable: every run of characters other than
    letters, digits and . _ = , + - becomes one "-": "lr=1e-3/cosine" -> "lr=1e-3-cosine". Run folders,
    a sweep's run names and a study's trial names are made with it."""
    return re.sub(r"[^A-Za-z0-9._=,+-]+", "-", str(text))


def new_run_dir(output_dir: str | Path, run_name: str | None = None) -> Path:
    """A fresh, unique folder: <time>_<name or short id>."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # a run_name is free text ("lr=1e-3/cosine"): keep it readable but safe as a folder name
    suffix = file_safe_label(run_name)[:80] if run_name else uuid.uuid4().hex[:6]
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    path, n = Path(output_dir) / f"{stamp}_{suffix}", 1
    while True:  # two runs in the same second with the same name, maybe in two worker processes at once:
        try:      # mkdir is the atomic test, a check before it would race
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = Path(output_dir) / f"{stamp}_{suffix}-{n}"


class RunWriter:
    """Writes one run's files while it trains. Used by nbkit.core.train; the main process only."""

    def __init__(self, path: Path, config: dict):
        self.path = Path(path)
        self.summary = {"status": "running", "pid": os.getpid(), "host": socket.gethostname(),
                        "started_at": time.time()}
        self.epoch_rows: list[dict] = []
        self._steps_file = None
        self._steps_writer = None
        write_json_atomic(self.path / "config.json", config)
        self.update_summary()

    def log_step(self, row: dict) -> None:
        if self._steps_writer is None:  # the first row fixes the columns
            self._steps_file = open(self.path / "steps.csv", "w", newline="")
            self._steps_writer = csv.DictWriter(self._steps_file, fieldnames=list(row))
            self._steps_writer.writeheader()
        self._steps_writer.writerow(row)
        self._steps_file.flush()  # a whole line reaches the OS before the next step starts

    def log_eval(self, row: dict) -> None:
        self.epoch_rows.append(row)
        tmp = self.path / f"epochs.csv.tmp{os.getpid()}"
        pd.DataFrame(self.epoch_rows).to_csv(tmp, index=False)
        os.replace(tmp, self.path / "epochs.csv")

    def update_summary(self, **fields) -> None:
        self.summary.update(fields)
        write_json_atomic(self.path / "summary.json", self.summary)

    def close(self, **fields) -> None:
        fields.setdefault("finished_at", time.time())
        self.update_summary(**fields)
        if self._steps_file is not None:
            self._steps_file.close()


@dataclass(eq=False)  # two Runs are equal only if they are the same object
class Run:
    """A finished (or loaded) run. `model` and `tokenizer` are set only for a run trained in
    this process (the weights are not saved to the store by default: runs stay small)."""
    path: Path
    config: dict
    steps: pd.DataFrame
    epochs: pd.DataFrame
    summary: dict
    model: object = field(default=None, repr=False)
    tokenizer: object = field(default=None, repr=False)

    @property
    def status(self) -> str:
        return self.summary["status"]

    @property
    def best_epoch(self):
        return self.summary.get("best_epoch")

    @property
    def best_eval_loss(self):
        return self.summary.get("best_eval_loss")

    @property
    def name(self) -> str:
        return self.path.name

    def drop_weights(self, copy: bool = False) -> "Run":
        """Let go of the model and tokenizer (a real LLM's weights are ~0.5 GB a run; the curves and
        files stay). copy=False: this Run loses them, and is returned; copy=True: a copy without them
        is returned and this Run keeps its own (a Run that belongs to the caller, say)."""
        run = replace(self) if copy else self
        run.model = run.tokenizer = None
        return run

    def __repr__(self) -> str:
        loss = self.best_eval_loss
        loss = f"{loss:.4f}" if isinstance(loss, float) and math.isfinite(loss) else loss
        return (f"Run({self.name!r}, status={self.status!r}, best_epoch={self.best_epoch}, "
                f"best_eval_loss={loss})")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    # on_bad_lines="skip": a line cut short by a kill mid-write is dropped, the rest is read
    return pd.read_csv(path, on_bad_lines="skip")


def load_run(path: str | Path) -> Run:
    """Read a run folder back. A run whose writer died without closing it is "incomplete"."""
    path = Path(path)
    if not (path / "summary.json").exists():
        raise FileNotFoundError(_("{path} is not a run folder (no summary.json)").format(path=path))
    summary = json.loads((path / "summary.json").read_text())
    if summary.get("status") == "running":
        same_host = summary.get("host") == socket.gethostname()
        if not (same_host and _pid_alive(summary.get("pid", -1))):
            summary["status"] = "incomplete"
    config = json.loads((path / "config.json").read_text())
    return Run(path=path, config=config, steps=_read_csv(path / "steps.csv"),
               epochs=_read_csv(path / "epochs.csv"), summary=summary)


def list_runs(output_dir: str | Path = "runs") -> pd.DataFrame:
    """A row per run under output_dir, oldest first: status, results and the main knobs."""
    rows = []
    for folder in sorted(Path(output_dir).glob("*/summary.json")):
        try:
            run = load_run(folder.parent)
        except (OSError, ValueError) as err:  # a foreign or damaged folder: say so, skip it
            rows.append({"run": folder.parent.name, "status": _("unreadable: {error}").format(error=err)})
            continue
        s, c = run.summary, run.config
        rows.append({
            "run": run.name, "status": run.status,
            "best_epoch": s.get("best_epoch"), "best_eval_loss": s.get("best_eval_loss"),
            "final_eval_accuracy": s.get("final_eval_accuracy"),
            "model": c.get("model"), "dataset": c.get("dataset"),
            "finetuning_type": c.get("finetuning_type"), "learning_rate": c.get("learning_rate"),
            "lr_scheduler_type": c.get("lr_scheduler_type"), "optim": c.get("optim"),
            "per_device_train_batch_size": c.get("per_device_train_batch_size"),
            "gradient_accumulation_steps": c.get("gradient_accumulation_steps"),
            "num_train_epochs": c.get("num_train_epochs"), "seed": c.get("seed"),
            "train_seconds": s.get("train_seconds"), "path": str(run.path),
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- tables of runs

def format_value(value) -> str:
    """A knob's value as a label shows it: floats in their shortest form (0.001, 3e-05)."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def as_number(value) -> float:
    """A summary value as a float; None (nothing measured) becomes NaN."""
    return math.nan if value is None else float(value)


def differing_knobs(configs) -> list[str]:
    """The TrainConfig fields whose values are not the same in all configs (dicts or
    TrainConfigs), in field order; bookkeeping fields (output_dir, run_name, ...) excluded."""
    dicts = [c.to_dict() if isinstance(c, TrainConfig) else c for c in configs]
    names = [f.name for f in fields(TrainConfig) if f.name not in NOT_KNOBS]
    return [n for n in names if any(d.get(n) != dicts[0].get(n) for d in dicts[1:])]


def knob_label(config, knobs) -> str:
    """"learning_rate=0.001, seed=1": the values of the given knobs in one config."""
    config = config.to_dict() if isinstance(config, TrainConfig) else config
    return ", ".join(f"{k}={format_value(config.get(k))}" for k in knobs)


def as_runs(runs) -> list[Run]:
    """Runs from Run objects, run folders, or a sweep DataFrame (its rows, in their current
    order: the Run kept in df.attrs["runs"] when there is one, else loaded from its path)."""
    if isinstance(runs, pd.DataFrame):
        kept = {str(r.path): r for r in runs.attrs.get("runs", [])}
        return [kept.get(str(p)) or load_run(p) for p in runs["path"]]
    if isinstance(runs, (Run, str, Path)):
        runs = [runs]
    return [r if isinstance(r, Run) else load_run(r) for r in runs]


def runs_table(runs) -> pd.DataFrame:
    """A row per run: the knobs that differ between the runs, then status, best epoch, best
    eval loss, final accuracy and the run's folder name."""
    runs = as_runs(runs)
    knobs = differing_knobs([r.config for r in runs])
    rows = []
    for run in runs:
        row = {k: run.config.get(k) for k in knobs}
        row.update(status=run.status, best_epoch=run.best_epoch, best_eval_loss=as_number(run.best_eval_loss),
                   final_eval_accuracy=as_number(run.summary.get("final_eval_accuracy")), run=run.name)
        rows.append(row)
    return pd.DataFrame(rows, columns=knobs + ["status", "best_epoch", "best_eval_loss", "final_eval_accuracy", "run"])
