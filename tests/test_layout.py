"""The package's layout is its architecture (issue 18): nbkit.core (the trainer) imports nothing
above it; a chapter's lab (nbkit.labs) imports the core only, never another lab; the views
(nbkit.views) import the core and the labs; the interfaces (nbkit.interfaces) anything. Every
import statement counts, also those inside functions.

Inside the core, the modules have a declared order too (issue 28, CORE_ORDER below): a core module
imports only modules of earlier levels, so the core has no import cycle and each module's first
lines say what it builds on. Every import counts here as well: at the top, inside a function, under
`if TYPE_CHECKING:`. A core module imports nbkit modules at its top; one inside a function is
allowed only with a comment naming the heavy package it keeps off the import (torch, ...): the CLI
and the run store must answer without importing torch (tests/test_cli.py)."""
import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nbkit"
LAYERS = ["core", "labs", "views", "interfaces"]  # bottom to top: an import may only go down (or stay)


def imported_module(node: ast.ImportFrom, path: Path, package: Path) -> str | None:
    """The absolute name of the module an ImportFrom reads from; a relative one (`from .train import x`,
    `from . import train`) is resolved against the file's own package."""
    if not node.level:
        return node.module
    here = ("nbkit",) + path.relative_to(package).parent.parts
    base = here[:len(here) - node.level + 1]
    return ".".join(base + ((node.module,) if node.module else ()))


def nbkit_import_nodes(path: Path, package: Path = PACKAGE,
                       tree: ast.Module | None = None) -> list[tuple[ast.stmt, str]]:
    """(node, module) for every `import nbkit.x` / `from nbkit.x import ...` in the file (or in its
    parsed `tree`), at any depth; `from nbkit.views import plots` counts as nbkit.views.plots."""
    found = []
    for node in ast.walk(tree or ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names if a.name.startswith("nbkit.")]
        elif isinstance(node, ast.ImportFrom):
            module = imported_module(node, path, package)
            if not module or not (module == "nbkit" or module.startswith("nbkit.")):
                continue
            if module in ("nbkit",) + tuple(f"nbkit.{layer}" for layer in LAYERS):
                found += [(node, f"{module}.{a.name}") for a in node.names]
            else:
                found.append((node, module))
    return found


def nbkit_imports(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) for every import of an nbkit module in the file (nbkit_import_nodes)."""
    return [(node.lineno, module) for node, module in nbkit_import_nodes(path, package)]


def layer_of(module: str) -> tuple[str, str] | None:
    """("labs", "ch03_batch_size") for nbkit.labs.ch03_batch_size; None for the package's top."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] in LAYERS:
        return parts[1], parts[2]
    return None


def wrong_imports(path: Path, package: Path = PACKAGE) -> list[str]:
    here = layer_of(".".join(("nbkit",) + path.relative_to(package).with_suffix("").parts))
    problems = []
    for line, module in nbkit_imports(path, package):
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
    (tmp_path / "labs" / "ch01_x.py").write_text("from nbkit.labs.ch02_y import z\n"
                                                 "from nbkit.core.train import train\n")
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


# ---------------------------------------------------------------- the order inside nbkit.core (issue 28)

CORE_ORDER = [  # earliest first: a core module imports only modules of EARLIER levels, never its own level
    ("notices", "i18n"),                                  # third-party notices filtered; the language a learner reads
    ("config", "callbacks"),                              # what a run is; the events a run tells
    ("data", "runs", "peft_mapping"),                     # its examples; its folder; its LoRA in PEFT's terms
    ("models", "export", "pretrain"),                     # the model; the run for other tools; the tiny base
    ("evaluate",),                                        # a model's losses and answers
    ("train",),                                           # the loop
    ("lr_finder", "memory", "workers", "distributed"),    # tools built on the loop
    ("sweep", "optuna_private", "study_spec"),            # many runs; studies (Optuna) from here on
    ("study_analysis", "study_storage", "study_trials"),
    ("study_queue",),
    ("study_workers",),
    ("study",),
    ("study_export", "classroom"),                     # the best trial for other tools; a class (a shared study)
]
HEAVY = ("torch", "transformers", "peft", "trl", "bitsandbytes")  # what the CLI must not import (tests/test_cli.py)
CORE = PACKAGE / "core"
CORE_FILES = sorted(p for p in CORE.glob("*.py") if p.name != "__init__.py")


