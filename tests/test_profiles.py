"""Run sizes per model and device (nbkit.profiles): what `-p model smollm2-135m` changes in a chapter."""
import ast
from pathlib import Path

import nbformat
import pytest

from nbkit import TrainConfig
from nbkit.profiles import (CHAPTER_SIZES, RUN_SIZES, chapter_parameters, chapter_size, resolve_device, run_size,
                            sized)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_sized_leaves_the_tiny_model_on_a_cpu_as_configured():
    cfg = TrainConfig(learning_rate=3e-3, max_samples=100)
    assert sized(cfg, "cpu") == cfg
    assert sized(TrainConfig(), "cpu") == TrainConfig()


def test_sized_applies_the_models_run_size_but_what_the_chapter_set_wins():
    size = RUN_SIZES[("smollm2-135m", "cpu")]
    cfg = sized(TrainConfig(model="smollm2-135m", learning_rate=1e-4), "cpu")
    assert all(getattr(cfg, k) == v for k, v in size.items())
    assert cfg.learning_rate == 1e-4  # not a size: untouched
    chosen = sized(TrainConfig(model="smollm2-135m", max_samples=60), "cpu")
    assert chosen.max_samples == 60 and chosen.eval_generate_samples == size["eval_generate_samples"]


def test_a_gpu_gets_bf16_and_any_hub_model_on_a_cpu_gets_the_small_size():
    assert run_size("Qwen/Qwen2.5-0.5B-Instruct", "cuda")["bf16"] is True
    assert run_size("Qwen/Qwen2.5-0.5B-Instruct", "cpu") == RUN_SIZES[("smollm2-135m", "cpu")]


def test_device_names_are_checked():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match=r"device='gpu' is not allowed; allowed: 'auto', 'cpu', 'cuda'"):
        run_size("tiny", "gpu")


# ---------------------------------------------------------------- chapter sizes

def notebook_defaults(path: Path) -> dict:
    """{parameter: default} of a notebook's parameters cell."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {n.target.id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body}


CHAPTERS = sorted(p for p in NOTEBOOKS.glob("0*.ipynb") if notebook_defaults(p).get("model") == "tiny")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_tiny_chapter_has_a_size_whose_parameters_are_the_notebooks(path):
    """CHAPTER_SIZES names only real parameters, repeats the notebook's defaults exactly, keeps each
    parameter's type, and the chapter passes every sized parameter through chapter_parameters."""
    assert path.stem in CHAPTER_SIZES, f"{path.stem}: no CHAPTER_SIZES entry (how it runs on SmolLM2)"
    sizes, defaults = CHAPTER_SIZES[path.stem], notebook_defaults(path)
    tiny = sizes[("tiny", "*")]
    assert {k: defaults.get(k) for k in tiny} == tiny, "the ('tiny', '*') row must repeat the notebook's defaults"
    assert ("smollm2-135m", "cpu") in sizes
    for key, size in sizes.items():
        assert set(size) <= set(tiny), f"{key}: {sorted(set(size) - set(tiny))} are not sized parameters"
        for name, value in size.items():
            assert type(value) is type(tiny[name]), f"{key} {name}={value!r}: not a {type(tiny[name]).__name__}"
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    call = code[code.index(f'chapter_parameters("{path.stem}"'):]
    call = call[:call.index(")")]
    assert all(f"{name}={name}" in call for name in tiny), f"pass every sized parameter: {sorted(tiny)}"


def test_chapter_parameters_swaps_in_the_size_only_where_the_default_was_left(monkeypatch):
    monkeypatch.setitem(CHAPTER_SIZES, "99_test", {("tiny", "*"): dict(rows=600, lrs=[1e-3, 1e-2]),
                                                  ("smollm2-135m", "cpu"): dict(rows=160, lrs=[1e-5, 1e-4])})
    assert chapter_parameters("99_test", "tiny", "cpu", rows=600, lrs=[1e-3, 1e-2]) == dict(rows=600, lrs=[1e-3, 1e-2])
    assert chapter_parameters("99_test", "smollm2-135m", "cpu", rows=600, lrs=[1e-3, 1e-2], seed=1) == \
        dict(rows=160, lrs=[1e-5, 1e-4], seed=1)
    # a value the learner set wins; any hub model on a CPU runs SmolLM2's size
    assert chapter_parameters("99_test", "Qwen/Qwen2.5-0.5B-Instruct", "cpu", rows=50, lrs=[1e-3, 1e-2]) == \
        dict(rows=50, lrs=[1e-5, 1e-4])
    assert chapter_size("99_test", "smollm2-135m", "cuda") == {}
    with pytest.raises(ValueError, match=r"needs the values of \['lrs'\]"):
        chapter_parameters("99_test", "smollm2-135m", "cpu", rows=600)
    with pytest.raises(ValueError, match=r"chapter='98_nope' has no entry in CHAPTER_SIZES"):
        chapter_size("98_nope", "smollm2-135m", "cpu")
