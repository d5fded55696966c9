"""Run sizes: how big a run each (model, device) affords, so every chapter runs on the tiny model,
on SmolLM2-135M on a laptop CPU, or on a bigger model on a GPU by changing one parameter.

Two levels:
  RUN_SIZES                  one run: rows, sequence length, evaluation size (TrainConfig fields), via sized()
  notebooks/sizes/*.toml     one chapter: its own parameters (how many runs, how many steps, which LRs
                             around a real LLM's), via chapter_parameters(); a chapter's parameters cell
                             holds the tiny model's values, and its file says what another model runs
                             instead, and why

    p = chapter_parameters("01_learning_rate", globals())   # Chapter.from_notebook does this
    base = sized(TrainConfig(model=p.model, ...), p.device)
"""
from __future__ import annotations

import ast
import json
import tomllib
from pathlib import Path
from types import SimpleNamespace

from nbkit.core.config import coerce_value
from nbkit.core.i18n import SOURCE_LANGUAGE, _

# Rows, sequence length and evaluation size per (model, device). Why these numbers:
#   tiny, cpu           TrainConfig's defaults: a whole run takes seconds
#   smollm2-135m, cpu   LoRA trains about 140 tokens/s on two cores (bench/llm_finetune.py), so an
#                       epoch of 192 rows of ~45 tokens takes about a minute: 240 rows keep runs short
#   any model, cuda     the task at full size, longer rows, bf16 (every recent GPU has it)
RUN_SIZES = {
    ("tiny", "cpu"): dict(max_samples=None, eval_generate_samples=200, max_seq_length=64),
    ("smollm2-135m", "cpu"): dict(max_samples=240, eval_generate_samples=48, max_seq_length=64, max_new_tokens=8),
    ("*", "cuda"): dict(max_samples=None, eval_generate_samples=200, max_seq_length=128, bf16=True),
}


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(_("device={device!r} is not allowed; allowed: 'auto', 'cpu', 'cuda'").format(device=device))
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_size(model: str, device: str) -> dict:
    """TrainConfig overrides that size a run for this model on this device (RUN_SIZES)."""
    device = resolve_device(device)
    for key in ((model, device), ("*", device)):
        if key in RUN_SIZES:
            return dict(RUN_SIZES[key])
    # an HF model on a CPU: as SmolLM2 (anything bigger will be slow on a CPU anyway)
    return dict(RUN_SIZES[("smollm2-135m", "cpu")])


def sized(cfg, device: str = "auto"):
    """cfg with its model's run size on this device, for the fields cfg leaves at TrainConfig's
    defaults: what a chapter sets on purpose wins. For the tiny model on a CPU it changes nothing."""
    from nbkit.core.config import TrainConfig

    defaults = TrainConfig()
    size = {k: v for k, v in run_size(cfg.model, device).items() if getattr(cfg, k) == getattr(defaults, k)}
    return cfg.replace(**size) if size else cfg


# ---------------------------------------------------------------- chapter sizes

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"


def edition(path: Path, language: str) -> Path:
    """A notebook of notebooks/ in `language`: itself in English (the source), its copy in notebooks/<language>/
    otherwise (the Chinese edition, notebooks/zh/, which `python -m nbkit translate` writes)."""
    return path if language == SOURCE_LANGUAGE else NOTEBOOKS_DIR / language / Path(path).name
SIZES_DIR = NOTEBOOKS_DIR / "sizes"  # <chapter>.toml: what a chapter runs on other models, with the reasons


TYPES = {"bool": bool, "int": int, "float": float, "str": str, "list": list}  # what a parameters cell declares


def chapter_names() -> list[str]:
    """The chapters, as their notebooks are named: 00_quickstart, 01_learning_rate, ..."""
    return sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def _parameters_cell(chapter: str) -> list[ast.AnnAssign]:
    """The annotated assignments of the parameters cell of notebooks/<chapter>.ipynb."""
    path = NOTEBOOKS_DIR / f"{chapter}.ipynb"
    if not path.exists():
        raise ValueError(_("chapter={chapter!r}: no notebook {file}; allowed: {chapters}").format(
            chapter=chapter, file=path.name, chapters=", ".join(chapter_names())))
    cells = json.loads(path.read_text())["cells"]
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise ValueError(_("{file} has no cell tagged 'parameters' (papermill's parameters cell)")
                         .format(file=path.name))
    return [node for node in ast.parse("".join(cell["source"])).body if isinstance(node, ast.AnnAssign)]


def notebook_defaults(chapter: str) -> dict:
    """{name: default} of the parameters cell of notebooks/<chapter>.ipynb, in the cell's order: the
    tiny model's values, and the list of the chapter's parameters."""
    return {node.target.id: ast.literal_eval(node.value) for node in _parameters_cell(chapter)}


