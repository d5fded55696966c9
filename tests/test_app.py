"""App mode (nbkit.interfaces.app, `python -m nbkit app`): bad input is an `nbkit: error:` line and exit 2; the
app notebook made from a chapter keeps its imports, parameters, set-up and panel cells and leaves its experiments
out (and is refused when its panel would need a name only an experiment makes); the instructor's page ends with
the live board; and Voila really serves chapter 1's panel (HTTP 200, the panel's widget on the page, no code,
no error), then stops when asked, leaving no temporary folder behind."""
import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from nbkit.core.classroom import create_class
from nbkit.core.config import ConfigError
from nbkit.core.i18n import set_language
from nbkit.core.study_spec import StudySpec
from nbkit.interfaces import app
from nbkit.interfaces.profiles import notebook_defaults
from nbkit.interfaces.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PAGE_TIMEOUT = 300  # seconds: Voila answers once the kernel has run the app notebook (torch's import on 2 busy cores)


def cell_calls(source: str) -> set[str]:
    """The names of the functions a code cell's source calls (magics left out)."""
    code = "\n".join(line for line in source.splitlines() if not line.startswith("%"))
    return {ast.unparse(node.func) for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Call)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_class(folder: Path, name: str = "app101") -> str:
    """A one-configuration class for chapter 1 in a SQLite file; returns its storage URL."""
    storage = f"sqlite:///{folder}/classes.db"
    create_class(StudySpec.from_dict(dict(
        study_name=name, base=dict(model="tiny", dataset="arithmetic", max_samples=80, predict_with_generate=False,
                                   num_train_epochs=1),
        scientific={"learning_rate": [1e-3]}, sampler="grid", storage=storage)), "01_learning_rate")
    return storage


# ---------------------------------------------------------------- bad input: a line and exit 2

