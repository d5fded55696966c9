"""Baked runs: a chapter run headless once (papermill), its runs kept beside its results.json and the executed
notebook, so a class without time, or a learner without a GPU, loads them at once.

    python -m nbkit bake 1                                  # -> baked/tiny/01_learning_rate/
    python -m nbkit bake 01_learning_rate -p model smollm2-135m --output-dir /shared/baked

    runs = baked_runs("baked/tiny/01_learning_rate")       # the chapter's Runs, oldest first
    panel(cfg, fields, runs=runs)                           # the panel's table and overlay show them
    board = baked_board("baked/tiny/01_learning_rate")      # the instructor's board, drawn from them

The folder holds what the chapter writes under its output_dir (a folder per run, results.json, figures/) and
the executed notebook, outputs and all: opened in JupyterLab it shows every table, figure and verdict without
running a cell. Bake on the machine that has the time or the GPU, then copy the folder to the room.
"""

from __future__ import annotations

import os
from pathlib import Path

from nbkit.core.config import ConfigError
from nbkit.core.i18n import _
from nbkit.core.runs import NOT_KNOBS, Run, load_run
from nbkit.core.study import SPEC_ATTR, study_from_runs
from nbkit.interfaces.app import check_parameters, read_notebook
from nbkit.interfaces.profiles import NOTEBOOKS_DIR
from nbkit.interfaces.workshop import chapter_name
from nbkit.views.board import Board

BAKED_STUDENT = "baked"  # the name a baked run carries on the board
NOT_VARIED = {*NOT_KNOBS, "seed"}  # a seed differs between a chapter's repeats; it is no question of the board's


def bake(chapter, parameters: dict | None = None, output_dir: str | Path = "baked") -> Path:
    """Run the chapter headless with `parameters` (as papermill's -p: strings converted to the types its
    parameters cell declares) into <output_dir>/<model>/<chapter>/; returns that folder."""
    import papermill

    name = chapter_name(chapter)
    source = NOTEBOOKS_DIR / f"{name}.ipynb"
    values = check_parameters(read_notebook(source), {k: str(v) for k, v in (parameters or {}).items()})
    if "output_dir" in values:
        raise ConfigError(_("-p output_dir: bake chooses it (--output-dir sets where the baked folders go)"))
    model = str(values.get("model", "tiny")).replace("/", "--")  # an HF id such as Qwen/Qwen2.5-0.5B: one folder
    root = (Path(output_dir) / model).resolve()
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.pop("MPLBACKEND", None)  # with it set, an executed notebook silently loses its figures
    papermill.execute_notebook(str(source), str(folder / f"{name}.ipynb"), cwd=str(NOTEBOOKS_DIR),
                               parameters={**values, "output_dir": str(root)}, kernel_name="python3",
                               progress_bar=False)
    return folder


def baked_runs(folder: str | Path) -> list[Run]:
    """The runs of a baked chapter folder (every run folder under it), in the order they started."""
    folder = Path(folder)
    if not (folder / "results.json").is_file():
        raise ConfigError(_("baked folder {folder} has no results.json; allowed: a folder `python -m nbkit bake` "
                            "made, e.g. baked/tiny/01_learning_rate").format(folder=repr(str(folder))))
    runs = [load_run(p.parent) for p in folder.rglob("summary.json")]
    return sorted(runs, key=lambda r: r.summary.get("started_at") or 0)


def varied_knobs(runs: list[Run]) -> list[str]:
    """The config fields whose values differ between the runs (where runs go, and the seed, aside), of those a
    plot can put on an axis: single values (a dict such as lr_scheduler_kwargs goes with its scheduler)."""
    fields = sorted({k for r in runs for k in r.config} - NOT_VARIED)
    single = [k for k in fields if all(isinstance(r.config.get(k), (str, int, float, bool, type(None))) for r in runs)]
    return [k for k in single if len({repr(r.config.get(k)) for r in runs}) > 1]


def baked_class(folder: str | Path):
    """A baked chapter's runs as an in-memory class study (its varied knobs the design's), for the board."""
    runs = baked_runs(folder)
    knobs = varied_knobs(runs)
    if not runs or not knobs:
        raise ConfigError(_("baked folder {folder}: {n} run(s), no knob that varies between them; allowed: a chapter "
                            "whose runs compare settings").format(folder=repr(str(folder)), n=len(runs)))
    study = study_from_runs(runs, scientific=knobs, study_name=Path(folder).name, user_attrs={"student": BAKED_STUDENT})
    spec = study.user_attrs[SPEC_ATTR]
    spec["base"] = {k: v for k, v in runs[0].config.items()  # what every run shares: the board's budget line reads it
                    if k not in NOT_KNOBS and all(r.config.get(k) == v for r in runs)}
    study.set_user_attr(SPEC_ATTR, spec)
    return study


def baked_board(folder: str | Path, every: float = 3600.0) -> Board:
    """The instructor's board drawn from a baked chapter (nothing arrives: it reads once an hour)."""
    board = Board(baked_class(folder), every=every)
    board.refresh()
    return board
