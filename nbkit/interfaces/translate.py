"""The Chinese edition, generated: catalogues kept up to date with the English, and the Chinese notebooks
written from the English ones and the catalogues (`python -m nbkit translate`; `--check` changes nothing and
says what is out of date, as the tests do).

    notebooks/01_learning_rate.ipynb                      the chapter, written once, in English
    notebooks/locale/zh_CN/LC_MESSAGES/01_learning_rate.po   its Chinese: a markdown cell a message, and the
                                                          strings its code cells pass to _()
    notebooks/zh/01_learning_rate.ipynb                   generated: the same cells (code shared, not rewritten),
                                                          each markdown cell in Chinese, `language = "zh"`
    nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po               the package's strings (every _() in nbkit/)
    nbkit/locale/glossary.yaml                            the terms every Chinese string uses

A catalogue is updated as gettext's msgmerge does (Babel's Catalog.update): a new English string is an
untranslated entry, a changed one keeps its old Chinese marked fuzzy, and a removed one is dropped. A Chinese
notebook shows the English of a cell whose entry is untranslated or fuzzy, never stale Chinese; `problems()`
names each such entry, each catalogue or notebook out of date, and each Chinese string that uses another word
for a glossary term.
"""
from __future__ import annotations

import copy
import io
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml
from babel.messages.catalog import Catalog
from babel.messages.extract import extract, extract_from_dir
from babel.messages.pofile import read_po, write_po

from nbkit.core.i18n import LOCALES, PACKAGE_DOMAIN, PACKAGE_LOCALE_DIR, catalogue_path
from nbkit.interfaces.chapter import CHAPTER_LOCALE_DIR
from nbkit.interfaces.profiles import NOTEBOOKS_DIR, edition

PACKAGE_DIR = PACKAGE_LOCALE_DIR.parent
GLOSSARY_FILE = PACKAGE_LOCALE_DIR / "glossary.yaml"
KEYWORDS = {"_": None, "N_": None}  # _("...") in nbkit/ and in a chapter's code cells; N_ marks a table's text
LANGUAGE_LINE = re.compile(r'^language: str = "en"', re.M)  # the parameters cell's line the Chinese copy changes


def translated_notebooks() -> list[Path]:
    """The notebooks with a Chinese edition: the chapters and the instructor's notebook."""
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")) + [NOTEBOOKS_DIR / "instructor.ipynb"]


# ---------------------------------------------------------------- what there is to translate

def notebook_template(path: Path) -> Catalog:
    """A chapter's messages: each markdown cell whole (its cell id as the location), then each _("...") of its
    code cells."""
    template = Catalog(project=path.stem)
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown" and cell.source.strip():
            template.add(cell.source, locations=[(f"{path.name}#{cell.get('id', '')}", 0)])
        elif cell.cell_type == "code":
            for line, message, comments, _context in _python_messages(cell.source):
                template.add(message, locations=[(f"{path.name}#{cell.get('id', '')}", line)],
                             auto_comments=comments)
    return template


def _python_messages(source: str):
    """(line, message, comments, context) of each _("...") in `source`; an IPython line magic is blanked first."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    for line, message, comments, context in extract("python", io.BytesIO("\n".join(lines).encode()), KEYWORDS):
        if isinstance(message, str) and message:
            yield line, message, comments, context


def package_template() -> Catalog:
    """Every _("...") in nbkit/'s modules."""
    template = Catalog(project=PACKAGE_DOMAIN)
    for filename, line, message, comments, _context in extract_from_dir(
            PACKAGE_DIR, [("**.py", "python")], KEYWORDS, comment_tags=("Translators:",)):
        if isinstance(message, str) and message:
            template.add(message, locations=[(f"nbkit/{filename}", line)], auto_comments=comments)
    return template


@dataclass
class Source:
    """One catalogue and what it translates."""
    name: str  # "nbkit" or a notebook's stem
    template: Catalog
    po: Path


def sources(language: str = "zh") -> list[Source]:
    found = [Source(PACKAGE_DOMAIN, package_template(), catalogue_path(PACKAGE_LOCALE_DIR, PACKAGE_DOMAIN, language))]
    for path in translated_notebooks():
        po = catalogue_path(CHAPTER_LOCALE_DIR, path.stem, language)
        found.append(Source(path.stem, notebook_template(path), po))
    return found


# ---------------------------------------------------------------- catalogues

def read_catalogue(path: Path, language: str = "zh") -> Catalog:
    if not path.exists():
        catalog = Catalog(locale=LOCALES[language], project=f"nbkit {path.stem}", fuzzy=False,
                          copyright_holder="the nbkit authors", last_translator="the nbkit authors",
                          language_team=f"nbkit {LOCALES[language]}", msgid_bugs_address="")
        catalog.header_comment = (f"# {LOCALES[language]} catalogue of {path.stem}: the Chinese of its English "
                                  "strings.\n# Updated by `python -m nbkit translate`; translate an entry by "
                                  "filling its msgstr (nbkit/locale/glossary.yaml has the terms).")
        return catalog
    with open(path, "rb") as file:
        return read_po(file)


