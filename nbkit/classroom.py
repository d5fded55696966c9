"""Classroom workshops, from a notebook: `from nbkit import classroom`.

    classroom.create("classes/01_learning_rate.yaml", storage="sqlite:////shared/class.db")   # the instructor
    classroom.board("lr101", "sqlite:////shared/class.db")        # the instructor's live board (a widget)
    classroom.join("lr101", "sqlite:////shared/class.db", student="ana")   # a student's seat, without a panel
    panel(cfg, fields, join="lr101@sqlite:////shared/class.db", student="ana")   # a student, in a chapter

What a class is and how it runs: nbkit/core/classroom.py; the command line: `python -m nbkit class --help`.
"""
from nbkit.interfaces.classroom import chapter_name, create, dashboard, join, read_class_spec

__all__ = ["chapter_name", "create", "dashboard", "join", "read_class_spec"]
