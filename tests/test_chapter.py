"""nbkit.interfaces.chapter.Chapter: what a chapter records in results.json (no training here: fast)."""
import json
import math
import re

import pandas as pd
import pytest
from matplotlib.figure import Figure

from nbkit.core.i18n import set_language
from nbkit.interfaces.chapter import Chapter, LAB_CLAIM, article_claims, listed, per_seed, seed_set


def read_results(ch):
    return json.loads(ch.results_path.read_text())


def test_claims_table_is_read_from_claims_md():
    claims = article_claims()
    assert "LR1" in claims and "OT5" in claims
    assert all(text.strip() for text in claims.values())


def test_in_chinese_a_chapter_quotes_the_articles_own_sentence(tmp_path):
    """CLAIMS.zh.md quotes the article (the seed text) for every claim CLAIMS.md has; a chapter run in Chinese
    records that sentence in results.json, the lab's own claim in Chinese too."""
    english, chinese = article_claims(), article_claims("zh")
    assert chinese.keys() == english.keys()
    assert all(re.search(r"[\u4e00-\u9fff]", text) for text in chinese.values()), chinese
    set_language("zh")
    try:
        results = read_results(Chapter("ch", claims=[LAB_CLAIM, "LR2"], output_dir=tmp_path))
    finally:
        set_language("en")
    assert results["article"]["LR2"] == chinese["LR2"] and results["article"]["LR2"].startswith("对于大模型微调")
    assert results["article"]["LAB"] != "A fact about the lab, not a claim of the article"


def test_the_summary_table_says_the_articles_relation_in_the_readers_language(tmp_path):
    ch = Chapter("ch", claims=["LR1", "LR2"], output_dir=tmp_path)
    ch.check("LR1", "a", holds=True, deterministic=True)
    ch.check("LR2", "b", holds=True, deterministic=True, article="differs at this scale")
    assert list(ch.summary()["article"]) == ["agrees", "differs at this scale"]
    set_language("zh")
    try:
        shown = list(ch.summary()["article"])
    finally:
        set_language("en")
    assert all(re.search(r"[\u4e00-\u9fff]", text) for text in shown) and shown[0] != shown[1], shown
    assert [c["article"] for c in read_results(ch)["checks"]] == ["agrees", "differs at this scale"]  # the data


def test_unknown_claim_id_is_refused_and_named(tmp_path):
    with pytest.raises(ValueError, match="XX9"):
        Chapter("ch", claims=["LR1", "XX9"], output_dir=tmp_path)


def test_lab_claim_is_accepted_with_its_own_text(tmp_path):
    ch = Chapter("ch", claims=[LAB_CLAIM, "LR1"], output_dir=tmp_path)
    results = read_results(ch)
    assert results["declared"] == ["LAB", "LR1"]
    assert results["article"]["LAB"] == "A fact about the lab, not a claim of the article"
    assert results["article"]["LR1"] == article_claims()["LR1"]


def test_results_json_is_written_at_once_and_rewritten_after_each_check(tmp_path):
    ch = Chapter("ch", claims=["LR1"], output_dir=tmp_path, parameters={"learning_rate": 1e-3})
    assert ch.results_path == tmp_path / "ch" / "results.json"
    first = read_results(ch)
    assert first["chapter"] == "ch" and first["checks"] == [] and first["verdicts"] == {"LR1": None}
    assert first["parameters"] == {"learning_rate": 1e-3}

    ch.check("LR1", "the big LR diverges", holds=True, numbers={"lr": 0.1}, runs=["a/run"], deterministic=True)
    second = read_results(ch)
    assert [c["says"] for c in second["checks"]] == ["the big LR diverges"]
    assert second["checks"][0]["numbers"] == {"lr": 0.1}
    assert second["checks"][0]["runs"] == ["a/run"]
    assert second["checks"][0]["article"] == "agrees"

    ch.check("LR1", "the small LR is slow", holds=[False, True, True], seeds=ch.seeds)
    third = read_results(ch)
    assert [c["holds"] for c in third["checks"]] == [True, False]
    assert third["verdicts"] == {"LR1": False}


def test_check_on_an_undeclared_claim_is_refused(tmp_path):
    ch = Chapter("ch", claims=["LR1"], output_dir=tmp_path)
    with pytest.raises(ValueError, match="LR2"):
        ch.check("LR2", "something", holds=True, deterministic=True)
    with pytest.raises(ValueError, match="article"):
        ch.check("LR1", "something", holds=True, article="sort of", deterministic=True)
    assert read_results(ch)["checks"] == []


def test_nan_and_inf_numbers_become_null(tmp_path):
    ch = Chapter("ch", claims=["LR1"], output_dir=tmp_path)
    ch.check("LR1", "diverges", holds=True, deterministic=True,
             numbers={"loss": math.nan, "top": math.inf, "losses": [1.0, math.nan], "ok": 2.5})
    text = ch.results_path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    numbers = json.loads(text)["checks"][0]["numbers"]
    assert numbers == {"loss": None, "top": None, "losses": [1.0, None], "ok": 2.5}


def test_check_prints_its_verdict_and_records_it(tmp_path, capsys):
    ch = Chapter("ch", claims=["LR1"], output_dir=tmp_path)
    assert ch.check("LR1", "the big LR diverges", holds=[False] * 3, numbers={"lr": 0.1},
                    seeds=ch.seeds) is None  # nothing echoed in a cell
    assert ch.checks[-1]["holds"] is False and ch.verdicts() == {"LR1": False}
    out = capsys.readouterr().out
    assert "[LR1] DOES NOT HOLD on any of 3 seeds: the big LR diverges" in out and "lr=0.1" in out
    assert ch.checks[-1]["seeds"] == [42, 43, 44] and ch.checks[-1]["held_on"] == 0


