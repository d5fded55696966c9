"""Chapter 5's tools: methods, measured memory, LoRA update norm, quantisation error, adapters
saved and reloaded in a fresh process, the facts task, the panel's preview, and the evidence tables
of the chapter's checks (a row per seed)."""
import pytest
import torch
from conftest import tiny_config

from nbkit import train
from nbkit.core.data import FACT_PHRASINGS, NAMES, THINGS, load_examples, split_examples, task_metric
from nbkit.core.runs import as_runs
from nbkit.core.train import validation_loss
from nbkit.labs.ch05_peft import (METHODS, lora_update_norm, method_config, method_of, preview, quantization_error,
                                  reload_in_fresh_process, save_adapter, seconds_per_step, training_memory)
from nbkit.views.ui import panel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_method_config_sets_each_method_and_refuses_unknown_names(tmp_path):
    base = tiny_config(tmp_path, finetuning_type="lora", quantization_bit=4)
    assert method_config(base, "full").finetuning_type == "full"
    assert method_config(base, "full").quantization_bit is None  # QLoRA's bits do not leak into full
    assert method_config(base, "qlora-8bit").quantization_bit == 8
    for name in METHODS:
        assert method_of(method_config(base, name).to_dict()) == name
    with pytest.raises(ValueError, match="method: 'qlora'.*allowed: full"):
        method_config(base, "qlora")


def test_training_memory_counts_what_trains(tmp_path):
    full = training_memory(tiny_config(tmp_path))
    lora = training_memory(tiny_config(tmp_path, finetuning_type="lora"))
    nf4 = training_memory(tiny_config(tmp_path, finetuning_type="lora", quantization_bit=4))
    # fp32 AdamW: a gradient (4 bytes) and two moments (8 bytes) per trainable parameter
    assert full["gradient_bytes"] == 4 * full["trainable_params"]
    assert abs(full["optimizer_bytes"] - 8 * full["trainable_params"]) < 1000  # + Adam's step counters
    assert lora["trainable_params"] < 0.1 * full["trainable_params"]
    assert lora["gradient_bytes"] == 4 * lora["trainable_params"]
    assert nf4["weights_bytes"] < 0.5 * lora["weights_bytes"]
    assert nf4["total_bytes"] == nf4["weights_bytes"] + nf4["gradient_bytes"] + nf4["optimizer_bytes"]


def test_quantization_error_is_small_at_8_bits_larger_at_4(tmp_path):
    cfg = tiny_config(tmp_path)
    int8, nf4 = quantization_error(cfg, 8), quantization_error(cfg, 4)
    assert 0 < int8["relative_error"] < nf4["relative_error"] < 0.5
    assert nf4["model_bytes_quantised"] < int8["model_bytes_quantised"] < int8["model_bytes_fp32"]
    with pytest.raises(ValueError, match="bits: 2"):
        quantization_error(cfg, 2)


def test_lora_update_norm_is_zero_before_training_and_follows_alpha(tmp_path):
    cfg = tiny_config(tmp_path, finetuning_type="lora", max_steps=3, learning_rate=1e-2)
    from nbkit.core.models import load_model

    fresh, _ = load_model(cfg)
    assert lora_update_norm(fresh) == 0.0  # PEFT starts B at zero: the adapted model is the base
    run = train(cfg)
    norm = lora_update_norm(run.model)
    assert norm > 0
    for module in run.model.modules():  # doubling the scaling doubles the update
        if isinstance(getattr(module, "scaling", None), dict) and "default" in module.scaling:
            module.scaling["default"] *= 2
    assert lora_update_norm(run.model) == pytest.approx(2 * norm)
    with pytest.raises(ValueError, match="no LoRA layers"):
        lora_update_norm(torch.nn.Linear(2, 2))
    assert seconds_per_step(run) > 0


