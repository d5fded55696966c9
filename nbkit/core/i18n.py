"""The language a learner reads: English, or Chinese ("zh") from gettext catalogues kept in the repository.

    from nbkit.core.i18n import _, set_language
    set_language("zh")               # a chapter's `language` parameter, the panel's toggle; NBKIT_LANG for the CLI
    _("validation loss")             # "验证损失" in zh, the English as written otherwise
    _("{n} runs").format(n=3)        # placeholders by name: a translation may move them
    ADVICE = {"diverged": N_("Lower the learning rate.")}   # marked at import, translated when shown:
    _(ADVICE["diverged"])

English is the source. A user-facing string is written once, in English, inside _(); the Chinese is in a
catalogue in gettext's .po format (read here with Babel, written by `python -m nbkit translate`, which marks a
new string untranslated and a changed one fuzzy, and a test names each). Catalogues:

    nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po             the package's strings (panel, doctor, verdicts, errors)
    notebooks/locale/zh_CN/LC_MESSAGES/<chapter>.po     a chapter's markdown cells and the strings of its code cells

A string without a translation, or with a fuzzy one, shows in English: never an error, and never Chinese that
no longer says what the English says.

The language belongs to the process, as in gettext: one call sets it for every module, and each _() reads it
when it is called, so a panel's toggle changes the next label drawn. A chapter adds its own catalogue
(use_catalogue), read after the package's.
"""
from __future__ import annotations

import functools
import os
import unicodedata
from pathlib import Path

LANGUAGES = ("en", "zh")  # the parameter's values: "en" (the source) and "zh" (简体中文)
LOCALES = {"zh": "zh_CN"}  # the gettext locale of each translated language: the folder under locale/
SOURCE_LANGUAGE = "en"
ENV_VARIABLE = "NBKIT_LANG"  # the CLI's language (and a kernel's, before its chapter sets one)
PACKAGE_DOMAIN = "nbkit"
PACKAGE_LOCALE_DIR = Path(__file__).resolve().parents[1] / "locale"

# The process's language and its catalogues: (folder, domain) pairs, the package's first. Set by set_language and
# use_catalogue only.
_state = {"language": None, "catalogues": [(PACKAGE_LOCALE_DIR, PACKAGE_DOMAIN)]}


class LanguageError(ValueError):
    """A language nbkit has no text in: the message names the field, the value and the languages there are."""


def check_language(language, field: str = "language") -> str:
    """`language` as one of LANGUAGES ("zh-CN", "zh_CN" and "ZH" read as "zh"); LanguageError otherwise."""
    if isinstance(language, str):
        short = language.strip().replace("_", "-").split("-")[0].lower()
        if short in LANGUAGES:
            return short
    raise LanguageError(f"{field}={language!r}: allowed: {', '.join(repr(code) for code in LANGUAGES)} "
                        "(English, 简体中文)")


def set_language(language: str) -> str:
    """Read every string from now on in `language` ("en" or "zh"); returns it as checked."""
    _state["language"] = check_language(language)
    return _state["language"]


def get_language() -> str:
    """The language set, else NBKIT_LANG's, else English."""
    if _state["language"] is None:
        _state["language"] = check_language(os.environ.get(ENV_VARIABLE) or SOURCE_LANGUAGE, ENV_VARIABLE)
    return _state["language"]


def use_catalogue(folder: str | Path, domain: str) -> None:
    """Also read <folder>/<locale>/LC_MESSAGES/<domain>.po (a chapter's catalogue), after the package's."""
    entry = (Path(folder), domain)
    if entry not in _state["catalogues"]:
        _state["catalogues"].append(entry)


def catalogue_path(folder: str | Path, domain: str, language: str) -> Path:
    return Path(folder) / LOCALES[check_language(language)] / "LC_MESSAGES" / f"{domain}.po"


def _(message: str) -> str:
    """`message` in the process's language: its catalogue's translation when there is one and it is not fuzzy,
    else `message` itself."""
    language = get_language()
    if language == SOURCE_LANGUAGE:
        return message
    for folder, domain in _state["catalogues"]:
        path = catalogue_path(folder, domain, language)
        found = translations(path, path.stat().st_mtime_ns if path.exists() else 0).get(message)
        if found:
            return found
    return message


def columns(text: str) -> int:
    """The columns `text` takes on a terminal or a figure's line: a wide (CJK) character takes two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def N_(message: str) -> str:
    """Mark a string for the catalogue without translating it now: a module-level table of texts is made at
    import, before any language is set, so its entries are translated where they are shown: _(TABLE[key])."""
    return message


@functools.lru_cache(maxsize=64)
def translations(path: Path, modified: int) -> dict[str, str]:
    """{English: translation} of the catalogue at `path`: its translated entries, fuzzy ones left out. Read
    again when the file changes (`modified`: its mtime), so `nbkit translate` shows in a running kernel."""
    if not modified:
        return {}
    from babel.messages.pofile import read_po  # here: only a translated language needs Babel

    with open(path, "rb") as file:
        catalog = read_po(file)
    return {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy and isinstance(m.id, str)}