def updated_catalogue(source: Source, language: str = "zh") -> Catalog:
    """The catalogue as msgmerge leaves it against the English now: new entries untranslated, changed ones
    fuzzy with their old Chinese, removed ones gone."""
    catalog = read_catalogue(source.po, language)
    catalog.update(source.template, no_fuzzy_matching=False, update_header_comment=False)
    catalog.obsolete.clear()
    for message in catalog:
        if not message.fuzzy:  # a reviewed entry: the English it was matched from no longer matters
            message.previous_id = ()
    return catalog


def po_text(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    # locations without line numbers: an edit that moves a string leaves the catalogue as it is
    write_po(out, catalog, width=0, omit_header=False, sort_output=False, include_previous=True, include_lineno=False)
    return _stable_header(out.getvalue())


def _stable_header(text: bytes) -> bytes:
    """The header without its dates: regenerating an unchanged catalogue must leave the file unchanged."""
    return re.sub(rb'"(POT-Creation-Date|PO-Revision-Date): [^"]*\\n"\n', b"", text)


# ---------------------------------------------------------------- the Chinese notebooks

def translated_notebook(path: Path, catalog: Catalog, language: str = "zh") -> nbformat.NotebookNode:
    """The notebook at `path` in `language`: every markdown cell replaced by its translation (its English when
    the entry is untranslated or fuzzy), the parameters cell's `language = "en"` set to it, code cells as they
    are (a chapter's code reads _() at run time)."""
    notebook = copy.deepcopy(nbformat.read(path, as_version=4))
    found = {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source in found:
            cell.source = found[cell.source]
        elif cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            cell.source = LANGUAGE_LINE.sub(f'language: str = "{language}"', cell.source, count=1)
    notebook.metadata.setdefault("nbkit", {})["translated_from"] = f"../{path.name}"
    return notebook


def notebook_text(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"


# ---------------------------------------------------------------- the glossary

def glossary() -> list[dict]:
    """The terms: [{"en", "zh", "source": "article"|"lab", "avoid": [other words a string must not use]}]."""
    return yaml.safe_load(GLOSSARY_FILE.read_text(encoding="utf-8"))["terms"]


def glossary_problems(texts: dict[str, str]) -> list[str]:
    """'<where>: uses <word> for <term> (the glossary says <zh>)' for each Chinese text using an avoided word."""
    found = []
    for where, text in texts.items():
        for term in glossary():
            for word in term.get("avoid", []):
                if word in text:
                    found.append(f"{where}: uses {word!r} for {term['en']!r} (the glossary says {term['zh']!r})")
    return found


# ---------------------------------------------------------------- the command

def outputs(language: str = "zh") -> dict[Path, bytes]:
    """Every file `nbkit translate` writes, with its content: the catalogues and the Chinese notebooks."""
    written = {}
    for source in sources(language):
        catalog = updated_catalogue(source, language)
        written[source.po] = po_text(catalog)
        if source.name != PACKAGE_DOMAIN:
            notebook_path = NOTEBOOKS_DIR / f"{source.name}.ipynb"
            written[edition(notebook_path, language)] = notebook_text(
                translated_notebook(notebook_path, catalog, language)).encode()
    return written


def untranslated(language: str = "zh") -> list[str]:
    """'<catalogue>: untranslated|fuzzy: <the English, cut>' for each entry a reader would meet in English."""
    found = []
    for source in sources(language):
        for message in updated_catalogue(source, language):
            if not message.id:
                continue
            state = "fuzzy" if message.fuzzy else "untranslated" if not message.string else None
            if state:
                found.append(f"{source.po.relative_to(NOTEBOOKS_DIR.parent)}: {state}: {_cut(message.id)}")
    return found


def problems(language: str = "zh") -> list[str]:
    """What `nbkit translate --check` reports: files out of date, entries untranslated or fuzzy, glossary words."""
    stale = [f"{path.relative_to(NOTEBOOKS_DIR.parent)}: out of date (python -m nbkit translate)"
             for path, content in outputs(language).items() if not path.exists() or path.read_bytes() != content]
    texts = {}
    for source in sources(language):
        for message in read_catalogue(source.po, language):
            if message.id and message.string:
                texts[f"{source.po.name}: {_cut(message.id)}"] = message.string
    return stale + untranslated(language) + glossary_problems(texts)


def write(language: str = "zh") -> list[Path]:
    """Write the catalogues and the Chinese notebooks; the paths that changed."""
    changed = []
    for path, content in outputs(language).items():
        if not path.exists() or path.read_bytes() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            changed.append(path)
    return changed


def _cut(text: str, width: int = 70) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 3] + "..."
