"""nbkit.chapter.Chapter: what a chapter records in results.json (no training here: fast)."""
import json
import math

import pytest
from matplotlib.figure import Figure

from nbkit.chapter import LAB_CLAIM, Chapter, article_claims


def read_results(ch):
    return json.loads(ch.results_path.read_text())


def test_claims_table_is_read_from_claims_md():
    claims = article_claims()
    assert "LR1" in claims and "OT5" in claims
    assert all(text.strip() for text in claims.values())


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

    ch.check("LR1", "the big LR diverges", holds=True, numbers={"lr": 0.1}, runs=["a/run"])
    second = read_results(ch)
    assert [c["says"] for c in second["checks"]] == ["the big LR diverges"]
    assert second["checks"][0]["numbers"] == {"lr": 0.1}
    assert second["checks"][0]["runs"] == ["a/run"]
    assert second["checks"][0]["article"] == "agrees"

    ch.check("LR1", "the small LR is slow", holds=False)
    third = read_results(ch)
    assert [c["holds"] for c in third["checks"]] == [True, False]
    assert third["verdicts"] == {"LR1": False}


def test_check_on_an_undeclared_claim_is_refused(tmp_path):
    ch = Chapter("ch", claims=["LR1"], output_dir=tmp_path)
    with pytest.raises(ValueError, match="LR2"):
        ch.check("LR2", "something", holds=True)
    with pytest.raises(ValueError, match="article"):
        ch.check("LR1", "something", holds=True, article="sort of")
    assert read_results(ch)["checks"] == []


def test_nan_and_inf_numbers_become_null(tmp_path):
    ch = Chapter("ch", claims=["LR1"], output_dir=tmp_path)
    ch.check("LR1", "diverges", holds=True,
             numbers={"loss": math.nan, "top": math.inf, "losses": [1.0, math.nan], "ok": 2.5})
    text = ch.results_path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    numbers = json.loads(text)["checks"][0]["numbers"]
    assert numbers == {"loss": None, "top": None, "losses": [1.0, None], "ok": 2.5}


def test_check_prints_its_verdict_and_records_it(tmp_path, capsys):
    ch = Chapter("ch", claims=["LR1"], output_dir=tmp_path)
    assert ch.check("LR1", "the big LR diverges", holds=1 > 2, numbers={"lr": 0.1}) is None  # nothing echoed in a cell
    assert ch.checks[-1]["holds"] is False and ch.verdicts() == {"LR1": False}
    out = capsys.readouterr().out
    assert "[LR1] DOES NOT HOLD: the big LR diverges" in out and "lr=0.1" in out


def test_figure_writes_a_png_and_lists_it_once(tmp_path):
    ch = Chapter("ch", claims=["LR1"], output_dir=tmp_path)
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    assert ch.figure("curves", fig) is fig
    ch.figure("curves", fig)  # drawn again: still listed once
    png = tmp_path / "ch" / "figures" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_results(ch)["figures"] == ["figures/curves.png"]


def test_verdicts_none_true_false_per_claim(tmp_path):
    ch = Chapter("ch", claims=["LR1", "LR2", "LAB"], output_dir=tmp_path)
    assert ch.verdicts() == {"LR1": None, "LR2": None, "LAB": None}
    ch.check("LR1", "a", holds=True)
    ch.check("LR2", "b", holds=True)
    ch.check("LR2", "c", holds=False)
    assert ch.verdicts() == {"LR1": True, "LR2": False, "LAB": None}
    assert read_results(ch)["verdicts"] == {"LR1": True, "LR2": False, "LAB": None}
    summary = ch.summary()
    assert list(summary.columns) == ["claim", "holds", "article", "says"]
    assert list(summary["says"]) == ["a", "b", "c"]