def test_saved_adapter_reloads_in_a_fresh_process_with_the_same_loss(tmp_path):
    run = train(tiny_config(tmp_path, finetuning_type="lora", max_steps=4, learning_rate=1e-2))
    folder = save_adapter(run)
    assert (folder / "adapter_config.json").exists() and (folder / "adapter_model.safetensors").exists()
    in_memory = validation_loss(run)
    reloaded = reload_in_fresh_process(run.path)
    assert reloaded["adapter"] == pytest.approx(in_memory, abs=1e-5)
    assert reloaded["merged"] == pytest.approx(in_memory, abs=1e-4)
    assert in_memory < run.summary["base_eval_loss"]  # the adapter changed the model: the test can fail


def test_facts_task_is_deterministic_and_validation_asks_facts_seen_in_training():
    examples = load_examples("facts", seed=0)
    assert examples == load_examples("facts", seed=0) and examples != load_examples("facts", seed=1)
    assert task_metric("facts") == "exact_match"
    assert len(examples) % len(FACT_PHRASINGS) == 0
    answers = [ex["messages"][1]["content"] for ex in examples]
    assert all(a.isdigit() and 10 <= int(a) <= 99 for a in answers)
    train_rows, val_rows = split_examples(examples, 0.2, seed=42)

    def fact(ex):  # the phrasings differ; the person and the thing name the fact
        words = set(ex["messages"][0]["content"].replace("?", "").replace(".", "").split())
        (name,), (thing,) = words & set(NAMES), words & set(THINGS)
        return name, thing, ex["messages"][1]["content"]
    # each fact: one answer in every phrasing
    assert len({fact(ex) for ex in examples}) == len(examples) // len(FACT_PHRASINGS)
    seen = {fact(ex) for ex in train_rows}
    assert sum(fact(ex) in seen for ex in val_rows) >= 0.9 * len(val_rows)


def test_panel_preview_shows_trainable_parameters_before_training(tmp_path):
    cfg = tiny_config(tmp_path, finetuning_type="lora")
    p = panel(cfg, ["lora_rank", "quantization_bit"], preview=preview)
    before = p.preview_html.value
    assert "parameters train" in before and "MB" in before
    p.controls["lora_rank"].value = 32
    assert p.preview_html.value != before  # redrawn on change
    assert "parameters train" not in panel(cfg, ["lora_rank"]).preview_html.value  # no preview asked


@pytest.fixture(scope="module")
def lr_seed_sweep(tmp_path_factory):
    """4 short LoRA runs: 2 LRs x 2 seeds, models kept (a sweep table as the chapter makes them)."""
    from nbkit.core.sweep import sweep

    cfg = tiny_config(tmp_path_factory.mktemp("sweep"), finetuning_type="lora", num_train_epochs=2)
    return sweep(cfg, {"learning_rate": [1e-4, 1e-2], "seed": [1, 2]}, keep_models=True, progress=False)


def test_seed_set_tables_pick_runs_by_their_folders_and_one_lr_per_method(lr_seed_sweep):
    from nbkit.labs.ch05_peft import by_seed, chosen_learning_rate, chosen_rows, compare_methods, run_of, runs_by_seed

    table = lr_seed_sweep
    wide = by_seed(table, "best_eval_loss", "learning_rate")
    assert list(wide.columns) == [1, 2] and list(wide.index) == [1e-4, 1e-2]
    assert chosen_learning_rate(table) == float(wide.mean(axis=1).idxmin())
    # a slice keeps the whole table's attrs["runs"]: runs are found by folder, not by position
    high = table[table["learning_rate"] == 1e-2]
    by_seed_runs = runs_by_seed(high)
    assert {s: r.config["learning_rate"] for s, r in by_seed_runs.items()} == {1: 1e-2, 2: 1e-2}
    assert run_of(table, learning_rate=1e-2, seed=2) is by_seed_runs[2]
    with pytest.raises(ValueError, match="2 rows"):
        run_of(table, learning_rate=1e-2)
    with pytest.raises(ValueError, match="several rows per seed"):
        runs_by_seed(table)
    rows = chosen_rows({"lora": table})
    assert set(rows["learning_rate"]) == {chosen_learning_rate(table)} and sorted(rows["seed"]) == [1, 2]
    assert (rows["seconds_per_step"] > 0).all()
    methods = compare_methods({"lora": table})
    assert methods.loc["lora", "best_eval_loss"] == pytest.approx(rows["best_eval_loss"].mean())
    assert methods.loc["lora", "memory_MB"] > methods.loc["lora", "weights_MB"] > 0
    assert methods.loc["lora", "seeds"] == 2 and "forgetting" not in methods  # add_forgetting was not called