def test_a_check_must_say_what_it_was_computed_on(tmp_path):
    ch = Chapter("ch", claims=["LR1"], output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"\[LR1\] 'x falls': say what it was computed on: seeds=ch.seeds .* "
                                         r"or deterministic=True"):
        ch.check("LR1", "x falls", holds=True)
    assert read_results(ch)["checks"] == []


def test_figure_writes_a_png_and_lists_it_once(tmp_path):
    ch = Chapter("ch", claims=["LR1"], output_dir=tmp_path)
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    assert ch.figure("curves", fig) is None  # shown by figure() itself: a cell ending with it shows it once
    ch.figure("curves", fig)  # drawn again: still listed once
    png = tmp_path / "ch" / "figures" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_results(ch)["figures"] == ["figures/curves.png"]


def test_verdicts_none_true_false_per_claim(tmp_path):
    ch = Chapter("ch", claims=["LR1", "LR2", "LAB"], output_dir=tmp_path)
    assert ch.verdicts() == {"LR1": None, "LR2": None, "LAB": None}
    ch.check("LR1", "a", holds=True, deterministic=True)
    ch.check("LR2", "b", holds=True, deterministic=True)
    ch.check("LR2", "c", holds=False, deterministic=True)
    assert ch.verdicts() == {"LR1": True, "LR2": False, "LAB": None}
    assert read_results(ch)["verdicts"] == {"LR1": True, "LR2": False, "LAB": None}
    summary = ch.summary()
    assert list(summary.columns) == ["claim", "holds", "held_on", "article", "says"]
    assert list(summary["says"]) == ["a", "b", "c"]


def test_seed_set_follows_the_seed_parameter(tmp_path):
    ch = Chapter("ch", claims=["LR1"], output_dir=tmp_path, parameters={"seed": 7})
    assert ch.seeds == seed_set(7) and ch.seeds[0] == 7 and len(set(ch.seeds)) == len(ch.seeds) >= 3
    assert read_results(ch)["seeds"] == ch.seeds


def test_a_seeded_check_holds_only_on_every_seed_and_counts_them(tmp_path, capsys):
    ch = Chapter("ch", claims=["LR1", "LR2"], output_dir=tmp_path, parameters={"seed": 5})
    ch.check("LR1", "all", holds=[True] * len(ch.seeds), seeds=ch.seeds)
    ch.check("LR2", "some", holds=[True] + [False] * (len(ch.seeds) - 1), seeds=ch.seeds)
    first, second = read_results(ch)["checks"]
    assert first["holds"] is True and first["held_on"] == len(ch.seeds) and first["seeds"] == ch.seeds
    assert second["holds"] is False and second["held_on"] == 1
    assert "WITHIN SEED NOISE: holds on 1/" in capsys.readouterr().out
    assert ch.verdicts() == {"LR1": True, "LR2": False}


def test_a_deterministic_check_says_so_and_bad_seed_arguments_are_refused(tmp_path):
    ch = Chapter("ch", claims=["PE1"], output_dir=tmp_path)
    ch.check("PE1", "LoRA trains fewer weights", holds=True, deterministic=True)
    assert read_results(ch)["checks"][0]["deterministic"] is True and "seeds" not in read_results(ch)["checks"][0]
    with pytest.raises(ValueError, match="not both"):
        ch.check("PE1", "x", holds=[True], seeds=[1], deterministic=True)
    with pytest.raises(ValueError, match="one bool per seed"):
        ch.check("PE1", "x", holds=[True], seeds=[1, 2, 3])
    with pytest.raises(ValueError, match="one bool"):
        ch.check("PE1", "x", holds=[True], deterministic=True)


def test_summary_line_is_chosen_by_the_verdict(tmp_path):
    ch = Chapter("ch", claims=["LR1", "LR2"], output_dir=tmp_path, parameters={"seed": 1})
    with pytest.raises(ValueError, match="conclude"):
        ch.summary_lines()
    ch.check("LR1", "a", holds=[True] * 3, seeds=ch.seeds)
    ch.check("LR2", "b falls", holds=[True, False, True], seeds=ch.seeds)
    ch.conclude("LR1", holds="TEXT-IF-HELD-1", otherwise="TEXT-IF-NOT-1")
    ch.conclude("LR2", holds="TEXT-IF-HELD-2", otherwise="TEXT-IF-NOT-2")
    lines = ch.summary_lines()
    assert "TEXT-IF-HELD-1" in lines["LR1"] and "TEXT-IF-NOT-1" not in lines["LR1"]
    assert "TEXT-IF-NOT-2" in lines["LR2"] and "TEXT-IF-HELD-2" not in lines["LR2"] and "b falls" in lines["LR2"]
    assert read_results(ch)["conclusions"]["LR2"]["otherwise"] == "TEXT-IF-NOT-2"


def test_per_seed_holds_for_a_seed_only_if_all_its_rows_hold():
    table = pd.DataFrame({"seed": [1, 1, 2, 2, 3]})
    assert per_seed(table, [True, True, True, False, True], [3, 2, 1, 4]) == [True, False, True, False]


def test_listed_formats_numbers_for_a_sentence():
    assert listed([0.2932, 0.34], ".2f") == "0.29, 0.34"
    assert listed([0.5, -0.25], "+.0%") == "+50%, -25%"
