"""A chapter's record: each article claim it tests, the verdict computed from the runs it just
made, the numbers behind the verdict, and the figures it drew.

    ch = Chapter.from_notebook("01_learning_rate", ["LR1", "LR2"], globals())   # the parameters cell, sized
    p = ch.p                                                             # p.learning_rate, p.seed, ...
    df = sweep(TrainConfig(output_dir=ch.runs_dir, ...), {"learning_rate": [...], "seed": ch.seeds})
    ch.figure("lr_sweep", plots.sweep_plot(df, "learning_rate"))      # saved AND shown, once
    ch.check("LR1", "the largest LR diverges", holds=[... one bool per seed ...], seeds=ch.seeds,
             numbers={...}, runs=df)
    ch.check("PE1", "LoRA trains 1.6% of the weights", holds=..., deterministic=True)
    ch.conclude("LR1", holds="too small is slow, too large diverges", otherwise="...")
    ch.summary_markdown()                                                # the Summary, from the verdicts

Seeds are part of a verdict. A check whose outcome depends on the initialisation or the data
order is computed on every seed of `ch.seeds` (the chapter's `seed` parameter, then the next
ones: a verdict is about the knob, not about seed 42) and holds only if it holds on each; it
records `seeds` and `held_on`. A fact no seed can change (a parameter count, the exactness of
gradient accumulation, a memory plan) says `deterministic=True` and is computed once.

Everything lands in `<output_dir>/<chapter>/`: the runs, `figures/*.png` and `results.json`
(rewritten after every check, atomically, so a chapter stopped half-way still leaves a
readable record). A check states what the chapter's text told the learner to look for;
`holds` is that statement evaluated on the runs. Where the article's rule does not hold at the
tiny model's scale, the chapter says so and the check asserts what the learner really sees,
with `article="differs at this scale"`. The Summary is not written by hand: each claim's two
texts (`conclude`) sit beside its checks, and the verdict picks the one shown. Tests run every
chapter and read results.json.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from IPython import get_ipython
from IPython.display import Image, Markdown, display

from nbkit.core.i18n import SOURCE_LANGUAGE, N_, _, get_language, set_language, use_catalogue
from nbkit.core.runs import Run, jsonable, write_json_atomic
from nbkit.interfaces.profiles import NOTEBOOKS_DIR, chapter_parameters

# the article's claims by id: in English, and in Chinese as the article's own sentence (the seed's text)
CLAIMS_FILES = {SOURCE_LANGUAGE: NOTEBOOKS_DIR / "CLAIMS.md", "zh": NOTEBOOKS_DIR / "CLAIMS.zh.md"}
CHAPTER_LOCALE_DIR = NOTEBOOKS_DIR / "locale"  # <locale>/LC_MESSAGES/<chapter>.po (nbkit.interfaces.translate)
# how a check relates to the article's claim: the value results.json keeps, and its text in the reader's language
ARTICLE_SHOWN = {"agrees": N_("agrees"), "differs at this scale": N_("differs at this scale")}
ARTICLE_RELATIONS = tuple(ARTICLE_SHOWN)
# Facts about the lab itself (fine-tuning raises accuracy, the curves fall, ...), not claims of
# the article: chapters such as 00_quickstart check them like the article's claims.
LAB_CLAIM = "LAB"
LAB_CLAIM_TEXT = N_("A fact about the lab, not a claim of the article")
SEED_SET_SIZE = 3  # the fewest seeds that tell a knob's effect from one lucky (or unlucky) seed


def seed_set(seed: int, size: int = SEED_SET_SIZE) -> list[int]:
    """The seeds a seed-dependent check runs on: `seed` first (what the learner set), then the
    next ones, so that nobody picks the others by hand."""
    return [int(seed) + i for i in range(size)]


def per_seed(table: pd.DataFrame, holds, seeds) -> list[bool]:
    """Verdicts per row of `table` (a seed column; `holds` a boolean Series or list aligned with its
    rows) as one bool per seed of `seeds`, in that order, as Chapter.check takes them: a seed holds
    if every one of its rows holds; a seed without a row does not."""
    ok = pd.Series(list(holds), index=table.index, dtype=bool).groupby(table["seed"]).all()
    return [bool(ok.get(s, False)) for s in seeds]


def listed(values, spec: str = ".3g") -> str:
    """Numbers for a chapter's sentence, one per seed say: listed([0.2932, 0.34], ".2f") -> "0.29, 0.34"."""
    return ", ".join(format(v, spec) for v in values)


def article_claims(language: str = SOURCE_LANGUAGE) -> dict[str, str]:
    """{claim id: the article's claim} from the table in notebooks/CLAIMS.md, or for "zh" the article's own
    sentence from notebooks/CLAIMS.zh.md."""
    text = CLAIMS_FILES[language].read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([A-Z]{2}\d+) \| [^|]+ \| (.+?) \|$", text, flags=re.M)
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


