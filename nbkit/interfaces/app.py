"""App mode: a chapter's panel, or the instructor's board, as a web page with the code hidden (Voila), for
projecting in class or for a room of laptops.

    python -m nbkit app 1                                   # chapter 1's panel at http://127.0.0.1:8866/
    python -m nbkit app 01_learning_rate -p max_samples 200 --host 0.0.0.0   # the room's laptops open it
    python -m nbkit app instructor -p class_name lr101 -p storage sqlite:////shared/class.db
    python -m nbkit app 1 -p language zh                   # in Chinese (or NBKIT_LANG=zh): notebooks/zh/'s words

Why a generated app notebook: Voila runs the whole notebook on every page load, and a chapter's experiments
take minutes. So the page runs an app notebook made at `app` time, in a temporary folder, from the chapter's own
cells: its imports (the code cells before the parameters cell), its parameters cell, the `-p` values (a cell
after it, as papermill injects them), its set-up cell (the one calling `Chapter.from_notebook`: the base
config), and its panel cell(s) with the markdown just before each. The experiments are left out, and the
panel's `runs=[...]` (a run the experiments trained) becomes `runs=[]`. A last hidden cell imports what the
first Train would otherwise import then (transformers, peft), so Train starts at once. Voila's pre-heated
kernel runs the page before anyone opens it: `app` started before class, the projector shows the panel at
once, and a reload or a second laptop finds the next kernel ready. The chapter notebook stays the one
source: nothing is copied by hand, and a panel cell that comes to need a name only the experiments make is
refused here (`free_names`), naming it. The instructor's notebook has no long cells:
its page is the notebook down to the live board (the static snapshot after it is for saved notebooks).

The kernel runs in the folder `app` was started in, so a relative path (in a `-p` value, or a notebook
default such as the instructor's storage) means what it means in that shell. A chapter page's runs go to
runs/app/<chapter>/ unless `-p output_dir` says otherwise: never over the chapter's own results.json.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import webbrowser
from pathlib import Path

from IPython.core.inputtransformer2 import TransformerManager

from nbkit.core.config import ConfigError, coerce_value
from nbkit.core.i18n import _, check_language, get_language
from nbkit.interfaces.profiles import NOTEBOOKS_DIR, TYPES, chapter_names, edition

INSTRUCTOR = "instructor"  # `app instructor`: notebooks/instructor.ipynb
DEFAULT_PORT = 8866  # Voila's own default
DEFAULT_HOST = "127.0.0.1"  # this machine only; 0.0.0.0 for a room
APP_OUTPUT_DIR = "runs/app"  # a chapter page's runs: Chapter() rewrites <output_dir>/<chapter>/results.json at once
SETUP_CALL = "Chapter.from_notebook"  # the chapter's set-up cell calls it: the parameters, sized, and the base config
PANEL_CALL = "panel"  # nbkit.views.ui.panel: the cell(s) the page is for
BOARD_NAME = "board"  # the instructor notebook's cell that ends with `board` shows the live board
QUIET = "%%capture\n"  # a set-up cell's printed lines and config table are no use on a projector
IPYTHON_NAMES = {"get_ipython", "display", "In", "Out"}  # names IPython gives every cell
READY_SECONDS = 60  # Voila's start (it imports little: the kernel starts with the first page)
VOILA_OPTIONS = [
    "--no-browser",  # `app` opens one itself, if asked
    "--strip_sources=True",  # the code hidden: only outputs and markdown
    "--show_tracebacks=True",  # a failing cell says why on the page, not "there was an error"
    "--Voila.port_retries=0",  # the printed URL must be the real one: a busy port is an error, never another port
    # a kernel that has already run the page waits for the next visitor (Voila starts it at once, and another
    # after each visit): a projector's reload or a second laptop gets the panel at once, not after the imports
    "--preheat_kernel=True", "--pool_size=1",
]


# ---------------------------------------------------------------- which notebook

def chapters_with_panel() -> list[str]:
    """The chapters whose notebook shows a panel (nbkit.views.ui.panel): those `app` can serve."""
    return [name for name in chapter_names() if panel_cells(read_notebook(NOTEBOOKS_DIR / f"{name}.ipynb"))]


def app_source(what) -> Path:
    """The notebook `app` serves for `what`: "instructor", or a chapter by name or number ("01_learning_rate",
    "01", "1") that has a panel. A ConfigError naming the value and what is allowed otherwise."""
    text = str(what).strip()
    if text == INSTRUCTOR:
        return NOTEBOOKS_DIR / f"{INSTRUCTOR}.ipynb"
    from nbkit.interfaces.workshop import chapter_name  # it imports the board's plots (torch): seconds

    allowed = _("{instructor}, or a chapter with a panel: {chapters} (or its number)").format(
        instructor=INSTRUCTOR, chapters=", ".join(chapters_with_panel()))
    try:
        chapter = chapter_name(text)
    except ConfigError:  # its message speaks of a class spec; here the value is the app's CHAPTER
        raise ConfigError(_("app: CHAPTER={chapter} is not a chapter; allowed: {allowed}")
                          .format(chapter=repr(what), allowed=allowed)) from None
    path = NOTEBOOKS_DIR / f"{chapter}.ipynb"
    if not panel_cells(read_notebook(path)):
        raise ConfigError(_("app: chapter {chapter} has no panel to show; allowed: {allowed}")
                          .format(chapter=chapter, allowed=allowed))
    return path


# ---------------------------------------------------------------- the notebook's cells
# Notebooks are handled as the JSON they are (nbformat 4): importing nbformat takes seconds (jsonschema's
# format checkers), and `app` should hand over to Voila at once.

def read_notebook(path: Path) -> dict:
    """The notebook's JSON, each cell's source as one string."""
    nb = json.loads(Path(path).read_text())
    for cell in nb["cells"]:
        cell["source"] = text_of(cell)
    return nb


def text_of(cell: dict) -> str:
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(source)


def new_cell(kind: str, source: str, tags: list[str] | None = None) -> dict:
    cell = {"cell_type": kind, "metadata": {"tags": tags} if tags else {}, "source": source}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def python_of(cell: dict) -> str:
    """A code cell's source as plain Python (IPython's magics become get_ipython() calls), for ast. A quiet
    cell's `%%capture` line is dropped: IPython would hand its body over as a string, hiding its names."""
    return TransformerManager().transform_cell(text_of(cell).removeprefix(QUIET))


