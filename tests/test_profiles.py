"""Run sizes per model and device (nbkit.interfaces.profiles): what `-p model smollm2-135m` changes in a chapter."""
import ast
from pathlib import Path

import nbformat
import pytest

from nbkit import TrainConfig
from nbkit.interfaces import profiles
from nbkit.interfaces.profiles import RUN_SIZES, chapter_parameters, chapter_size, resolve_device, run_size, sized

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

CHAPTERS = sorted(NOTEBOOKS.glob("0*.ipynb"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_sizes_that_name_its_parameters_with_their_types(path):
    """notebooks/sizes/<chapter>.toml exists, says what SmolLM2 on a CPU runs, and (chapter_sizes checks
    it, raising otherwise) names only parameters of the chapter's parameters cell, each with its type."""
    sizes = profiles.chapter_sizes(path.stem)
    assert any(model == "smollm2-135m" for model, _ in sizes), \
        f"{path.stem}: no SmolLM2 table in sizes/{path.stem}.toml"
    defaults = profiles.notebook_defaults(path.stem)
    assert all(set(size) <= set(defaults) for size in sizes.values())


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_sets_up_in_one_call_and_reads_its_parameters_from_p(path):
    """The set-up is Chapter.from_notebook(..., globals()); after it, no code cell reads a parameter by
    its bare name (it would miss the model's size): each reads p.<name>."""
    nb = nbformat.read(path, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    after = "\n".join(c.source for c in nb.cells[at + 1:] if c.cell_type == "code")
    assert f'Chapter.from_notebook("{path.stem}"' in after and "globals())" in after
    names = set(profiles.notebook_defaults(path.stem))
    code = ast.parse("\n".join("#" + line if line.startswith("%") else line for line in after.splitlines()))
    bare = {n.id for n in ast.walk(code) if isinstance(n, ast.Name) and n.id in names}
    assert not bare, f"read as p.<name>: {sorted(bare)}"


def fake_chapter(tmp_path, monkeypatch, cell: str, sizes: str | None):
    """A notebook 99_test.ipynb with this parameters cell, and these sizes, in tmp_path."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(cell, metadata={"tags": ["parameters"]})]
    nbformat.write(nb, tmp_path / "99_test.ipynb")
    (tmp_path / "sizes").mkdir()
    if sizes is not None:
        (tmp_path / "sizes" / "99_test.toml").write_text(sizes)
    monkeypatch.setattr(profiles, "NOTEBOOKS_DIR", tmp_path)
    monkeypatch.setattr(profiles, "SIZES_DIR", tmp_path / "sizes")


CELL = ('model: str = "tiny"  # the model\ndevice: str = "auto"\nrows: int = 600\nlrs: list = [1e-3, 1e-2]\n'
        'seed: int = 42\n')
SIZES = '["smollm2-135m".cpu]\nrows = 160  # why\nlrs = [1e-5, 1e-4]\n\n["*".cuda]\nlrs = [1e-6]\n'


def test_chapter_parameters_swaps_in_the_size_only_where_the_default_was_left(tmp_path, monkeypatch):
    fake_chapter(tmp_path, monkeypatch, CELL, SIZES)
    values = dict(model="tiny", device="cpu", rows=600, lrs=[1e-3, 1e-2], seed=42, other="not a parameter")
    assert vars(chapter_parameters("99_test", values)) == dict(model="tiny", device="cpu", rows=600, lrs=[1e-3, 1e-2],
                                                               seed=42)
    smol = chapter_parameters("99_test", dict(values, model="smollm2-135m", seed=1))
    assert (smol.rows, smol.lrs, smol.seed) == (160, [1e-5, 1e-4], 1)
    # a value the learner set wins; any hub model on a CPU runs SmolLM2's size; on a GPU the "*" table
    qwen = chapter_parameters("99_test", dict(values, model="Qwen/Qwen2.5-0.5B-Instruct", rows=50))
    assert (qwen.rows, qwen.lrs) == (50, [1e-5, 1e-4])
    assert chapter_size("99_test", "smollm2-135m", "cuda") == {"lrs": [1e-6]}
    assert chapter_size("99_test", "tiny", "cuda") == {}  # the tiny model keeps the cell's values


def test_a_chapter_without_sizes_runs_its_cell_on_every_model(tmp_path, monkeypatch):
    fake_chapter(tmp_path, monkeypatch, CELL, None)
    p = chapter_parameters("99_test", dict(model="smollm2-135m", device="cpu", rows=600, lrs=[1e-3], seed=3))
    assert (p.rows, p.lrs) == (600, [1e-3])


@pytest.mark.parametrize("sizes, message", [
    ('["smollm2-135m".cpu]\nrowz = 160\n', r"'rowz' is not a parameter of 99_test.ipynb; allowed: model, device, rows"),
    ('["smollm2-135m".cpu]\nrows = 1.5\n', r"rows=1.5: must be of type int, as the notebook's 600"),
])
def test_a_bad_sizes_file_is_named_with_the_table_and_what_is_allowed(tmp_path, monkeypatch, sizes, message):
    fake_chapter(tmp_path, monkeypatch, CELL, sizes)
    with pytest.raises(ValueError, match=message):
        chapter_parameters("99_test", dict(model="smollm2-135m", device="cpu", rows=600, lrs=[1e-3], seed=3))


def test_a_type_the_cell_cannot_convert_by_is_named(tmp_path, monkeypatch):
    fake_chapter(tmp_path, monkeypatch, CELL + "rates: list[float] = [1e-3]  # typed too finely\n", SIZES)
    with pytest.raises(ValueError, match=r"parameter rates is declared 'list\[float\]'; allowed: bool, int"):
        chapter_parameters("99_test", dict(model="tiny", device="cpu", rows=600, lrs=[1e-3], seed=3, rates=[1e-3]))


def test_a_missing_value_or_notebook_is_named(tmp_path, monkeypatch):
    fake_chapter(tmp_path, monkeypatch, CELL, SIZES)
    with pytest.raises(ValueError, match=r"chapter_parameters\('99_test'\): no value for \['lrs', 'seed'\]"):
        chapter_parameters("99_test", dict(model="tiny", device="cpu", rows=600))
    with pytest.raises(ValueError, match=r"chapter='98_nope': no notebook 98_nope.ipynb; allowed: 99_test"):
        chapter_parameters("98_nope", {})


def test_parameters_are_converted_by_the_type_the_cell_declares(tmp_path, monkeypatch):
    """papermill passes `-p flag false` as the string "false" (truthy) and an untyped list as a string."""
    fake_chapter(tmp_path, monkeypatch, CELL + "flag: bool = True\nratio: float = 0.5\n", SIZES)
    values = dict(model="tiny", device="cpu", rows="12", lrs="[1e-4, 1e-3]", seed=1, flag="false", ratio=1)
    p = chapter_parameters("99_test", values)
    assert (p.rows, p.lrs, p.flag, p.ratio) == (12, [1e-4, 1e-3], False, 1.0)
    assert type(p.ratio) is float and p.flag is False
    for word, expected in [("yes", True), ("no", False), ("1", True), ("0", False), ("True", True)]:
        assert chapter_parameters("99_test", dict(values, flag=word)).flag is expected
    with pytest.raises(ValueError, match=r"flag='maybe' is invalid; allowed: true or false"):
        chapter_parameters("99_test", dict(values, flag="maybe"))
    with pytest.raises(ValueError, match=r"rows='many' is invalid; allowed: a whole number"):
        chapter_parameters("99_test", dict(values, rows="many"))


def test_a_value_set_with_p_wins_even_when_it_equals_the_default(tmp_path, monkeypatch):
    """What papermill injected (a plain assignment in an executed cell, IPython's `In`) is the learner's
    choice: `-p rows 600` on SmolLM2 keeps 600, though 600 is also the cell's (tiny) default."""
    fake_chapter(tmp_path, monkeypatch, CELL, SIZES)
    injected = "# Parameters\nmodel = \"smollm2-135m\"\nrows = 600\n"
    values = dict(model="smollm2-135m", device="cpu", rows=600, lrs=[1e-3, 1e-2], seed=42)
    assert chapter_parameters("99_test", dict(values, In=["import x", CELL, injected])).rows == 600
    assert chapter_parameters("99_test", dict(values, In=["import x", CELL])).rows == 160  # not set: sized
    assert chapter_parameters("99_test", values).lrs == [1e-5, 1e-4]
