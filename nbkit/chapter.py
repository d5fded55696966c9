"""A chapter's record: each article claim it tests, the verdict computed from the runs it just
made, the numbers behind the verdict, and the figures it drew.

    ch = Chapter("01_learning_rate", claims=["LR1", "LR2"], output_dir=output_dir)
    df = sweep(TrainConfig(output_dir=ch.runs_dir, ...), {"learning_rate": [...]})
    ch.figure("lr_sweep", plots.sweep_plot(df, "learning_rate"))
    ch.check("LR1", "the largest LR diverges", holds=..., numbers={...}, runs=df)

Everything lands in `<output_dir>/<chapter>/`: the runs, `figures/*.png` and `results.json`
(rewritten after every check, atomically, so a chapter stopped half-way still leaves a
readable record). A check states what the chapter's text told the learner to look for;
`holds` is that statement evaluated on the runs. Where the article's rule does not hold at the
tiny model's scale, the chapter says so and the check asserts what the learner really sees,
with `article="differs at this scale"`. Tests run every chapter and read results.json.
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pandas as pd

from nbkit.runs import Run, write_json_atomic

CLAIMS_FILE = Path(__file__).resolve().parent.parent / "notebooks" / "CLAIMS.md"
ARTICLE_RELATIONS = ("agrees", "differs at this scale")
# Facts about the lab itself (fine-tuning raises accuracy, the curves fall, ...), not claims of
# the article: chapters such as 00_quickstart check them like the article's claims.
LAB_CLAIM = "LAB"
LAB_CLAIM_TEXT = "A fact about the lab, not a claim of the article"


def article_claims(path: Path = CLAIMS_FILE) -> dict[str, str]:
    """{claim id: the article's claim} from the table in notebooks/CLAIMS.md."""
    rows = re.findall(r"^\| ([A-Z]{2}\d+) \| [^|]+ \| (.+?) \|$", path.read_text(), flags=re.M)
    return dict(rows)


def _run_paths(runs) -> list[str]:
    """Folders of a Run, a list of Runs, a sweep DataFrame (its `path` column) or paths."""
    if runs is None:
        return []
    if isinstance(runs, pd.DataFrame):
        return [str(p) for p in runs["path"]]
    if isinstance(runs, (Run, str, Path)):
        runs = [runs]
    return [str(r.path if isinstance(r, Run) else r) for r in runs]


def _clean(value):
    """JSON-safe numbers: NaN and inf become None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Chapter:
    """Collects one chapter's checks and figures and writes them to results.json."""

    def __init__(self, name: str, claims: list[str], output_dir: str | Path = "runs",
                 parameters: dict | None = None):
        known = {**article_claims(), LAB_CLAIM: LAB_CLAIM_TEXT}
        unknown = [c for c in claims if c not in known]
        if unknown:
            raise ValueError(f"claims: {unknown} are not ids of notebooks/CLAIMS.md (or {LAB_CLAIM!r} "
                             f"for facts about the lab); allowed: {', '.join(known)}")
        self.name = name
        self.claims = list(claims)
        self.article = {c: known[c] for c in claims}
        self.runs_dir = Path(output_dir) / name  # the chapter's runs, figures and results.json
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.parameters = dict(parameters or {})
        self.checks: list[dict] = []
        self.figures: list[str] = []
        self.started = time.time()
        self.save()

    @property
    def results_path(self) -> Path:
        return self.runs_dir / "results.json"

    def figure(self, name: str, fig):
        """Save `fig` as figures/<name>.png and return it, so a cell shows it."""
        folder = self.runs_dir / "figures"
        folder.mkdir(exist_ok=True)
        fig.savefig(folder / f"{name}.png", dpi=80)
        rel = f"figures/{name}.png"
        if rel not in self.figures:
            self.figures.append(rel)
        self.save()
        return fig

    def check(self, claim: str, says: str, holds, numbers: dict | None = None, runs=None,
              article: str = "agrees") -> None:
        """Record (and print) one verdict: `says` is the chapter's statement, `holds` whether the
        runs just made bear it out. `article` says whether the statement agrees with the
        article's claim or shows where it does not hold at this scale. Returns nothing, so a
        check cell shows only the printed verdict (read them with verdicts() or summary())."""
        if claim not in self.claims:
            raise ValueError(f"claim: {claim!r} is not declared by this chapter; declared: {self.claims}")
        if article not in ARTICLE_RELATIONS:
            raise ValueError(f"article: {article!r} is not allowed; allowed: {ARTICLE_RELATIONS}")
        holds = bool(holds)
        numbers = _clean(dict(numbers or {}))
        self.checks.append({"claim": claim, "says": says, "holds": holds, "article": article,
                            "numbers": numbers, "runs": _run_paths(runs)})
        self.save()
        shown = ", ".join(f"{k}={_short(v)}" for k, v in numbers.items())
        mark = "HOLDS" if holds else "DOES NOT HOLD"
        print(f"[{claim}] {mark}: {says}" + (f"\n      {shown}" if shown else ""))

    def verdicts(self) -> dict[str, bool | None]:
        """Per declared claim: True if every check of it holds, None if it has no check yet."""
        out = {}
        for claim in self.claims:
            mine = [c["holds"] for c in self.checks if c["claim"] == claim]
            out[claim] = all(mine) if mine else None
        return out

    def summary(self) -> pd.DataFrame:
        """A row per check: claim, verdict, what was checked, relation to the article."""
        return pd.DataFrame([{"claim": c["claim"], "holds": c["holds"], "article": c["article"],
                              "says": c["says"]} for c in self.checks],
                            columns=["claim", "holds", "article", "says"])

    def save(self) -> Path:
        write_json_atomic(self.results_path, {
            "chapter": self.name, "declared": self.claims, "article": self.article,
            "verdicts": self.verdicts(), "checks": self.checks, "figures": self.figures,
            "parameters": _clean(self.parameters), "seconds": round(time.time() - self.started, 1)})
        return self.results_path


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 6:
        return "[" + ", ".join(_short(v) for v in value[:6]) + ", ...]"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)