def test_add_forgetting_measures_then_lets_the_weights_go(lr_seed_sweep):
    import copy

    from nbkit.core.evaluate import heldout_text_loss
    from nbkit.labs.ch05_peft import add_forgetting

    table = lr_seed_sweep.copy()
    table.attrs["runs"] = [copy.copy(r) for r in lr_seed_sweep.attrs["runs"]]  # the module's runs keep their models
    before = 1.0
    expected = [heldout_text_loss(r.model, r.tokenizer) - before for r in as_runs(table)]
    add_forgetting(table, before, keep_seed=2)
    assert table["forgetting"].tolist() == pytest.approx(expected)
    assert [r.model is None for r in as_runs(table)] == [s != 2 for s in table["seed"]]


def test_curve_distance_is_zero_for_a_run_and_itself_and_grows_with_the_lr(lr_seed_sweep):
    from nbkit.labs.ch05_peft import (add_lowest_train_loss, curve_distance, final_train_loss, first_eval_loss,
                                      lowest_train_loss, per_seed_table, run_of, shortfall)

    low, high = run_of(lr_seed_sweep, learning_rate=1e-4, seed=1), run_of(lr_seed_sweep, learning_rate=1e-2, seed=1)
    assert curve_distance(low, low) == 0.0
    assert curve_distance(low, high) > 0
    assert first_eval_loss(high) == pytest.approx(float(high.epochs.set_index("epoch").loc[1, "eval_loss"]))
    assert final_train_loss(high) == pytest.approx(float(high.epochs["train_loss"].iloc[-1]))
    assert lowest_train_loss(high) == pytest.approx(float(high.epochs["train_loss"].min()))
    assert lowest_train_loss(high) <= final_train_loss(high)
    slice_ = add_lowest_train_loss(lr_seed_sweep[lr_seed_sweep["seed"] == 1].copy())
    assert slice_["lowest_train_loss"].tolist() == [lowest_train_loss(low), lowest_train_loss(high)]
    table = lr_seed_sweep
    low_rows, high_rows = table[table["learning_rate"] == 1e-4], table[table["learning_rate"] == 1e-2]
    per_seed = per_seed_table({"low": low_rows, "high": high_rows}, reference=low_rows)
    assert len(per_seed) == 4 and (per_seed.loc[per_seed["name"] == "low", "curve_distance"] == 0).all()
    assert (per_seed.loc[per_seed["name"] == "high", "curve_distance"] > 0).all()
    assert shortfall(2.0, 1.0, 5.0) == 0.25 and shortfall(1.0, 1.0, 5.0) == 0.0


def test_update_norms_column_then_models_dropped(tmp_path):
    from nbkit.labs.ch05_peft import add_update_norms
    from nbkit.core.sweep import sweep

    cfg = tiny_config(tmp_path, finetuning_type="lora", max_steps=2, learning_rate=1e-2)
    table = sweep(cfg, {"lora_rank": [2, 8]}, keep_models=True, progress=False)
    expected = [lora_update_norm(r.model) for r in as_runs(table)]
    add_update_norms(table)
    assert table["update_norm"].tolist() == pytest.approx(expected) and all(v > 0 for v in expected)
    assert all(r.model is None for r in as_runs(table))
    with pytest.raises(ValueError, match="keep the model"):
        add_update_norms(table)


