"""nbkit.core.notices: every third-party notice filter in one place. Each drops its one message and
nothing else, and no other nbkit module or chapter cell filters notices itself."""
import ast
import json
import logging
import warnings
from pathlib import Path

import pytest

from nbkit.core import notices

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("logger_name, message", [(notices.BNB_KERNEL_LOGGER, notices.BNB_KERNEL_NOTICE),
                                                  (notices.INT8_LOGGER, notices.INT8_NOTICE)])
def test_a_dropped_log_line_is_only_that_one(logger_name, message, caplog):
    notices.install()
    notices.install()  # idempotent: one filter per logger
    logger = logging.getLogger(logger_name)
    assert sum(isinstance(f, notices.DropMessage) for f in logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=logger_name):
        logger.warning(message + " (details)")
        logger.warning("another bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]


def test_the_warnings_dropped_are_the_named_ones():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notices.install()  # inserts its filters before "always"
        warnings.warn(notices.INT8_NOTICE, UserWarning)
        warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]


FILTER_CALLS = ("filterwarnings", "addFilter", "set_verbosity", "setLevel")


def filter_calls(source: str) -> list[int]:
    """Lines that filter notices: filterwarnings, addFilter, set_verbosity, setLevel, simplefilter("ignore")."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            ignoring = name == "simplefilter" and node.args and getattr(node.args[0], "value", None) == "ignore"
            if name in FILTER_CALLS or ignoring:
                lines.append(node.lineno)
    return lines


def test_no_module_or_chapter_filters_notices_itself():
    found = [f"{p.relative_to(ROOT)}:{n}" for p in (ROOT / "nbkit").rglob("*.py") if p.name != "notices.py"
             for n in filter_calls(p.read_text())]
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        for i, cell in enumerate(json.loads(notebook.read_text())["cells"]):
            source = "".join(cell["source"])
            if cell["cell_type"] == "code":
                code = "\n".join(line for line in source.splitlines() if not line.startswith(("%", "!")))
                found += [f"{notebook.name} cell {i}" for _ in filter_calls(code)]
    assert found == [], found


def test_the_scan_finds_a_filter():
    assert filter_calls('import warnings\nwarnings.simplefilter("ignore")\nwarnings.simplefilter("always")\n') == [2]