@pytest.mark.parametrize("argv, says", [
    (["app", "9"], "CHAPTER='9' is not a chapter; allowed: instructor, or a chapter with a panel: 00_quickstart"),
    (["app", "learning_rate"], "CHAPTER='learning_rate' is not a chapter"),
    (["app", "7"], "chapter 07_capstone has no panel to show; allowed: instructor"),
    (["app", "1", "-p", "learning_rat", "3e-4"], "'learning_rat' is not a parameter of this notebook; allowed: "
                                                  "output_dir, model"),
    (["app", "1", "-p", "sweep_epochs", "two"],
     "-p sweep_epochs two: sweep_epochs='two' is invalid; allowed: a whole number"),
])
def test_bad_input_is_one_error_line_and_exit_2(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nbkit: error: ") and says in err, err
    assert "Traceback" not in err


def test_a_missing_class_refuses_the_instructors_page(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path}/none.db"
    assert main(["app", "instructor", "-p", "storage", missing]) == 2
    assert "no such file" in capsys.readouterr().err
    storage = make_class(tmp_path)
    assert main(["app", "instructor", "-p", "class_name", "lr999", "-p", "storage", storage]) == 2
    err = capsys.readouterr().err
    assert "class 'lr999' is not a class" in err and "classes there: app101" in err, err


def test_a_busy_port_is_refused_before_anything_starts(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["app", "1", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--port {port}: cannot listen there" in err and f"--port {port + 1}" in err


def test_the_command_line_says_the_error_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "nbkit", "app", "99"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 2
    assert done.stderr.startswith("nbkit: error: app: CHAPTER='99' is not a chapter"), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_the_app_speaks_chinese(capsys):
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): refusals, and the line saying where the page
    is."""
    set_language("zh")
    try:
        assert main(["app", "9"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("nbkit: error: app：CHAPTER='9' 不是一个章节；允许的值：instructor，"
                              "或一个带面板的章节：00_quickstart"), err
        with pytest.raises(ConfigError, match="^--port 0：允许的值：1 到 65535$"):
            app.check_port("127.0.0.1", 0)
        app.announce(Path("/tmp/app/01_learning_rate.ipynb"), ["http://lab:8866/", "http://127.0.0.1:8866/"], False)
        assert capsys.readouterr().out == ("nbkit app：01_learning_rate 位于 http://lab:8866/ 或 http://127.0.0.1:8866/（代码已"
                                           "隐藏；内核会在每位访客到来之前先运行页面：运行完成后即显示；Ctrl-C 停止）\n"
                                           "app 笔记本：/tmp/app/01_learning_rate.ipynb\n")
    finally:
        set_language("en")


def test_chapter_by_name_or_number():
    path = NOTEBOOKS_DIR / "01_learning_rate.ipynb"
    assert app.app_source("01_learning_rate") == app.app_source("01") == app.app_source(1) == path
    assert app.app_source("instructor") == NOTEBOOKS_DIR / "instructor.ipynb"
    assert "01_learning_rate" in app.chapters_with_panel() and "08_studies" not in app.chapters_with_panel()


def test_the_page_in_chinese_is_the_chinese_editions_with_the_same_code(monkeypatch):
    """`-p language zh` (or NBKIT_LANG=zh with no -p language) serves notebooks/zh/'s copy: its words, the
    English chapter's code cells; `-p language en` the English one whatever NBKIT_LANG says."""
    english, chinese = NOTEBOOKS_DIR / "01_learning_rate.ipynb", NOTEBOOKS_DIR / "zh" / "01_learning_rate.ipynb"
    monkeypatch.delenv("NBKIT_LANG", raising=False)
    set_language("en")
    try:
        assert app.checked("1", {}) == (english, {})
        source, values = app.checked("1", {"language": "zh"})
        assert (source, values) == (chinese, {"language": "zh"})
        set_language("zh")  # as NBKIT_LANG=zh sets it for the CLI
        assert app.checked("1", {})[0] == chinese
        assert app.checked("1", {"language": "en"})[0] == english
        with pytest.raises(ValueError, match="^-p language='fr': allowed: 'en', 'zh'"):
            app.checked("1", {"language": "fr"})
    finally:
        set_language("en")
    cells = {kind: [c["source"] for c in app.read_notebook(path)["cells"] if c["cell_type"] == "code"]
             for kind, path in (("en", english), ("zh", chinese))}
    assert [s.replace('language: str = "zh"', 'language: str = "en"') for s in cells["zh"]] == cells["en"]
    title = app.app_notebook(chinese, {}, Path("."))["cells"][1]["source"]
    assert title.startswith("# 第") and "Learning rate" not in title, title


def test_parameters_are_converted_to_the_declared_type():
    nb = app.read_notebook(NOTEBOOKS_DIR / "01_learning_rate.ipynb")
    values = app.check_parameters(nb, {"learning_rate": "3e-4", "max_samples": "80", "sweep_learning_rates": "[1, 2]"})
    assert values == {"learning_rate": 3e-4, "max_samples": 80, "sweep_learning_rates": [1, 2]}
    assert isinstance(values["learning_rate"], float)


# ---------------------------------------------------------------- the app notebook

@pytest.mark.parametrize("chapter", app.chapters_with_panel())
def test_app_notebook_keeps_the_panel_and_drops_the_experiments(chapter, tmp_path):
    source = NOTEBOOKS_DIR / f"{chapter}.ipynb"
    nb = nbformat.read(source, as_version=4)
    page = app.app_notebook(source, {}, tmp_path)  # raises if its cells would read a name they do not make
    nbformat.validate(nbformat.from_dict(page))  # a notebook Voila reads
    sources = [c["source"] for c in page["cells"] if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    setup = next(c.source for c in nb.cells if "Chapter.from_notebook(" in c.source)
    panels = [c.source for c in nb.cells if c.cell_type == "code" and "panel" in cell_calls(c.source)]
    assert panels, f"{chapter} has no panel cell"
    expected = [f"import os\nos.chdir({str(tmp_path)!r})"]
    expected += [c.source for c in nb.cells[:first] if c.cell_type == "code"] + [nb.cells[first].source]
    expected += ["output_dir = 'runs/app'", "%%capture\n" + setup]
    expected += [re.sub(r"runs=\[[^\]]*\]", "runs=[]", s) for s in panels] + [app.warm_up_cell()["source"]]
    assert sources == expected
    long_calls = {"train", "sweep", "run_study"}
    assert not any(cell_calls(s.removeprefix("%%capture\n")) & long_calls for s in sources[1:]), sources
    assert len(page["cells"]) < len(nb.cells) / 2
    tags = [c["metadata"].get("tags", []) for c in page["cells"]]
    assert tags.count(["injected-parameters"]) == 1
    assert tags.index(["injected-parameters"]) == tags.index(["parameters"]) + 1


def test_chapter_1_page_has_its_title_and_the_panels_text(tmp_path):
    page = app.app_notebook(NOTEBOOKS_DIR / "01_learning_rate.ipynb", {"max_samples": 80}, tmp_path)
    markdown = [c["source"] for c in page["cells"] if c["cell_type"] == "markdown"]
    assert markdown[0].startswith("# Chapter 1 — Learning rate")
    assert markdown[1].startswith("## 7. Your turn: the panel")
    assert "max_samples = 80\noutput_dir = 'runs/app'" in [c["source"] for c in page["cells"]]


def test_a_panel_needing_an_experiments_name_is_refused(tmp_path):
    nb = nbformat.read(NOTEBOOKS_DIR / "01_learning_rate.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "lab = panel(" in c.source)
    cell.source = cell.source.replace("base.replace(", "best_of(lr_sweep).replace(")
    source = tmp_path / "01_learning_rate.ipynb"
    nbformat.write(nb, source)
    with pytest.raises(ConfigError, match="its page would read best_of, lr_sweep, made only by the cells the app "
                                          "leaves out"):
        app.app_notebook(source, {}, tmp_path)


def test_without_runs_edits_only_the_runs_argument():
    source = ("lab = panel(base.replace(learning_rate=p.learning_rate),  # the first LR\n"
              "            [\"learning_rate\"], runs=[run, other],\n            preview=f)\nlab")
    assert app.without_runs(source) == source.replace("runs=[run, other]", "runs=[]")
    assert app.without_runs("x = panel(cfg, ['seed'])") == "x = panel(cfg, ['seed'])"
    assert app.without_runs("panel(c, ['é'], runs=[r])  # é") == "panel(c, ['é'], runs=[])  # é"  # UTF-8 columns


def test_the_warm_up_imports_what_a_first_train_needs():
    app.warm_up()  # an ImportError (a name moved in transformers or peft) fails here, not in a page's thread
    assert {"accelerate", "peft", "transformers"} <= set(sys.modules)


def test_the_instructors_page_ends_with_the_live_board(tmp_path):
    source = NOTEBOOKS_DIR / "instructor.ipynb"
    page = app.app_notebook(source, {"class_name": "app101", "storage": "sqlite:///x.db"}, tmp_path)
    nbformat.validate(nbformat.from_dict(page))
    sources = [c["source"] for c in page["cells"]]
    assert sources[-1].strip() == "board"
    assert not any("snapshot" in s for s in sources)  # the static copy is for saved notebooks
    assert "class_name = 'app101'\nstorage = 'sqlite:///x.db'" in sources


# ---------------------------------------------------------------- Voila serves it

def test_voila_serves_chapter_1s_panel_and_stops(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    served = subprocess.Popen([sys.executable, "-m", "nbkit", "app", "1", "--port", str(port), "-p", "max_samples",
                               "80"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        announced = served.stdout.readline() + served.stdout.readline()
        assert f"01_learning_rate at http://127.0.0.1:{port}/" in announced, served.stderr.read()
        notebook = Path(re.search(r"app notebook: (\S+)", announced).group(1))
        assert notebook.is_file() and not notebook.is_relative_to(REPO_ROOT)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=PAGE_TIMEOUT) as reply:
            status, page = reply.status, reply.read().decode()
        print(f"page served {time.time() - t0:.1f} s after `app`")
        assert status == 200
        views = re.findall(r'"application/vnd.jupyter.widget-view\+json": \{"model_id": "([0-9a-f]{32})"', page)
        assert len(views) == 1, page[-3000:]
        # the panel is that one view; the page's text/plain of it is ipywidgets' first 110 characters (the language
        # toggle's, since the panel has one), so the chapter's LR is read from the run the kernel recorded, below
        assert "VBox(children=(" in page
        assert '"output_type": "error"' not in page and "Traceback" not in page
        assert "Chapter.from_notebook" not in page and "os.chdir" not in page  # no code on the page
        # the kernel ran in the folder `app` started in, its runs under runs/app (never over the chapter's own)
        results = tmp_path / "runs" / "app" / "01_learning_rate" / "results.json"
        chapter_lr = notebook_defaults("01_learning_rate")["learning_rate"]  # its parameters cell
        assert json.loads(results.read_text())["parameters"]["learning_rate"] == chapter_lr
        served.send_signal(signal.SIGTERM)
        assert served.wait(30) == 0
        assert not notebook.parent.exists()  # the temporary folder is removed
        with pytest.raises(OSError):  # and Voila is gone
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if served.poll() is None:
            served.kill()
            served.wait()