def test_method_sweeps_measure_forgetting_and_keep_only_the_asked_seeds_lora_weights(tmp_path):
    from nbkit.labs.ch05_peft import method_sweeps

    cfg = tiny_config(tmp_path, max_steps=2)
    tables = method_sweeps(cfg, {"lora": [1e-3], "qlora-8bit": [1e-3]}, seeds=[1, 2], workers=1,
                           heldout_before=1.0, keep_seed=2)
    assert list(tables) == ["lora", "qlora-8bit"]
    assert {r.config["quantization_bit"] for r in as_runs(tables["qlora-8bit"])} == {8}
    for method, table in tables.items():
        assert table["forgetting"].notna().all() and sorted(table["seed"]) == [1, 2]
        kept = [r.model is not None for r in as_runs(table)]
        assert kept == [method == "lora" and s == 2 for s in table["seed"]]


def test_scaling_sweep_one_seed_at_a_time_gives_one_table_with_update_norms(tmp_path):
    from nbkit.labs.ch05_peft import scaling_sweep

    cfg = tiny_config(tmp_path, finetuning_type="lora", lora_alpha=8, max_steps=1, learning_rate=1e-2)
    table = scaling_sweep(cfg, [2, 8], seeds=[1, 2], workers=1)  # one worker: seed by seed, then one table
    assert len(table) == 8 and sorted(set(table["seed"])) == [1, 2]
    assert (table["update_norm"] > 0).all()
    runs = as_runs(table)  # the Runs the sweeps kept, found by their folders in the one table
    assert [r.config["seed"] for r in runs] == table["seed"].tolist()
    assert all(r.model is None and r in table.attrs["runs"] for r in runs)


# ---------------------------------------------------------------- the checks' evidence tables

def test_learned_table_gives_each_seeds_best_method_a_shortfall_of_zero(lr_seed_sweep):
    from nbkit.labs.ch05_peft import learned_table

    table = lr_seed_sweep
    tables = {"low": table[table["learning_rate"] == 1e-4], "high": table[table["learning_rate"] == 1e-2]}
    learned = learned_table(tables, reference="low")
    assert list(learned.index) == [1, 2] and list(learned["shortfall"].columns) == ["low", "high"]
    for seed, row in learned.iterrows():
        losses = {name: float(t.loc[t["seed"] == seed, "best_eval_loss"].iloc[0]) for name, t in tables.items()}
        base = float(tables["low"].loc[tables["low"]["seed"] == seed, "base_eval_loss"].iloc[0])
        best = min(losses, key=losses.get)
        assert row["best_method"].item() == best and row["shortfall", best] == 0
        assert row["base_eval_loss"].item() == base
        for name, loss in losses.items():
            assert row["best_eval_loss", name] == loss
            assert row["shortfall", name] == pytest.approx((loss - losses[best]) / (base - losses[best]))


def test_forgetting_table_and_its_rise_from_the_lowest_lr_to_the_highest():
    import pandas as pd

    from nbkit.labs.ch05_peft import forgetting_rise, forgetting_table

    full = pd.DataFrame({"learning_rate": [1e-3, 1e-3, 1e-4, 1e-4], "seed": [1, 2, 1, 2],
                         "forgetting": [0.5, 0.2, 0.1, 0.3]})
    lora = pd.DataFrame({"learning_rate": [1e-3, 1e-3], "seed": [1, 2], "forgetting": [0.05, 0.07]})
    forgetting = forgetting_table({"full": full, "lora": lora}, ("full", "lora"))
    assert list(forgetting.index) == [1, 2]
    assert forgetting["full", 1e-4].tolist() == [0.1, 0.3] and forgetting["lora", 1e-3].tolist() == [0.05, 0.07]
    rise = forgetting_rise(forgetting)
    assert list(rise.columns) == ["full"]  # lora was tried at one LR: no rise to read
    assert rise["full"].tolist() == pytest.approx([0.4, -0.1])


