"""How a chapter notebook reads (issue 18): logic lives in nbkit, so no code cell defines a function
or a class, and no code cell is long (a check cell states one claim's checks; the labs compute)."""
import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
LONGEST_CELL = 30  # lines, about a screen: more means a computation that belongs in the chapter's lab


def code_cells(path):
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", []):  # papermill's: a line each
            source = "\n".join("#" + line if line.lstrip().startswith(("%", "!")) else line
                               for line in cell.source.splitlines())
            yield i, cell.source, ast.parse(source)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_function_or_class_is_defined_in_a_cell(path):
    defined = [(i, type(node).__name__, getattr(node, "name", "lambda")) for i, _, tree in code_cells(path)
               for node in ast.walk(tree)
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]
    assert not defined, f"move these to the chapter's lab (nbkit/labs): {defined}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_cells_stay_short(path):
    long = [(i, source.count("\n") + 1) for i, source, _ in code_cells(path) if source.count("\n") + 1 > LONGEST_CELL]
    assert not long, f"cells longer than {LONGEST_CELL} lines (cell index, lines): {long}"