def notebook_types(chapter: str) -> dict:
    """{name: type} as the parameters cell declares them (`learning_rate: float = 1e-3` -> float)."""
    types = {}
    for node in _parameters_cell(chapter):
        name = node.annotation.id if isinstance(node.annotation, ast.Name) else ast.unparse(node.annotation)
        if name not in TYPES:
            raise ValueError(_("{chapter}.ipynb: parameter {name} is declared {type!r}; allowed: {types}").format(
                chapter=chapter, name=node.target.id, type=name, types=", ".join(TYPES)))
        types[node.target.id] = TYPES[name]
    return types


def set_by_learner(values: dict, defaults: dict) -> set:
    """The parameters the learner set: those a plain assignment in an executed cell set (papermill's
    injected `-p` cell, or a cell the learner ran; IPython's input history `In` in `values`), and those
    whose value differs from the cell's default (the parameters cell edited in JupyterLab). A value
    equal to the default counts when it was set: `-p learning_rate 1e-3` keeps 1e-3 on any model."""
    assigned = set()
    for source in values.get("In", []):
        try:
            body = ast.parse(source).body
        except SyntaxError:
            continue
        for node in body:
            if isinstance(node, ast.Assign):
                assigned |= {t.id for t in node.targets if isinstance(t, ast.Name) and t.id in defaults}
    return assigned | {name for name in defaults if name in values and values[name] != defaults[name]}


def chapter_sizes(chapter: str) -> dict[tuple[str, str], dict]:
    """notebooks/sizes/<chapter>.toml as {(model, device): {parameter: value}}; {} without a file (the
    chapter runs the same sizes on every model). Each value must name a parameter of the chapter's
    parameters cell and have its default's type."""
    path = SIZES_DIR / f"{chapter}.toml"
    if not path.exists():
        return {}
    defaults = notebook_defaults(chapter)
    sizes = {}
    for model, devices in tomllib.loads(path.read_text()).items():
        for device, size in devices.items():
            for name, value in size.items():
                if name not in defaults:
                    raise ValueError(_("{path}: [{model!r}.{device}] {name}={value!r}: {name!r} is not a parameter of "
                                       "{chapter}.ipynb; allowed: {names}").format(
                        path=path, model=model, device=device, name=name, value=value, chapter=chapter,
                        names=", ".join(defaults)))
                if type(value) is not type(defaults[name]):
                    raise ValueError(_("{path}: [{model!r}.{device}] {name}={value!r}: must be of type {type}, as the "
                                       "notebook's {default!r}").format(
                        path=path, model=model, device=device, name=name, value=value,
                        type=type(defaults[name]).__name__, default=defaults[name]))
            sizes[(model, device)] = dict(size)
    return sizes


def chapter_size(chapter: str, model: str, device: str) -> dict:
    """The parameters this chapter changes on this model and device ({}: none): the table for this model
    and device, or for this model on any device; another model than the tiny one falls back on the
    tables for any model on this device, then on SmolLM2's."""
    device = resolve_device(device)
    sizes = chapter_sizes(chapter)
    keys = [(model, device), (model, "*")]
    if model != "tiny":  # the tiny model runs the cell's own values unless a table names it
        keys += [("*", device), ("smollm2-135m", device), ("smollm2-135m", "*")]  # any other model: as SmolLM2
    for key in keys:
        if key in sizes:
            return dict(sizes[key])
    return {}


def chapter_parameters(chapter: str, values: dict) -> SimpleNamespace:
    """The parameters cell of notebooks/<chapter>.ipynb as a namespace (p.learning_rate, ...): each
    value from `values` (the notebook's globals(), where papermill's -p values have landed), converted
    to the type the cell declares ("false" -> False, "[1e-3, 3e-3]" -> a list: papermill passes some
    values as strings), and, for a parameter the learner did not set, this model's size on this
    device (chapter_size). A value the learner set wins, as in sized()."""
    defaults, types = notebook_defaults(chapter), notebook_types(chapter)
    missing = [name for name in defaults if name not in values]
    if missing:
        raise ValueError(_("chapter_parameters({chapter!r}): no value for {missing}; run the parameters cell first")
                         .format(chapter=chapter, missing=missing))
    chosen = {name: coerce_value(name, values[name], types[name]) for name in defaults}
    learner = set_by_learner(dict(values, **chosen), defaults)
    size = chapter_size(chapter, chosen.get("model", "tiny"), chosen.get("device", "auto"))
    return SimpleNamespace(**{k: size[k] if k in size and k not in learner else v for k, v in chosen.items()})