def core_order_problems(path: Path, package: Path = PACKAGE, order=CORE_ORDER) -> list[str]:
    """Each import in a core module of a core module that is not on an earlier level of `order`."""
    level = {name: i for i, names in enumerate(order) for name in names}
    here, problems = path.stem, []
    where = path.relative_to(package)
    if here not in level:
        return [f"{where}: not in CORE_ORDER; add it on the level after everything it imports"]
    for line, module in nbkit_imports(path, package):
        there = layer_of(module)
        if there is None:
            if module != "nbkit.core":  # `from nbkit import train`: the package's top hides which module it is
                problems.append(f"{where}:{line} imports {module}: import it from its nbkit.core module")
            continue
        if there[0] != "core":
            continue  # test_imports_only_go_down
        if there[1] not in level:
            problems.append(f"{where}:{line} imports nbkit.core.{there[1]}, which is not in CORE_ORDER")
        elif level[there[1]] >= level[here]:
            problems.append(f"{where}:{line} imports nbkit.core.{there[1]}: {there[1]} (level {level[there[1]]}) "
                            f"is not before {here} (level {level[here]}) in CORE_ORDER")
    return problems


def _top_level_packages(tree: ast.Module, inner: set) -> set:
    """The packages a module imports when it is imported (not inside a function, nor under
    `if TYPE_CHECKING:`)."""
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for stmt in block.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in inner or id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def undocumented_inner_imports(path: Path, package: Path = PACKAGE) -> list[str]:
    """Imports of nbkit modules inside a function that do not say why: a comment on the import (or on
    the comment lines right above it) naming the heavy package the deferral keeps off (HEAVY), one
    the module itself does not import at its top (else deferring saves nothing)."""
    text = path.read_text()
    tree, lines = ast.parse(text, filename=str(path)), text.splitlines()
    inner = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
             for n in ast.walk(fn) if n is not fn}
    at_top = _top_level_packages(tree, inner)
    reason = re.compile(r"#.*\b(" + "|".join(HEAVY) + r")\b")
    problems = []
    for node, module in nbkit_import_nodes(path, package, tree):
        if id(node) not in inner:
            continue
        comments = lines[node.lineno - 1:node.end_lineno]
        above = node.lineno - 2
        while above >= 0 and lines[above].strip().startswith("#"):
            comments.append(lines[above])
            above -= 1
        named = {m.group(1) for c in comments for m in [reason.search(c)] if m}
        if not named - at_top:
            why = (f"the module imports {', '.join(sorted(named))} at its top already" if named else
                   f"no comment naming the heavy package it keeps off ({', '.join(HEAVY)})")
            problems.append(f"{path.relative_to(package)}:{node.lineno} imports {module} inside a function: "
                            f"{why}; import it at the top")
    return problems


def core_import_cycles(package: Path = PACKAGE) -> list[list[str]]:
    """The core's import cycles, imports at any depth counted: through each module on one, the
    shortest cycle, each cycle once (written from its alphabetically first module)."""
    graph = {p.stem: sorted({layer_of(m)[1] for _, m in nbkit_imports(p, package)
                             if layer_of(m) and layer_of(m)[0] == "core"})
             for p in sorted((package / "core").glob("*.py")) if p.name != "__init__.py"}
    cycles = []
    for start in sorted(graph):
        paths, seen = [[start]], {start}
        while paths:  # breadth first: the first path back to `start` is the shortest
            path = paths.pop(0)
            if start in graph.get(path[-1], []):
                first = path.index(min(path))
                cycle = path[first:] + path[:first]
                if cycle + [cycle[0]] not in cycles:
                    cycles.append(cycle + [cycle[0]])
                break
            for nxt in graph.get(path[-1], []):
                if nxt not in seen:
                    seen.add(nxt)
                    paths.append(path + [nxt])
    return cycles


def test_core_order_names_every_core_module_once():
    declared = [name for names in CORE_ORDER for name in names]
    assert len(declared) == len(set(declared)), "a module on two levels of CORE_ORDER"
    assert sorted(declared) == sorted(p.stem for p in CORE_FILES), \
        "CORE_ORDER and nbkit/core/*.py differ: declare a new module on its level, drop a removed one"


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_follow_the_declared_order(path):
    assert core_order_problems(path) == []


def test_the_core_has_no_import_cycle():
    assert core_import_cycles() == [], "import cycles (every import counted, also inside functions)"


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_nbkit_at_the_top(path):
    assert undocumented_inner_imports(path) == []