def test_rank_tables_read_a_rank_sweep_per_seed():
    import pandas as pd

    from nbkit.labs.ch05_peft import params_by_rank, rank_shortfall_table, update_norm_ratios

    sweep = pd.DataFrame({"lora_rank": [1, 8, 1, 8], "seed": [1, 1, 2, 2], "trainable_params": [10, 80, 10, 80],
                          "best_eval_loss": [1.5, 1.0, 1.2, 1.1], "base_eval_loss": [3.0, 3.0, 2.1, 2.1]})
    assert params_by_rank(sweep).to_dict() == {1: 10, 8: 80}
    short = rank_shortfall_table({"easy": sweep, "hard": sweep.assign(best_eval_loss=[2.0, 1.0, 1.1, 1.1])}, rank=1)
    assert list(short.columns) == ["shortfall_easy", "shortfall_hard"] and list(short.index) == [1, 2]
    assert short["shortfall_easy"].tolist() == pytest.approx([0.5 / 2.0, 0.1 / 1.0])
    assert short["shortfall_hard"].tolist() == pytest.approx([1.0 / 2.0, 0.0])
    norms = pd.DataFrame({"use_rslora": [False, False, True, True] * 2, "lora_rank": [4, 64] * 4,
                          "seed": [1] * 4 + [2] * 4, "update_norm": [2.0, 0.5, 2.0, 2.0, 4.0, 2.0, 1.0, 3.0]})
    ratios = update_norm_ratios(norms)
    assert ratios.to_dict("list") == {"standard_ratio": [0.25, 0.5], "rslora_ratio": [1.0, 3.0]}


def test_rank_fit_table_reads_each_runs_lowest_training_loss_and_leaves_the_sweep_as_it_was(lr_seed_sweep):
    from nbkit.labs.ch05_peft import lowest_train_loss, rank_fit_table, run_of, seed_rows

    ranks = lr_seed_sweep.assign(lora_rank=lr_seed_sweep["learning_rate"].map({1e-4: 1, 1e-2: 8}))
    fit = rank_fit_table(ranks)
    assert "lowest_train_loss" not in ranks
    for seed in (1, 2):
        for lr, rank in ((1e-4, 1), (1e-2, 8)):
            run = run_of(lr_seed_sweep, learning_rate=lr, seed=seed)
            assert fit["lowest_train_loss", rank][seed] == lowest_train_loss(run)
            assert fit["best_eval_loss", rank][seed] == run.best_eval_loss
    assert seed_rows(ranks, "best_eval_loss", "lora_rank").equals(fit["best_eval_loss"])


def test_bits_table_orders_the_stored_model_and_the_weight_error_by_bits(tmp_path):
    import pandas as pd

    from nbkit.labs.ch05_peft import base_heldout_loss, bits_table

    cfg = tiny_config(tmp_path)
    methods = pd.DataFrame({"weights_MB": [4.0, 1.5, 1.0], "best_eval_loss": [1.0, 1.1, 1.2]},
                           index=["lora", "qlora-8bit", "qlora-4bit"])
    bits = bits_table(cfg, methods)
    assert list(bits.index) == [32, 8, 4] and bits["model_MB"].tolist() == [4.0, 1.5, 1.0]
    assert bits["best_eval_loss"].tolist() == [1.0, 1.1, 1.2]
    assert bits.loc[32, "weight_error"] == 0 < bits.loc[8, "weight_error"] < bits.loc[4, "weight_error"]
    assert bits.loc[32, "base_heldout_loss"] == base_heldout_loss(cfg.replace(finetuning_type="lora"))
    assert bits.loc[4, "base_heldout_loss"] != bits.loc[32, "base_heldout_loss"]  # the quantised base is another model


def test_the_preview_speaks_chinese(tmp_path):
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): the panel's line before training."""
    import re

    from nbkit.core.i18n import set_language

    set_language("zh")
    try:
        line = preview(tiny_config(tmp_path, finetuning_type="lora"))
    finally:
        set_language("en")
    assert re.fullmatch(r"[\d,]+ 个参数中训练 [\d,]+ 个（\d+\.\d%）；权重 [\d.]+ MB \+ 梯度 [\d.]+ MB \+ "
                        r"优化器状态 [\d.]+ MB = [\d.]+ MB", line), line