class Chapter:
    """Collects one chapter's checks and figures and writes them to results.json."""

    def __init__(self, name: str, claims: list[str], output_dir: str | Path = "runs",
                 parameters: dict | None = None, seeds: list[int] | None = None):
        known = {**article_claims(get_language()), LAB_CLAIM: _(LAB_CLAIM_TEXT)}  # quoted in the reader's language
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
        # seed-dependent checks run on these: the `seed` parameter and the next ones
        self.seeds = list(seeds) if seeds is not None else seed_set(self.parameters.get("seed", 42))
        self.checks: list[dict] = []
        self.figures: list[str] = []
        self.conclusions: dict[str, dict] = {}
        self.started = time.time()
        self.save()

    @classmethod
    def from_notebook(cls, name: str, claims: list[str], values: dict) -> "Chapter":
        """The chapter notebook's set-up in one call: its parameters cell read from `values` (pass
        globals(); papermill's -p values are in it) and sized for the model and device
        (nbkit.interfaces.profiles.chapter_parameters), recorded whole in results.json, and kept
        as `ch.p`: the rest of the notebook reads p.learning_rate, never a copy of it."""
        p = chapter_parameters(name, values)
        set_language(getattr(p, "language", SOURCE_LANGUAGE))  # the chapter's texts, and the package's, in it
        use_catalogue(CHAPTER_LOCALE_DIR, name)  # the strings of this chapter's code cells (nbkit.core.i18n)
        return cls(name, claims, output_dir=p.output_dir, parameters=vars(p))

    @property
    def p(self) -> SimpleNamespace:
        """The chapter's parameters as attributes (p.model, p.learning_rate, ...)."""
        return SimpleNamespace(**self.parameters)

    @property
    def results_path(self) -> Path:
        return self.runs_dir / "results.json"

    def figure(self, name: str, fig) -> None:
        """Save `fig` as figures/<name>.png and show that picture in the notebook, once, wherever
        the call stands in its cell. Returns nothing, so a cell ending with it does not show the
        figure a second time; a pyplot figure is closed, so the inline backend does not either."""
        folder = self.runs_dir / "figures"
        folder.mkdir(exist_ok=True)
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=80)
        rel = f"figures/{name}.png"
        if rel not in self.figures:
            self.figures.append(rel)
        self.save()
        _close_if_pyplot(fig)
        _show(Image(data=path.read_bytes(), format="png"), {"nbkit": {"figure": rel}})

    def check(self, claim: str, says: str, holds, numbers: dict | None = None, runs=None,
              article: str = "agrees", seeds: list[int] | None = None, deterministic: bool = False) -> None:
        """Record (and print) one verdict: `says` is the chapter's statement, `holds` whether the
        runs just made bear it out. `article` says whether the statement agrees with the
        article's claim or shows where it does not hold at this scale.

        Either `seeds` (usually `ch.seeds`) with `holds` a list of one bool per seed, in that
        order: the statement holds only if it holds on every seed, and `held_on` counts those
        it held on; or `deterministic=True` with one bool, for a fact no seed can change.
        Returns nothing, so a check cell shows only the printed verdict."""
        if claim not in self.claims:
            raise ValueError(f"claim: {claim!r} is not declared by this chapter; declared: {self.claims}")
        if article not in ARTICLE_RELATIONS:
            raise ValueError(f"article: {article!r} is not allowed; allowed: {ARTICLE_RELATIONS}")
        if seeds is not None and deterministic:
            raise ValueError(f"[{claim}] {says!r}: give seeds=[...] (the seeds it was computed on, one bool of "
                             "holds per seed) or deterministic=True (a fact no seed changes), not both")
        if seeds is None and not deterministic:
            raise ValueError(f"[{claim}] {says!r}: say what it was computed on: seeds=ch.seeds with one bool of holds "
                             "per seed, or deterministic=True for a fact no seed changes")
        entry = {"claim": claim, "says": says, "article": article}
        if deterministic:
            if isinstance(holds, (list, tuple)):
                raise ValueError(f"[{claim}] holds: a deterministic check has one bool, got {holds!r}")
            entry.update(holds=bool(holds), deterministic=True)
        else:
            seeds = [int(s) for s in seeds]
            per_seed = [bool(h) for h in holds] if isinstance(holds, (list, tuple)) else None
            if not seeds or per_seed is None or len(per_seed) != len(seeds):
                raise ValueError(f"[{claim}] holds: give one bool per seed of seeds={seeds}, got {holds!r}")
            entry.update(holds=all(per_seed), seeds=seeds, held_on=sum(per_seed), holds_per_seed=per_seed)
        entry.update(numbers=jsonable(dict(numbers or {}), nan_as_null=True), runs=_run_paths(runs))
        self.checks.append(entry)
        self.save()
        shown = ", ".join(f"{k}={_short(v)}" for k, v in entry["numbers"].items())
        print(f"[{claim}] {verdict_line(entry)}: {says}" + (f"\n      {shown}" if shown else ""))

    def conclude(self, claim: str, holds: str, otherwise: str) -> None:
        """The Summary's sentence for `claim`, for each outcome: `holds` is shown if every check
        of the claim held (on every seed), `otherwise` if not. Written beside the claim's checks,
        so the Summary never states what the runs did not show."""
        if claim not in self.claims:
            raise ValueError(f"claim: {claim!r} is not declared by this chapter; declared: {self.claims}")
        self.conclusions[claim] = {"holds": holds, "otherwise": otherwise}
        self.save()

    def summary_lines(self) -> dict[str, str]:
        """Per declared claim, the Summary's markdown line chosen by its verdict."""
        missing = [c for c in self.claims if c not in self.conclusions]
        if missing:
            raise ValueError(f"no conclude(...) for {missing}: each claim needs its two texts before the Summary")
        lines = {}
        for claim, verdict in self.verdicts().items():
            mine = [c for c in self.checks if c["claim"] == claim]
            if verdict:
                lines[claim] = _("**{claim}** holds ({seeds}): {conclusion}").format(
                    claim=claim, seeds=_seed_note(mine), conclusion=self.conclusions[claim]["holds"])
                continue
            failed = "; ".join(f"*{c['says']}* ({verdict_line(c).lower()})" for c in mine if not c["holds"])
            head = (_("**{claim}** was not checked: {conclusion}") if verdict is None
                    else _("**{claim}** does not hold in these runs: {conclusion}"))
            lines[claim] = (head.format(claim=claim, conclusion=self.conclusions[claim]["otherwise"])
                            + (_(" Not shown: {failed}.").format(failed=failed) if failed else ""))
        return lines

    def summary_markdown(self):
        """The Summary as markdown, shown in the notebook: a line per claim, chosen by its verdict."""
        lines = self.summary_lines()
        self.save()
        _show(Markdown("\n".join(f"* {line}" for line in lines.values())),
              {"nbkit": {"summary": {c: v for c, v in self.verdicts().items()}}})

    def verdicts(self) -> dict[str, bool | None]:
        """Per declared claim: True if every check of it holds, None if it has no check yet."""
        out = {}
        for claim in self.claims:
            mine = [c["holds"] for c in self.checks if c["claim"] == claim]
            out[claim] = all(mine) if mine else None
        return out

    def summary(self) -> pd.DataFrame:
        """A row per check: claim, verdict, what was checked, relation to the article (in the reader's language)."""
        return pd.DataFrame([{"claim": c["claim"], "holds": c["holds"], "held_on": _held_on(c),
                              "article": _(ARTICLE_SHOWN[c["article"]]), "says": c["says"]} for c in self.checks],
                            columns=["claim", "holds", "held_on", "article", "says"])

    def save(self) -> Path:
        write_json_atomic(self.results_path, {
            "chapter": self.name, "declared": self.claims, "article": self.article,
            "verdicts": self.verdicts(), "seeds": self.seeds, "checks": self.checks,
            "conclusions": self.conclusions, "figures": self.figures,
            "parameters": self.parameters, "seconds": round(time.time() - self.started, 1)}, nan_as_null=True)
        return self.results_path


