"""nbkit.core.i18n: the process's language, the catalogues it reads, and what it does with an entry that is
missing, fuzzy or changed. On catalogues written in tmp_path (the real ones: tests/test_translate.py); and that
every user-facing string of nbkit/ goes through _() to the catalogue (an AST scan of the package)."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import write_po

from nbkit.core import i18n
from nbkit.core.i18n import LanguageError, _, catalogue_path, check_language, set_language, use_catalogue


@pytest.fixture(autouse=True)
def english_after():
    before = (i18n._state["language"], list(i18n._state["catalogues"]))
    yield
    i18n._state["language"], i18n._state["catalogues"] = before[0], before[1]


def write_catalogue(folder: Path, domain: str, entries: dict, fuzzy=()) -> Path:
    catalog = Catalog(locale="zh_CN")
    for english, chinese in entries.items():
        catalog.add(english, chinese, flags=("fuzzy",) if english in fuzzy else ())
    path = catalogue_path(folder, domain, "zh")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        write_po(file, catalog)
    return path


def test_a_language_is_checked_and_named_in_the_error():
    assert [check_language(v) for v in ("en", "zh", "zh-CN", "zh_CN", "ZH")] == ["en", "zh", "zh", "zh", "zh"]
    for bad in ("fr", "", None, 3):
        with pytest.raises(LanguageError, match=r"language=.*allowed: 'en', 'zh'"):
            set_language(bad)


def test_chinese_comes_from_the_catalogue_and_english_stays_the_source(tmp_path):
    use_catalogue(tmp_path, "chapter")
    write_catalogue(tmp_path, "chapter", {"validation loss": "验证损失", "{n} runs": "{n} 次运行",
                                          "stale": "过时的译文"}, fuzzy={"stale"})
    set_language("zh")
    assert _("validation loss") == "验证损失"
    assert _("{n} runs").format(n=3) == "3 次运行"
    assert _("stale") == "stale"  # a fuzzy entry shows the English, never Chinese that may say something else
    assert _("not in any catalogue") == "not in any catalogue"
    set_language("en")
    assert _("validation loss") == "validation loss"


def test_an_edited_catalogue_is_read_again(tmp_path):
    use_catalogue(tmp_path, "chapter")
    set_language("zh")
    message = "Train the model of this test"  # in no other catalogue (the package's is read first)
    path = write_catalogue(tmp_path, "chapter", {message: "训练"})
    assert _(message) == "训练"
    import os
    write_catalogue(tmp_path, "chapter", {message: "开始训练"})
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a later mtime, as an edit has
    assert _(message) == "开始训练"


def test_nbkit_lang_sets_the_language_of_a_new_process():
    code = "from nbkit.core.i18n import get_language; print(get_language())"
    run = lambda value: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: E731
                                       env={"NBKIT_LANG": value, "PATH": ""})
    assert run("zh").stdout.strip() == "zh" and run("en").stdout.strip() == "en"
    bad = run("klingon")
    assert bad.returncode != 0 and "NBKIT_LANG='klingon': allowed: 'en', 'zh'" in bad.stderr


def test_columns_counts_a_wide_character_twice():
    from nbkit.core.i18n import columns
    assert columns("loss") == 4 and columns("验证损失") == 8 and columns("LR 学习率") == 9


# ---------------------------------------------------------------- every user-facing string goes through _()

PACKAGE = Path(__file__).resolve().parent.parent / "nbkit"
# Where a person reads a string: an error's message (the first argument of `raise SomeError(...)`), a figure's or a
# widget's label (these keyword arguments; value= of widgets.HTML/Label), the first argument of these calls (print,
# warnings.warn, parser.error, matplotlib's titles and labels, widgets.HTML/Label), the third of ax.text(x, y, s), and
# a status line set on a widget (`status.value = ...`).
LABEL_KEYWORDS = {"description", "tooltip", "placeholder", "help", "title", "xlabel", "ylabel", "label"}
SHOWN_BY = {"set_title", "set_xlabel", "set_ylabel", "suptitle", "annotate", "print", "warn", "error", "HTML", "Label"}
WIDGET_TEXTS = {"value", "description", "tooltip", "placeholder"}
MARKERS = {"_", "N_"}  # a string inside one of these is translated (N_ marks it, _ shows it)
FIELD = re.compile(r"\{[^{}]*\}")  # a format field: code, as an f-string's {expression} is
MARKUP = re.compile(r"<[^>]*>|&#?\w+;|python -m [^\n]*")  # an HTML tag or entity, a command line: code
WORD = re.compile(r"[A-Za-z][a-z]+(?:['-][a-z]+)*")  # letters; an identifier (_ . = digits) or an acronym is code
# "path::function": why its strings stay in English. Few, and each one still needed (a test says so).
EXEMPT = {
    "nbkit/__init__.py::__getattr__": "Python's AttributeError protocol for a module attribute, as Python words it",
    "nbkit/core/i18n.py::check_language": "names both languages already; an unknown language has no catalogue to read",
    "nbkit/interfaces/chapter.py::Chapter.__init__": "to a chapter's author about its claims, never from a learner's "
                                                     "parameters",
    "nbkit/interfaces/chapter.py::Chapter.check": "to a chapter's author about a claim's check",
    "nbkit/interfaces/chapter.py::Chapter.conclude": "to a chapter's author about a claim's conclusion",
    "nbkit/interfaces/chapter.py::Chapter.summary_lines": "to a chapter's author: a claim without its conclusion",
    "nbkit/interfaces/cli.py::main": '"nbkit: error: " stays as it is in every language: scripts grep it '
                                     "(tests/test_cli.py); the error after it is translated",
}


def is_text(text: str) -> bool:
    """Whether `text` (an f-string's expressions as {}) has words a person reads: two or more, or one with more
    around it ("bad {}") or capitalised ("Loss"). A bare lowercase word ("pruned", "epoch") is a key or a column."""
    tokens = MARKUP.sub(" ", FIELD.sub("{}", text)).split()
    words = [t for t in (token.strip("()[]\"'`").rstrip(".,;:!?") for token in tokens) if WORD.fullmatch(t)]
    return len(words) >= 2 or (len(words) == 1 and (text.strip() != words[0] or words[0][0].isupper()))


def shown_expressions(node: ast.AST):
    """The expressions of `node` itself (not of the nodes in it) whose strings a person reads."""
    if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
        yield node.exc.args[0]
    elif isinstance(node, ast.Call):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        yield from (kw.value for kw in node.keywords
                    if kw.arg in LABEL_KEYWORDS or (kw.arg == "value" and name in {"HTML", "Label"}))
        if name in SHOWN_BY and node.args:
            yield node.args[0]
        if name == "text" and isinstance(node.func, ast.Attribute) and len(node.args) >= 3:  # ax.text(x, y, s)
            yield node.args[2]
    elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr in WIDGET_TEXTS
                                              for t in node.targets):
        yield node.value


def literals(node: ast.AST, wrapped: list):
    """(literal, text) of each string or f-string with words in `node`, outside _() and N_(); the first argument of
    each _() or N_() met goes to `wrapped`."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in MARKERS:
        wrapped += [a.value for a in node.args[:1] if isinstance(a, ast.Constant)]
        return
    if isinstance(node, ast.JoinedStr):
        text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        if is_text(text):
            yield node, text
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                yield from literals(value.value, wrapped)
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and is_text(node.value):
        yield node, node.value
    for child in ast.iter_child_nodes(node):
        yield from literals(child, wrapped)


def unwrapped_strings(source: str, path: str) -> tuple[list[tuple[str, int, str]], list[str]]:
    """([(path::function, line, the literal as written)] of the user-facing strings in `source` that no _() or
    N_() holds, [the English of each _()/N_() met where a person reads it])."""
    found, wrapped, seen = [], [], set()

    def visit(node, where):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            where = where + [node.name]
        for expression in shown_expressions(node):
            for literal, _text in literals(expression, wrapped):
                if id(literal) not in seen:
                    seen.add(id(literal))
                    found.append((f"{path}::{'.'.join(where)}", literal.lineno, ast.unparse(literal)))
        for child in ast.iter_child_nodes(node):
            visit(child, where)

    visit(ast.parse(source), [])
    return found, wrapped


def test_every_user_facing_string_in_nbkit_goes_through_the_catalogue():
    found, wrapped = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        more, seen = unwrapped_strings(path.read_text(encoding="utf-8"), path.relative_to(PACKAGE.parent).as_posix())
        found += more
        wrapped += seen
    # the scan reads what it should: strings it knows in _() of an error, a figure's axis and a legend
    for known in ("--set {item}: expected KEY=VALUE, e.g. --set learning_rate=3e-4", "epoch (0 = base model)",
                  "grad norm (before clipping)"):
        assert known in wrapped, f"the scan no longer sees _({known!r})"
    assert len(wrapped) > 200, len(wrapped)
    offenders = [f"{where.split('::')[0]}:{line}: {text}" for where, line, text in found if where not in EXEMPT]
    assert not offenders, ("user-facing English outside _() (write _(\"... {name} ...\").format(name=...), then "
                           "python -m nbkit translate):\n" + "\n".join(offenders))
    stale = set(EXEMPT) - {where for where, _line, _text in found}
    assert not stale, f"exemptions with nothing left to exempt (remove them): {sorted(stale)}"


def test_the_scan_flags_an_unwrapped_string_and_passes_the_wrapped_one():
    bad = ('def check(x):\n'
           '    raise ValueError(f"bad {x}")\n'
           'def draw(ax, w):\n'
           '    ax.set_title("Learning rate")\n'
           '    ax.plot([1], label="validation loss")\n'
           '    w.status.value = "<b>training...</b> please wait"\n'
           '    print("done in {s}s".format(s=1))\n')
    found, wrapped = unwrapped_strings(bad, "m.py")
    assert [(where, line) for where, line, _text in found] == [("m.py::check", 2), ("m.py::draw", 4), ("m.py::draw", 5),
                                                              ("m.py::draw", 6), ("m.py::draw", 7)]
    assert found[0][2] == "f'bad {x}'" and wrapped == []
    good = ('def check(x):\n'
            '    raise ValueError(_("bad {x}").format(x=x))\n'
            'def draw(ax, w, run):\n'
            '    ax.set_title(_("Learning rate"))\n'
            '    ax.plot([1], label=N_("validation loss"))\n'
            '    w.status.value = "<b>" + _("training...") + "</b>"\n'
            '    raise StopRun("pruned", run.epochs["epoch"])\n'  # a key, a column: code
            '    raise ValueError(f"{name}={value!r}: {err}")\n'
            '    print(f"{run.path}.ipynb")\n'  # a file name: code
            '    print(_("done in {s}s").format(s=1))\n')
    assert unwrapped_strings(good, "m.py") == ([], ["bad {x}", "Learning rate", "validation loss", "training...",
                                                    "done in {s}s"])
