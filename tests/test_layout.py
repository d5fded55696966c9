"""The package's layout is its architecture (issue 18): nbkit.core (the trainer) imports nothing
above it; a chapter's lab (nbkit.labs) imports the core only, never another lab; the views
(nbkit.views) import the core and the labs; the interfaces (nbkit.interfaces) anything. Every
import statement counts, also those inside functions."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nbkit"
LAYERS = ["core", "labs", "views", "interfaces"]  # bottom to top: an import may only go down (or stay)


def nbkit_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every `import nbkit.x` / `from nbkit.x import ...` in the file;
    `from nbkit.views import plots` counts as nbkit.views.plots."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("nbkit.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nbkit"):
            if node.module in ("nbkit",) + tuple(f"nbkit.{layer}" for layer in LAYERS):
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def layer_of(module: str) -> tuple[str, str] | None:
    """("labs", "ch03_batch_size") for nbkit.labs.ch03_batch_size; None for the package's top."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] in LAYERS:
        return parts[1], parts[2]
    return None


def wrong_imports(path: Path, package: Path = PACKAGE) -> list[str]:
    here = layer_of(".".join(("nbkit",) + path.relative_to(package).with_suffix("").parts))
    problems = []
    for line, module in nbkit_imports(path):
        there = layer_of(module)
        if here is None or there is None:
            continue  # nbkit/__init__.py re-exports the core; `from nbkit import TrainConfig` is the core
        if LAYERS.index(there[0]) > LAYERS.index(here[0]):
            problems.append(f"{path.relative_to(package)}:{line} imports {module}: {here[0]} may not import {there[0]}")
        elif here[0] == there[0] == "labs" and here[1] != there[1]:
            problems.append(f"{path.relative_to(package)}:{line} imports {module}: one chapter's lab imports another's")
    return problems


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def test_every_module_lives_in_a_layer():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not loose, f"modules outside core/labs/views/interfaces: {loose}"
    assert {p.parent.name for p in MODULES} == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path):
    assert wrong_imports(path) == []


def test_labs_are_named_after_their_chapter():
    chapters = {p.stem[:2] for p in (PACKAGE.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    for lab in (PACKAGE / "labs").glob("ch*.py"):
        assert lab.stem[2:4] in chapters, f"{lab.name}: no notebook {lab.stem[2:4]}_*.ipynb"


def test_the_check_sees_an_import_that_goes_up(tmp_path):
    """The checker itself: a core module importing a view, and a lab importing another lab, are caught."""
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "core" / "bad.py").write_text("def f():\n    from nbkit.views.plots import loss_curves\n")
    (tmp_path / "labs" / "ch01_x.py").write_text("from nbkit.labs.ch02_y import z\nfrom nbkit.core.train import train\n")
    (tmp_path / "views" / "ok.py").write_text("from nbkit.labs import ch01_x\nfrom nbkit.core import runs\n")
    assert len(wrong_imports(tmp_path / "core" / "bad.py", tmp_path)) == 1
    assert len(wrong_imports(tmp_path / "labs" / "ch01_x.py", tmp_path)) == 1
    assert wrong_imports(tmp_path / "views" / "ok.py", tmp_path) == []


def test_only_the_views_draw_and_never_with_pyplot():
    """Figures are matplotlib Figure objects made in nbkit.views, never with pyplot (plots.py says why);
    the core and the labs compute and import no matplotlib at all. (nbkit.interfaces.chapter may close
    a pyplot figure a learner made and passed to ch.figure.)"""
    for path in MODULES:
        text, layer = path.read_text(), path.relative_to(PACKAGE).parts[0]
        if layer == "views":
            assert "import matplotlib.pyplot" not in text and "from matplotlib import pyplot" not in text, path
        if layer in ("core", "labs"):
            assert "matplotlib" not in text, f"{path}: draws outside nbkit.views"