def test_the_readme_states_the_core_order():
    """The README's Layout gives the core's order on one line, as CORE_ORDER declares it."""
    stated = " -> ".join(", ".join(names) for names in CORE_ORDER)
    readme = (PACKAGE.parent / "README.md").read_text()
    assert any(line.strip().startswith("core/") and stated in line for line in readme.splitlines()), stated


def test_the_order_check_sees_every_import_against_it(tmp_path):
    """The checkers themselves: an import of a later (or same-level) core module is caught at the top,
    inside a function, under TYPE_CHECKING and written relative; a cycle is named; an inner import
    passes only with a comment naming a heavy package the module does not import at its top."""
    core = tmp_path / "core"
    core.mkdir()
    (core / "early.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from nbkit.core.early_too import x\n"                           # same level: caught
        "if TYPE_CHECKING:\n    from nbkit.core.late import y\n"         # later, type-checking only: caught
        "def f():\n    from .late import z  # torch\n"                  # later, relative, in a function: caught
        "def g():\n    import nbkit.core.late\n")                        # later, undocumented: caught twice
    (core / "early_too.py").write_text("x = 1\n")
    (core / "late.py").write_text(
        "import torch\n"
        "from nbkit.core import early\n"                                 # earlier: fine
        "def f():\n    # here, not at the top: transformers\n    from nbkit.core.early_too import x\n"  # documented
        "def g():\n    from nbkit.core.early import f  # torch\n")     # torch is at the top already: caught
    order = [("early", "early_too"), ("late",)]
    early = core_order_problems(core / "early.py", tmp_path, order)
    assert [p.split(":")[1].split()[0] for p in early] == ["2", "4", "6", "8"], early
    assert core_order_problems(core / "late.py", tmp_path, order) == []
    assert "not in CORE_ORDER" in core_order_problems(core / "early.py", tmp_path, [("late",)])[0]
    assert core_import_cycles(tmp_path) == [["early", "late", "early"]]
    assert [p.split(":")[1].split()[0] for p in undocumented_inner_imports(core / "early.py", tmp_path)] == ["8"]
    late = undocumented_inner_imports(core / "late.py", tmp_path)
    assert len(late) == 1 and ":7 " in late[0] and "at its top already" in late[0], late


def chapters_without_a_lab(notebooks: Path, labs: Path) -> list[str]:
    """The chapter notebooks NN_*.ipynb with no lab labs/chNN_*.py (a chapter's analysis lives in its lab)."""
    have = {p.stem[2:4] for p in labs.glob("ch[0-9][0-9]_*.py")}
    return sorted(p.name for p in notebooks.glob("[0-9][0-9]_*.ipynb") if p.stem[:2] not in have)


def modules_without_tests(package: Path, tests: Path) -> list[str]:
    """The nbkit modules with no test module named after them (core/study_spec.py: tests/test_study_spec.py)."""
    modules = [p for p in package.rglob("*.py") if p.parent != package and p.name != "__init__.py"]
    return sorted(str(p.relative_to(package)) for p in modules if not (tests / f"test_{p.stem}.py").exists())


def test_every_chapter_has_its_lab():
    assert chapters_without_a_lab(PACKAGE.parent / "notebooks", PACKAGE / "labs") == []


def test_every_module_has_a_test_module_named_after_it():
    stems = [p.stem for p in MODULES if p.name != "__init__.py"]
    assert len(stems) == len(set(stems)), "two modules share a name: their test modules would too"
    assert modules_without_tests(PACKAGE, Path(__file__).resolve().parent) == []


def test_the_mirror_checks_see_a_missing_lab_and_a_missing_test_module(tmp_path):
    package, notebooks, tests = tmp_path / "nbkit", tmp_path / "notebooks", tmp_path / "tests"
    for folder in (package / "labs", notebooks, tests):
        folder.mkdir(parents=True)
    for name in ("01_learning_rate.ipynb", "02_optimizer.ipynb"):
        (notebooks / name).write_text("{}")
    for name in ("__init__.py", "ch01_learning_rate.py"):
        (package / "labs" / name).write_text("")
    (tests / "test_ch01_learning_rate.py").write_text("")
    assert chapters_without_a_lab(notebooks, package / "labs") == ["02_optimizer.ipynb"]
    (package / "labs" / "ch02_optimizer.py").write_text("")
    assert chapters_without_a_lab(notebooks, package / "labs") == []
    assert modules_without_tests(package, tests) == ["labs/ch02_optimizer.py"]