def calls(cell: dict, name: str) -> bool:
    """Whether a code cell calls `name` (a function, or a dotted name such as Chapter.from_notebook)."""
    if cell["cell_type"] != "code":
        return False
    return any(isinstance(node, ast.Call) and ast.unparse(node.func) == name
               for node in ast.walk(ast.parse(python_of(cell))))


def is_tagged(cell: dict, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def parameters_index(nb: dict) -> int:
    """The index of the cell tagged 'parameters' (papermill's); a ConfigError when there is none."""
    for i, cell in enumerate(nb["cells"]):
        if is_tagged(cell, "parameters"):
            return i
    raise ConfigError(_("the notebook has no cell tagged 'parameters' (papermill's parameters cell)"))


def panel_cells(nb: dict) -> list[int]:
    """The indices of the code cells that build a panel."""
    return [i for i, cell in enumerate(nb["cells"]) if calls(cell, PANEL_CALL)]


def declared_parameters(nb: dict) -> dict[str, tuple[type, object]]:
    """{name: (type, default)} of the parameters cell's annotated literals (`lr: float = 1e-3`)."""
    tree = ast.parse(nb["cells"][parameters_index(nb)]["source"])
    return {node.target.id: (TYPES[ast.unparse(node.annotation)], ast.literal_eval(node.value))
            for node in tree.body if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


def check_parameters(nb: dict, given: dict[str, str]) -> dict:
    """The `-p NAME VALUE` pairs converted to the types the parameters cell declares ("3e-4" -> 0.0003,
    "[1, 2]" -> a list); a ConfigError naming a name the cell does not declare, or a value of the wrong type."""
    declared = declared_parameters(nb)
    values = {}
    for name, value in given.items():
        if name not in declared:
            raise ConfigError(_("-p {name} {value}: {quoted} is not a parameter of this notebook; allowed: {names}")
                              .format(name=name, value=value, quoted=repr(name), names=", ".join(declared)))
        try:
            values[name] = coerce_value(name, value, declared[name][0])
        except ConfigError as err:
            raise ConfigError(f"-p {name} {value}: {err}") from None
    return values


# ---------------------------------------------------------------- the app notebook

def without_runs(source: str) -> str:
    """A panel cell's source with each panel(...)'s `runs=` argument replaced by `[]`: the runs the chapter's
    experiments trained are not made on the app's page. Edited in place, so the cell keeps its own text."""
    tree = ast.parse(source)
    spans = [kw.value for node in ast.walk(tree) if isinstance(node, ast.Call) and ast.unparse(node.func) == PANEL_CALL
             for kw in node.keywords if kw.arg == "runs"]
    offsets = [0]
    for line in source.splitlines(keepends=True):  # ast counts columns in UTF-8 bytes
        offsets.append(offsets[-1] + len(line.encode()))
    data = source.encode()
    for value in sorted(spans, key=lambda v: (v.lineno, v.col_offset), reverse=True):
        start = offsets[value.lineno - 1] + value.col_offset
        end = offsets[value.end_lineno - 1] + value.end_col_offset
        data = data[:start] + b"[]" + data[end:]
    return data.decode()


def free_names(cells: list[dict]) -> list[str]:
    """Names the code cells read that none of them makes (nor Python, nor IPython): what would fail with a
    NameError on the app's page. Comprehension and lambda variables count as made."""
    made, read = set(IPYTHON_NAMES) | set(dir(builtins)), []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse(python_of(cell))):
            if isinstance(node, ast.Name):
                (read.append(node.id) if isinstance(node.ctx, ast.Load) else made.add(node.id))
            elif isinstance(node, ast.alias):
                made.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                made.add(node.name)
            elif isinstance(node, ast.arg):
                made.add(node.arg)
    return sorted({name for name in read if name not in made})


def injected_cell(values: dict) -> dict:
    """The `-p` values as plain assignments after the parameters cell, tagged as papermill tags its own
    (nbkit.interfaces.profiles reads a plain assignment as a value the learner set)."""
    return new_cell("code", "\n".join(f"{name} = {value!r}" for name, value in values.items()),
                    tags=["injected-parameters"])


def workdir_cell(folder: Path) -> dict:
    """The kernel's first cell: into the folder `app` was started in (Voila starts it in the notebook's)."""
    return new_cell("code", f"import os\nos.chdir({str(folder)!r})")


def replaced(cell: dict, source: str) -> dict:
    """A copy of `cell` with another source (outputs and metadata as they were)."""
    return {**cell, "source": source}


def chapter_cells(nb: dict) -> list[dict]:
    """A chapter's cells for its page: title, imports, parameters, set-up (quiet: `%%capture`), each panel
    cell after the markdown before it, its runs=[...] emptied, and the warm-up. A ConfigError when the notebook
    lacks one of them."""
    cells = nb["cells"]
    first = parameters_index(nb)
    setup = [i for i, cell in enumerate(cells) if calls(cell, SETUP_CALL)]
    if not setup:
        raise ConfigError(_("the notebook has no set-up cell (one calling {call}); the app builds its panel on it")
                          .format(call=SETUP_CALL))
    title = next((c["source"].splitlines()[0] for c in cells if c["cell_type"] == "markdown" and c["source"]), "")
    page = [new_cell("markdown", title)] if title.startswith("#") else []
    page += [c for c in cells[:first] if c["cell_type"] == "code"] + [cells[first]]
    page += [replaced(cells[i], QUIET + cells[i]["source"]) for i in setup if i > first]
    for i in panel_cells(nb):
        if i > 0 and cells[i - 1]["cell_type"] == "markdown":
            page.append(cells[i - 1])
        page.append(replaced(cells[i], without_runs(cells[i]["source"])))  # a panel cell is plain Python
    return page + [warm_up_cell()]


def warm_up() -> None:
    """Import what a first Train imports (accelerate, transformers, peft: 5-20 s on two cores), so that the
    page's first Train starts at once. Run in the kernel's own thread, as the page's last cell: transformers'
    lazy imports are not thread-safe (a warm-up thread racing a Train's thread made the Train fail with
    "cannot import name 'enable_full_determinism' from 'transformers'")."""
    import accelerate  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler, set_seed  # noqa: F401
    import peft  # noqa: F401


def warm_up_cell() -> dict:
    """A chapter page's last cell: warm_up (no output)."""
    return new_cell("code", "from nbkit.interfaces.app import warm_up as _warm_up\n\n_warm_up()")


def instructor_cells(nb: dict) -> list[dict]:
    """The instructor notebook down to the cell showing the live board."""
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code" and cell["source"].strip().splitlines()[-1:] == [BOARD_NAME]:
            return list(nb["cells"][:i + 1])
    raise ConfigError(_("the instructor notebook has no cell ending with `{name}` (the live board)")
                      .format(name=BOARD_NAME))


def app_notebook(source: Path, values: dict, workdir: Path) -> dict:
    """The notebook Voila serves for `source` (a chapter or the instructor's), with the checked `-p` values
    (check_parameters) and the kernel in `workdir`. A ConfigError when its cells would need a name that only
    the left-out cells make."""
    nb = read_notebook(source)
    is_chapter = source.stem != INSTRUCTOR
    values = dict(values)
    if is_chapter and "output_dir" in declared_parameters(nb):
        values.setdefault("output_dir", APP_OUTPUT_DIR)
    cells = chapter_cells(nb) if is_chapter else instructor_cells(nb)
    at = next(i for i, cell in enumerate(cells) if is_tagged(cell, "parameters")) + 1
    cells = [workdir_cell(workdir)] + cells[:at] + ([injected_cell(values)] if values else []) + cells[at:]
    missing = free_names(cells)
    if missing:
        raise ConfigError(_("{notebook}: its page would read {names}, made only by the cells the app leaves out (the "
                            "experiments); allowed: a panel cell that uses the set-up cell's names")
                          .format(notebook=source.name, names=", ".join(missing)))
    cells = [{**cell, "id": f"app-{n}"} for n, cell in enumerate(cells)]  # unique ids (nbformat 4.5)
    return {"cells": cells, "metadata": nb["metadata"], "nbformat": 4, "nbformat_minor": 5}


def checked(what, given: dict[str, str]) -> tuple[Path, dict]:
    """(the notebook to serve for `what`, the `-p` values converted) once everything is checked: the chapter, the
    parameters, and for the instructor's board its class. A ConfigError naming the value otherwise."""
    source = app_source(what)
    language = check_language(given.get("language") or get_language(), "-p language")
    source = edition(source, language)  # the Chinese edition's words for "zh"; the same code cells
    values = check_parameters(read_notebook(source), given)
    if source.stem == INSTRUCTOR:
        check_class(source, values)
    return source, values


def write_app(source: Path, values: dict, folder: Path, workdir: Path | None = None) -> Path:
    """Write the app notebook for `source` with the checked `-p` values into `folder`, its kernel in `workdir`
    (default: here); returns its path, named as the source (Voila shows the name as the page's title)."""
    path = Path(folder) / source.name
    path.write_text(json.dumps(app_notebook(source, values, Path(workdir or Path.cwd()).resolve()), indent=1))
    return path


def check_class(source: Path, values: dict) -> None:
    """Refuse, before serving the instructor's page, a class that cannot be shown: a spec to create it from
    that is wrong, or, without one, a class not in the storage (its StudyError lists the classes there)."""
    from nbkit.core.classroom import open_class

    declared = {name: default for name, (_type, default) in declared_parameters(read_notebook(source)).items()}
    values = {**declared, **values}
    if values.get("create_from"):
        from nbkit.interfaces.workshop import read_class_spec  # the board's plots come with it (torch): seconds

        read_class_spec(values["create_from"], values["storage"])
    else:
        open_class(values["class_name"], values["storage"])


# ---------------------------------------------------------------- serving it

def check_port(host: str, port: int) -> None:
    """A ConfigError when `port` on `host` cannot be listened on (taken, or not an address of this machine)."""
    if not 0 < port < 65536:
        raise ConfigError(_("--port {port}: allowed: 1 to 65535").format(port=port))
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as err:
            raise ConfigError(_("--host {host} --port {port}: cannot listen there ({reason}); allowed: a free port "
                                "(e.g. --port {next_port}) on an address of this machine")
                              .format(host=host, port=port, reason=err.strerror, next_port=port + 1)) from None


def voila_command(path: Path, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "voila", str(path), f"--port={port}", f"--Voila.ip={host}", *VOILA_OPTIONS]


def page_urls(host: str, port: int) -> list[str]:
    """Where the page is: on a room's address (0.0.0.0), this machine's name as well as this machine."""
    if host in ("0.0.0.0", ""):
        return [f"http://{socket.gethostname()}:{port}/", f"http://127.0.0.1:{port}/"]
    return [f"http://{host}:{port}/"]


def wait_listening(process: subprocess.Popen, host: str, port: int, seconds: float = READY_SECONDS) -> bool:
    """Poll until Voila accepts connections (True), or it exits / the time is up (False). Only a connection:
    a GET of the page would start a kernel and run the notebook."""
    address = "127.0.0.1" if host in ("0.0.0.0", "") else host
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def kernel_env() -> dict:
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # MPLBACKEND=Agg would silently drop the page's images (DESIGN.md)
    return env


def serve(what, given: dict[str, str] | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          browser: bool = False) -> int:
    """`python -m nbkit app`: check everything, write the app notebook into a temporary folder, run Voila on
    it until Ctrl-C, SIGTERM or SIGHUP (or Voila ends), then stop Voila and remove the folder. Returns Voila's
    exit status (0 when stopped)."""
    source, values = checked(what, dict(given or {}))
    check_port(host, port)
    folder = Path(tempfile.mkdtemp(prefix="nbkit-app-"))
    try:
        path = write_app(source, values, folder)
        # its own session: Ctrl-C reaches only us, and we end Voila with SIGTERM, which it handles quietly
        process = subprocess.Popen(voila_command(path, host, port), env=kernel_env(), start_new_session=True)
        try:
            with interrupted_by_signals():
                if wait_listening(process, host, port):
                    announce(path, page_urls(host, port), browser)
                elif process.poll() is None:
                    print(_("nbkit app: Voila is not listening after {seconds} s; still waiting (its messages are "
                            "above)").format(seconds=READY_SECONDS), file=sys.stderr, flush=True)
                return process.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            stop(process)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def announce(path: Path, urls: list[str], browser: bool) -> None:
    """Say where the page is (a line to copy onto the board), and open it if asked."""
    print(_("nbkit app: {page} at {urls} (code hidden; a kernel runs the page ahead of each visitor: it shows once "
            "that is done; Ctrl-C stops)").format(page=path.stem, urls=_(" or ").join(urls)) + "\n"
          + _("app notebook: {path}").format(path=path), flush=True)
    if browser:
        webbrowser.open(urls[-1])


@contextlib.contextmanager
def interrupted_by_signals():
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt inside the block, so that Voila is stopped and the
    temporary folder removed. By default SIGTERM and SIGHUP end Python at once, leaving Voila running, and a
    process started in the background from a script ignores SIGINT."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    kept = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)


def stop(process: subprocess.Popen, seconds: float = 15) -> None:
    """End Voila (SIGTERM: it shuts its kernels down), then kill it if it does not end in `seconds`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

