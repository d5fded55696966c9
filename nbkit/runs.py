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
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

STATUSES = ("running", "completed", "early_stopped", "diverged", "interrupted", "incomplete")


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON so that a reader sees either the old file or the new one, never half."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(_jsonable(data), f, indent=2, allow_nan=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(value):
    """Turn numpy / pandas scalars and paths into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalar
        return value.item()
    return value


def new_run_dir(output_dir: str | Path, run_name: str | None = None) -> Path:
    """A fresh, unique folder: <time>_<name or short id>."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # a run_name is free text ("lr=1e-3/cosine"): keep it readable but safe as a folder name
    suffix = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", run_name)[:80] if run_name else uuid.uuid4().hex[:6]
    path = Path(output_dir) / f"{stamp}_{suffix}"
    n = 1
    while path.exists():  # two runs in the same second with the same name
        n += 1
        path = Path(output_dir) / f"{stamp}_{suffix}-{n}"
    path.mkdir(parents=True)
    return path


class RunWriter:
    """Writes one run's files while it trains. Used by nbkit.train; the main process only."""

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
        raise FileNotFoundError(f"{path} is not a run folder (no summary.json)")
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
            rows.append({"run": folder.parent.name, "status": f"unreadable: {err}"})
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
