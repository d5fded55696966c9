"""nbkit.core.i18n: the process's language, the catalogues it reads, and what it does with an entry that is
missing, fuzzy or changed. On catalogues written in tmp_path (the real ones: tests/test_translate.py)."""
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
