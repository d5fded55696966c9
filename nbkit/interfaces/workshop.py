"""Classroom workshops, the ways in: a class spec read and checked, a class created, a seat taken, the
instructor's board, Optuna's own dashboard on the class. From a notebook this module is `nbkit.classroom`:

    from nbkit import classroom
    study = classroom.create("classes/01_learning_rate.yaml", storage="sqlite:////shared/class.db")
    b = classroom.board("lr101", "sqlite:////shared/class.db")          # the live board, a widget
    seat = classroom.join("lr101", "sqlite:////shared/class.db", student="ana")   # a seat without a panel
    python -m nbkit class create|join|board|dashboard ...          (nbkit/interfaces/cli.py)

The class itself (a study whose queue is the room's design) is nbkit.core.classroom; the panel's Class row
is nbkit.views.ui; the board nbkit.views.board.

A class spec is a study spec (nbkit.core.study: study_name, base, scientific, nuisance, fixed, n_trials,
sampler, ...) plus `chapter:`, the notebook whose panel the students use, by name ("01_learning_rate") or
number ("01", "1").
"""

from __future__ import annotations

import dataclasses

from nbkit.core.classroom import Seat, create_class, join_class, open_class
from nbkit.core.config import ConfigError, read_yaml_mapping
from nbkit.core.i18n import _
from nbkit.core.study import DEFAULT_STORAGE, StudyError, StudySpec
from nbkit.interfaces.profiles import chapter_names


def read_class_spec(source, storage: str | None = None) -> tuple[StudySpec, str]:
    """(the study spec, the chapter) of a class spec: a YAML file's path or a dict. `storage` overrides
    the spec's. Raises StudyError naming the field and what is allowed."""
    if isinstance(source, dict):
        values = dict(source)
    else:
        try:
            values = read_yaml_mapping(source, _("class spec"))
        except StudyError:
            raise
        except ConfigError as err:  # the file itself: unreadable, not YAML, not a mapping
            raise StudyError(str(err)) from None
    try:
        chapter = chapter_name(values.pop("chapter", None))
    except StudyError as err:
        raise StudyError(_("class spec: {error}").format(error=err)) from None
    spec = StudySpec.from_dict(values)
    if storage is not None:
        spec = dataclasses.replace(spec, storage=storage)
    spec.check()
    return spec, chapter


def chapter_name(chapter) -> str:
    """The chapter's notebook name for "01_learning_rate", "01" or 1; a StudyError listing them otherwise."""
    names = chapter_names()
    text = str(chapter).strip() if chapter is not None else ""
    for name in names:
        number = name.split("_", 1)[0]
        if text in (name, number) or (text.isdigit() and int(text) == int(number)):
            return name
    raise StudyError(_("chapter={chapter} is not a chapter; allowed: {chapters} (or its number)")
                     .format(chapter=repr(chapter), chapters=", ".join(names)))


def create(source, storage: str | None = None):
    """Create the class a class spec describes (or open it again, unchanged) with its queue of
    configurations; returns the class study."""
    spec, chapter = read_class_spec(source, storage)
    return create_class(spec, chapter)


def join(name: str, storage: str = DEFAULT_STORAGE, student: str = "", identity: str | None = None,
         output_dir: str = "runs") -> Seat:
    """A seat in class `name` for `student` (nbkit.core.classroom.join_class)."""
    return join_class(name, storage, student, identity=identity, output_dir=output_dir)


def board(name: str, storage: str = DEFAULT_STORAGE, every: float = 1.0):
    """The instructor's live board of class `name` (nbkit.views.board.Board): show it as a cell's last value;
    it redraws itself as runs arrive until its close()."""
    from nbkit.views.board import Board  # here, not at the top: the views import torch (chapter_name must not)

    return Board(open_class(name, storage, read_only=True), every=every)


def dashboard_url(name: str, storage: str, host: str, port: int) -> str:
    """Where optuna-dashboard shows the class study."""
    study = open_class(name, storage)
    return f"http://{host}:{port}/dashboard/studies/{study._study_id}"


def dashboard(name: str, storage: str = DEFAULT_STORAGE, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Optuna's own web dashboard (optuna-dashboard, from PyPI) on the class's storage, for the views it
    already has (history, parallel coordinates, importance); blocks until Ctrl-C."""
    from optuna_dashboard import run_server

    from nbkit.core.study import open_storage

    url = dashboard_url(name, storage, host, port)
    print(_("optuna-dashboard: class {name} at {url} (Ctrl-C to stop)").format(name=repr(name), url=url), flush=True)
    run_server(open_storage(storage), host=host, port=port)