def verdict_line(check: dict) -> str:
    """HOLDS / WITHIN SEED NOISE / DOES NOT HOLD, with the seeds it held on."""
    if check.get("deterministic"):
        return _("HOLDS (deterministic: one run)") if check["holds"] else _("DOES NOT HOLD (deterministic: one run)")
    held, n = check["held_on"], len(check["seeds"])
    if held == n:
        return _("HOLDS on {n}/{n} seeds").format(n=n)
    if held == 0:
        return _("DOES NOT HOLD on any of {n} seeds").format(n=n)
    return _("WITHIN SEED NOISE: holds on {held}/{n} seeds").format(held=held, n=n)


def _held_on(check: dict) -> str:
    return "deterministic" if check.get("deterministic") else f"{check['held_on']}/{len(check['seeds'])}"


def _seed_note(checks: list[dict]) -> str:
    seeds = sorted({s for c in checks for s in c.get("seeds", [])})
    if not seeds:
        return _("deterministic: one run")
    return _("on seeds {seeds}").format(seeds=", ".join(map(str, seeds)))


def _close_if_pyplot(fig) -> None:
    """A figure made with pyplot would be drawn again by the inline backend at the cell's end."""
    import matplotlib.pyplot as plt
    plt.close(fig)  # a figure pyplot does not manage (nbkit.views.plots makes those) is left as it is


def _show(obj, metadata: dict) -> None:
    """Display in the notebook (tagged, so tests can find it); nothing outside a kernel."""
    if get_ipython() is not None:
        display(obj, metadata=metadata)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 6:
        return "[" + ", ".join(_short(v) for v in value[:6]) + ", ...]"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)
