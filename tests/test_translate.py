"""nbkit.interfaces.translate: the Chinese edition generated from the English and the catalogues. A change to
the English shows as a fuzzy or untranslated entry named in the report, never as stale Chinese; the committed
catalogues and notebooks/zh/ are what `python -m nbkit translate` writes; no Chinese string uses another word
for a glossary term."""
import re
import subprocess
import sys

import nbformat
import pytest

from nbkit.interfaces import translate
from nbkit.interfaces.translate import (Source, glossary, glossary_problems, notebook_template, outputs, po_text,
                                        read_catalogue, translated_notebook, updated_catalogue)
from study_helpers import REPO_ROOT


def chapter(path, first: str, second: str):
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell('output_dir: str = "runs"\nlanguage: str = "en"  # "zh": Chinese')
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [nbformat.v4.new_markdown_cell(first), parameters,
                      nbformat.v4.new_code_cell('%matplotlib inline\nprint(_("{n} runs diverged").format(n=2))'),
                      nbformat.v4.new_markdown_cell(second)]
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def translated(tmp_path):
    """A chapter and its catalogue, every entry translated."""
    path = chapter(tmp_path / "01_demo.ipynb", "# Learning rate", "The largest LR diverges.")
    source = Source("01_demo", notebook_template(path), tmp_path / "01_demo.po")
    catalog = updated_catalogue(source)
    chinese = {"# Learning rate": "# 学习率", "{n} runs diverged": "{n} 次运行发散",
               "The largest LR diverges.": "最大的学习率发散。"}
    for message in catalog:
        if message.id:
            message.string = chinese[message.id]
    source.po.write_bytes(po_text(catalog))
    return path, source


def test_a_chapter_catalogue_holds_its_markdown_cells_and_the_strings_its_code_passes_to_underscore(translated):
    path, source = translated
    assert [m.id for m in read_catalogue(source.po) if m.id] == [
        "# Learning rate", "{n} runs diverged", "The largest LR diverges."]


def test_the_chinese_notebook_shares_the_code_and_sets_the_language(translated):
    path, source = translated
    english, chinese = nbformat.read(path, 4), translated_notebook(path, read_catalogue(source.po))
    assert [c.source for c in chinese.cells if c.cell_type == "markdown"] == ["# 学习率", "最大的学习率发散。"]
    assert chinese.cells[2].source == english.cells[2].source  # code as written: _() translates when it runs
    assert 'language: str = "zh"' in chinese.cells[1].source and "runs" in chinese.cells[1].source


def test_a_changed_english_cell_is_fuzzy_and_shown_in_english_until_translated_again(translated, tmp_path):
    path, source = translated
    chapter(path, "# Learning rate", "The largest LR diverges: the trainer stops it.")  # the English changed
    source = Source("01_demo", notebook_template(path), source.po)
    catalog = updated_catalogue(source)
    changed = catalog.get("The largest LR diverges: the trainer stops it.")
    assert changed.fuzzy and changed.string == "最大的学习率发散。"  # the old Chinese kept, marked for review
    assert catalog.get("The largest LR diverges.") is None  # the old entry dropped
    chinese = translated_notebook(path, catalog)
    assert chinese.cells[3].source == "The largest LR diverges: the trainer stops it."  # English, not stale Chinese
    assert chinese.cells[0].source == "# 学习率"


def test_a_new_english_cell_is_untranslated_and_named(translated, monkeypatch):
    path, source = translated
    notebook = nbformat.read(path, 4)
    notebook.cells.append(nbformat.v4.new_markdown_cell("## Exercises\nTry a larger batch."))
    nbformat.write(notebook, path)
    monkeypatch.setattr(translate, "sources", lambda language="zh": [
        Source("01_demo", notebook_template(path), source.po)])
    monkeypatch.setattr(translate, "NOTEBOOKS_DIR", path.parent / "notebooks")  # names relative to its parent
    assert translate.untranslated() == ["01_demo.po: untranslated: ## Exercises Try a larger batch."]


def test_the_committed_catalogues_and_chinese_notebooks_are_up_to_date():
    stale = [str(path.relative_to(REPO_ROOT)) for path, content in outputs().items()
             if not path.exists() or path.read_bytes() != content]
    assert stale == [], "run `python -m nbkit translate` and commit what it writes"


def test_the_glossary_has_one_chinese_word_per_term_and_the_articles_own_words():
    terms = glossary()
    assert len({t["zh"] for t in terms}) == len(terms) and len({t["en"] for t in terms}) == len(terms)
    # the article's sentences, as CLAIMS.zh.md quotes them (each checked against the seed text when it was written)
    claims = (REPO_ROOT / "notebooks" / "CLAIMS.zh.md").read_text(encoding="utf-8")
    quoted = " ".join(re.findall(r"^\| [A-Z]{2}\d+ \| [^|]+ \| (.+?) \|$", claims, flags=re.M))
    assert [t["zh"] for t in terms if t["source"] == "article" and t["zh"] not in quoted + t.get("quote", "")] == []


def test_no_chinese_string_uses_another_word_for_a_glossary_term():
    texts = {}
    for source in translate.sources():
        for message in read_catalogue(source.po):
            if message.id and message.string:
                texts[f"{source.po.name}: {message.id[:40]}"] = message.string
    for name in ("README.zh.md", "notebooks/README.zh.md", "notebooks/CLAIMS.zh.md"):
        if (REPO_ROOT / name).exists():
            texts[name] = (REPO_ROOT / name).read_text(encoding="utf-8")
    assert glossary_problems(texts) == []


def test_the_glossary_check_catches_another_word():
    assert glossary_problems({"x.po: Batch": "批大小翻倍时"}) == [
        "x.po: Batch: uses '批大小' for 'batch size' (the glossary says '批量大小')"]


def test_translate_check_passes_on_the_committed_edition_and_exits_1_naming_each_problem(monkeypatch, capsys):
    result = subprocess.run([sys.executable, "-m", "nbkit", "translate", "--check"], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0 and "complete and up to date" in result.stdout, result.stdout + result.stderr
    from nbkit.interfaces.cli import main
    monkeypatch.setattr(translate, "problems", lambda: ["x.po: untranslated: Train"])
    assert main(["translate", "--check"]) == 1 and "x.po: untranslated: Train" in capsys.readouterr().out
