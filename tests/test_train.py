"""The trainer: accumulation, schedules, warmup, early stopping, divergence, interruption,
determinism, QLoRA, LoRA counts, and a cross-check against HF Trainer. All on the tiny base."""
import math
import threading

import pytest
import torch

from nbkit import TrainConfig, load_run, train
from nbkit.core.callbacks import EPOCH_END, RUN_END, STEP, TRAIN_BEGIN, EarlyStopping


def small(tmp_path, **kw) -> TrainConfig:
    """A few-second config: few examples, no generation, no progress bar."""
    base = dict(model="tiny", dataset="arithmetic", max_samples=160, num_train_epochs=2,
                predict_with_generate=False, disable_tqdm=True, output_dir=str(tmp_path / "runs"))
    base.update(kw)
    return TrainConfig(**base)


def trained_params(run):
    return {n: p.detach().clone() for n, p in run.model.named_parameters()}


# ------------------------------------------------------------------ the contract

def test_contract_fields_and_files(tmp_path):
    run = train(small(tmp_path, num_train_epochs=2))
    assert run.status == "completed"
    steps_per_epoch = run.summary["steps_per_epoch"]
    assert len(run.steps) == 2 * steps_per_epoch
    assert {"step", "epoch", "loss", "learning_rate", "grad_norm", "clipped", "tokens_per_second"} <= set(run.steps)
    assert list(run.epochs["epoch"]) == [0, 1, 2]  # epoch 0 is the base, before any update
    assert run.best_epoch == int(run.epochs.loc[run.epochs["eval_loss"].idxmin(), "epoch"])
    for name in ("config.json", "steps.csv", "epochs.csv", "summary.json"):
        assert (run.path / name).exists()
    again = load_run(run.path)
    assert again.status == "completed" and again.steps["loss"].tolist() == pytest.approx(run.steps["loss"].tolist())
    assert again.config["learning_rate"] == run.config["learning_rate"]


def test_fine_tuning_lowers_validation_loss(tmp_path):
    run = train(small(tmp_path, max_samples=None, max_steps=60))
    assert run.epochs["eval_loss"].iloc[-1] < run.epochs["eval_loss"].iloc[0]


# ------------------------------------------------------------------ gradient accumulation

def test_accumulation_equals_one_big_batch_with_variable_lengths(tmp_path):
    """k micro-batches of b and one batch of k*b: same loss per step, same gradient, same weights.
    Arithmetic answers have 1 to 3 digits, so micro-batches hold different numbers of
    response tokens and a mean of micro-batch means would differ from the true token mean.

    The optimizer is plain SGD (no momentum) on purpose: its update is lr x gradient, so equal
    gradients give equal weights to float rounding. Adam divides by sqrt(v), which turns the
    1e-9 rounding noise of a near-zero gradient element into an update as large as lr itself:
    a weight comparison after Adam tests Adam's sensitivity, not the accumulation."""
    common = dict(dataset="arithmetic", max_steps=3, max_grad_norm=None, num_train_epochs=1,
                  optim="sgd", sgd_momentum=0.0, learning_rate=0.1)
    from nbkit.core.models import load_model

    before = {n: p.detach().clone() for n, p in load_model(small(tmp_path))[0].named_parameters()}
    big = train(small(tmp_path, per_device_train_batch_size=32, gradient_accumulation_steps=1, **common))
    acc = train(small(tmp_path, per_device_train_batch_size=8, gradient_accumulation_steps=4, **common))
    from nbkit.core.train import build_datasets

    features, _, _ = build_datasets(small(tmp_path), big.tokenizer)
    assert len({sum(x != -100 for x in f["labels"]) for f in features}) > 1  # lengths really differ
    assert big.steps["loss"].tolist() == pytest.approx(acc.steps["loss"].tolist(), rel=1e-5)
    a, b = trained_params(big), trained_params(acc)
    moved = max(float((a[n] - before[n]).abs().max()) for n in a)
    assert moved > 1e-3  # the weights really moved, so agreeing below is not trivial
    for name in a:
        update_a, update_b = a[name] - before[name], b[name] - before[name]
        scale = float(update_a.abs().max())
        # float32 sums over 32 rows in another order differ by ~1e-7 relative; three steps of
        # training carry that forward. A mean of micro-batch means is off by percents.
        torch.testing.assert_close(update_a, update_b, rtol=0, atol=1e-4 * scale)


# ------------------------------------------------------------------ schedules and warmup

@pytest.mark.parametrize("scheduler,kwargs", [
    ("constant", {}), ("constant_with_warmup", {}), ("linear", {}), ("cosine", {}),
    ("cosine_with_restarts", {"num_cycles": 2}), ("polynomial", {"power": 2.0})])
def test_schedule_matches_transformers_get_scheduler(tmp_path, scheduler, kwargs):
    from transformers import get_scheduler

    cfg = small(tmp_path, lr_scheduler_type=scheduler, lr_scheduler_kwargs=kwargs, warmup_ratio=0.2,
                num_train_epochs=2)
    run = train(cfg)
    total = run.summary["total_steps"]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    ref = get_scheduler(scheduler, opt, num_warmup_steps=math.ceil(0.2 * total), num_training_steps=total,
                        scheduler_specific_kwargs=kwargs or None)
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert run.steps["learning_rate"].tolist() == pytest.approx(expected)


def test_warmup_ramps_up_then_reaches_peak(tmp_path):
    cfg = small(tmp_path, lr_scheduler_type="constant_with_warmup", warmup_steps=5)
    lrs = train(cfg).steps["learning_rate"].tolist()
    assert lrs[0] == 0.0  # the first update is the smallest
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:6]))  # strictly rising during warmup
    assert lrs[5:] == pytest.approx([cfg.learning_rate] * len(lrs[5:]))


def test_step_decay_halves_each_epoch(tmp_path):
    cfg = small(tmp_path, lr_scheduler_type="step", lr_scheduler_kwargs={"step_size": 1, "gamma": 0.5},
                num_train_epochs=3)
    run = train(cfg)
    per_epoch = run.steps.groupby(run.steps["epoch"].apply(math.ceil))["learning_rate"].agg(["min", "max"])
    assert (per_epoch["min"] == per_epoch["max"]).all()  # constant within an epoch
    assert per_epoch["max"].tolist() == pytest.approx([cfg.learning_rate * 0.5 ** i for i in range(3)])


def test_reduce_on_plateau_lowers_lr_only_after_a_bad_epoch(tmp_path):
    cfg = small(tmp_path, dataset="reviews", lr_scheduler_type="reduce_lr_on_plateau",
                lr_scheduler_kwargs={"factor": 0.5, "patience": 0}, num_train_epochs=6, learning_rate=3e-3)
    run = train(cfg)
    ep = run.epochs.set_index("epoch")
    cuts = kept = 0
    for epoch in range(1, len(ep) - 1):
        improved = ep.loc[epoch, "eval_loss"] < ep.loc[:epoch - 1, "eval_loss"].min()
        lr_next = run.steps.loc[run.steps["epoch"].apply(math.ceil) == epoch + 1, "learning_rate"]
        lr_now = run.steps.loc[run.steps["epoch"].apply(math.ceil) == epoch, "learning_rate"]
        assert len(lr_next)  # every epoch but the last is followed by one
        expected = lr_now.iloc[-1] * (1.0 if improved else 0.5)
        assert lr_next.iloc[0] == pytest.approx(expected)
        cuts, kept = cuts + (not improved), kept + improved
    assert cuts >= 1 and kept >= 1  # reviews over-fit at this LR: the run shows both a kept LR and a cut


# ------------------------------------------------------------------ early stopping

def test_early_stopping_on_a_constructed_curve():
    curve = [3.0, 2.0, 1.5, 1.6, 1.55, 1.4, 1.7, 1.8, 1.9]
    stops = {}
    for patience in (1, 2, 3):
        es = EarlyStopping(patience)
        for epoch, loss in enumerate(curve):
            es.update(epoch, loss)
            if es.should_stop:
                stops[patience] = (epoch, es.best_epoch)
                break
    assert stops[1] == (3, 2)  # the first epoch that does not improve
    assert stops[2] == (4, 2)  # 3 and 4 both fail to beat epoch 2
    assert stops[3] == (8, 5)  # tolerating the dip at 3-4 finds the better epoch 5
    es = EarlyStopping(None)
    for epoch, loss in enumerate(curve):
        es.update(epoch, loss)
    assert not es.should_stop and es.best_epoch == 5


def test_threshold_counts_small_gains_as_no_improvement():
    es = EarlyStopping(patience=1, threshold=0.1)
    es.update(0, 2.0)
    es.update(1, 1.95)  # better, but by less than the threshold
    assert es.should_stop and es.best_epoch == 0


def test_early_stopping_and_best_weights_restored_on_a_real_run(tmp_path):
    from nbkit.core.evaluate import evaluate_loss
    from nbkit.core.train import build_datasets
    from nbkit.core.data import collate
    from functools import partial
    from torch.utils.data import DataLoader

    cfg = small(tmp_path, dataset="reviews", max_samples=None, learning_rate=3e-3, num_train_epochs=12,
                early_stopping_patience=1, load_best_model_at_end=True)
    run = train(cfg)
    ep = run.epochs
    assert run.status == "early_stopped"  # reviews over-fit (a quarter of the labels flipped): it must stop
    last = ep["epoch"].iloc[-1]
    assert last < cfg.num_train_epochs
    assert last == run.best_epoch + cfg.early_stopping_patience  # patience epochs after the best
    # the returned model is the best epoch's: re-evaluate it from scratch
    _, val, _ = build_datasets(cfg, run.tokenizer)
    loader = DataLoader(val, batch_size=64, collate_fn=partial(collate, pad_token_id=run.tokenizer.pad_token_id))
    loss = evaluate_loss(run.model, loader, torch.device("cpu"))
    assert loss == pytest.approx(run.best_eval_loss, rel=1e-5)
    assert run.summary["restored_best"]


def test_validation_loss_re_evaluates_the_returned_weights(tmp_path):
    from nbkit.core.train import validation_loss

    cfg = small(tmp_path, dataset="reviews", max_samples=60, lr_scheduler_type="constant", num_train_epochs=4,
                early_stopping_patience=1, load_best_model_at_end=True)
    run = train(cfg)
    assert run.summary["restored_best"]
    assert validation_loss(run) == pytest.approx(run.best_eval_loss, rel=1e-5)
    plain = train(cfg.replace(early_stopping_patience=None, load_best_model_at_end=False))
    assert validation_loss(plain) == pytest.approx(plain.epochs["eval_loss"].iloc[-1], rel=1e-5)  # the last epoch's
    plain.model = None
    with pytest.raises(ValueError, match="run.model is None"):
        validation_loss(plain)


# ------------------------------------------------------------------ divergence, interruption

def test_huge_learning_rate_diverges_cleanly(tmp_path):
    run = train(small(tmp_path, learning_rate=5.0, max_grad_norm=None, optim="sgd"))
    assert run.status == "diverged"
    step = run.summary["diverged_at_step"]
    assert step == len(run.steps)  # recorded up to the step that diverged, then stopped
    bad = run.steps["loss"].iloc[-1]
    assert not math.isfinite(bad) or bad > 3 * run.steps["loss"].iloc[0]
    assert load_run(run.path).status == "diverged"


def test_keyboard_interrupt_ends_run_cleanly(tmp_path):
    def interrupt_at_step_5(event, data):
        if event == STEP and data["step"] == 5:
            raise KeyboardInterrupt

    run = train(small(tmp_path), callbacks=[interrupt_at_step_5])
    assert run.status == "interrupted"
    assert run.steps["step"].tolist() == [1, 2, 3, 4, 5]
    assert load_run(run.path).status == "interrupted"


def test_stop_event_interrupts(tmp_path):
    stop = threading.Event()

    def stop_at_3(event, data):
        if event == STEP and data["step"] == 3:
            stop.set()

    run = train(small(tmp_path), callbacks=[stop_at_3], stop_event=stop)
    assert run.status == "interrupted" and len(run.steps) == 3


def test_events_in_order(tmp_path):
    events = []
    train(small(tmp_path, num_train_epochs=1), callbacks=[lambda e, d: events.append(e)])
    assert events[0] == TRAIN_BEGIN and events[-1] == RUN_END
    assert events[1] == EPOCH_END  # the base evaluation comes before any step
    assert events.count(EPOCH_END) == 2 and STEP in events


def test_keep_model_false_returns_the_curves_without_the_weights(tmp_path):
    seen_at_run_end = []
    run = train(small(tmp_path, num_train_epochs=1), keep_model=False,
                callbacks=[lambda e, d: e == RUN_END and seen_at_run_end.append(d["run"].model is not None)])
    assert seen_at_run_end == [True]  # run_end's callbacks still see the weights
    assert run.model is None and run.tokenizer is None
    assert len(run.steps) > 0 and run.best_eval_loss is not None and (run.path / "summary.json").exists()


def test_a_run_stopped_at_an_epoch_end_counts_that_epoch_in_its_best(tmp_path):
    """A study's pruner stops a run on EPOCH_END: the epoch it was cut at must be in best_epoch and
    best_eval_loss (it was recorded as epoch 0, the base model, before), in summary.json and list_runs."""
    from nbkit import list_runs
    from nbkit.core.callbacks import StopRun

    seen = []

    def prune_after_epoch_1(event, data):
        if event == EPOCH_END:
            seen.append(data["last_epoch"])
            if data["epoch"] == 1:
                raise StopRun("pruned")

    run = train(small(tmp_path, num_train_epochs=3, learning_rate=3e-3), callbacks=[prune_after_epoch_1])
    assert run.status == "pruned" and list(run.epochs.epoch) == [0, 1] and seen == [False, False]
    losses = dict(zip(run.epochs.epoch, run.epochs.eval_loss))
    assert losses[1] < losses[0]  # the premise: epoch 1 improved on the base model
    assert run.best_epoch == 1 and run.summary["best_eval_loss"] == pytest.approx(losses[1])
    listed = list_runs(tmp_path / "runs").iloc[0]
    assert listed["best_epoch"] == 1 and listed["best_eval_loss"] == pytest.approx(losses[1])


def test_the_last_epoch_end_says_it_is_the_last(tmp_path):
    flags = []
    train(small(tmp_path, num_train_epochs=2),
          callbacks=[lambda e, d: e == EPOCH_END and flags.append(d["last_epoch"])])
    assert flags == [False, False, True]


# ------------------------------------------------------------------ determinism

def test_same_seed_same_curve(tmp_path):
    a = train(small(tmp_path, seed=3))
    b = train(small(tmp_path, seed=3))
    c = train(small(tmp_path, seed=4))
    assert a.steps["loss"].tolist() == b.steps["loss"].tolist()  # bit-identical on the CPU
    assert a.epochs["eval_loss"].tolist() == b.epochs["eval_loss"].tolist()
    assert a.steps["loss"].tolist() != c.steps["loss"].tolist()


# ------------------------------------------------------------------ PEFT

def test_lora_trainable_count_equals_peft(tmp_path):
    run = train(small(tmp_path, finetuning_type="lora", lora_rank=4, max_steps=2))
    trainable, total = run.model.get_nb_trainable_parameters()
    assert run.summary["trainable_params"] == trainable
    assert run.summary["total_params"] == total
    assert 0 < trainable < total


def test_freeze_trains_only_the_last_layers(tmp_path):
    from transformers import AutoModelForCausalLM

    from nbkit.core.models import TINY_PATH

    base = dict(AutoModelForCausalLM.from_pretrained(TINY_PATH).named_parameters())
    run = train(small(tmp_path, finetuning_type="freeze", freeze_trainable_layers=1, max_steps=3))
    changed = {n for n, p in run.model.named_parameters() if not torch.equal(p, base[n])}
    last = run.model.config.num_hidden_layers - 1
    assert changed and all(f"layers.{last}." in n for n in changed)
    assert run.summary["trainable_params"] == sum(p.numel() for n, p in base.items() if f"layers.{last}." in n)


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_training_step(tmp_path, bits):
    import bitsandbytes as bnb

    run = train(small(tmp_path, finetuning_type="lora", quantization_bit=bits, max_steps=3))
    assert run.status == "completed" and run.steps["loss"].notna().all()
    kind = bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt
    assert any(isinstance(m, kind) for m in run.model.modules())
    plain = train(small(tmp_path, finetuning_type="lora", max_steps=1))
    assert run.summary["model_bytes"] < plain.summary["model_bytes"]  # the base is quantised


# ------------------------------------------------------------------ cross-check with HF Trainer

def test_same_curve_as_hf_trainer(tmp_path):
    """Our loop and transformers.Trainer on the same model, data order and settings give the
    same per-step loss to 1e-4 relative (float summation order is the only difference)."""
    from functools import partial

    from transformers import Trainer, TrainingArguments, TrainerCallback

    from nbkit.core.data import collate
    from nbkit.core.export import training_args_kwargs
    from nbkit.core.models import load_model
    from nbkit.core.train import build_datasets

    cfg = small(tmp_path, max_steps=8, gradient_accumulation_steps=2, per_device_train_batch_size=8,
                warmup_ratio=0.25, lr_scheduler_type="cosine", weight_decay=0.01)
    ours = train(cfg)

    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model(cfg)
    features, _, _ = build_datasets(cfg, tokenizer)
    kwargs = training_args_kwargs(cfg)
    kwargs.update(output_dir=str(tmp_path / "hf"), eval_strategy="no", save_strategy="no", report_to=[],
                  logging_steps=1, load_best_model_at_end=False, disable_tqdm=True,
                  accelerator_config={"use_seedable_sampler": False})  # keep the sampler we give it
    losses = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **_):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    # our first epoch's order: what a DataLoader(shuffle=True, generator seeded with cfg.seed)
    # yields (it draws a worker seed from the generator before shuffling)
    order = torch.utils.data.DataLoader(range(len(features)), batch_size=len(features), shuffle=True,
                                        generator=torch.Generator().manual_seed(cfg.seed))
    order = next(iter(order)).tolist()
    assert cfg.max_steps * 16 <= len(order)  # the comparison stays inside that first epoch

    class SameOrder(Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return order

    trainer = SameOrder(model=model, args=TrainingArguments(**kwargs), train_dataset=features,
                        data_collator=partial(collate, pad_token_id=tokenizer.pad_token_id),
                        callbacks=[Record()])
    trainer.train()
    assert len(losses) == len(ours.steps)
    assert ours.steps["loss"].tolist() == pytest.approx(losses, rel=1e-4)


def tiny_config():
    from transformers import AutoConfig

    from nbkit.core.models import TINY_PATH

    return AutoConfig.from_pretrained(TINY_PATH)


def test_lora_rank_larger_than_hidden_size_is_refused_before_training(tmp_path):
    cfg = small(tmp_path, finetuning_type="lora", lora_rank=4096)
    with pytest.raises(ValueError) as err:
        train(cfg)
    message = str(err.value)
    assert "lora_rank" in message and "4096" in message and str(tiny_config().hidden_size) in message
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_freeze_more_layers_than_the_model_has_is_refused(tmp_path):
    layers = tiny_config().num_hidden_layers
    with pytest.raises(ValueError, match=rf"freeze_trainable_layers=9.*1 to {layers}\b"):
        train(small(tmp_path, finetuning_type="freeze", freeze_trainable_layers=9))


# ------------------------------------------------------------------ the built-in tasks on the tiny base

def test_reviews_overfits_inside_the_default_epochs(tmp_path):
    """At the defaults, `reviews` shows the classic picture: validation loss turns up before
    the last epoch while the training loss keeps falling."""
    cfg = TrainConfig(dataset="reviews", disable_tqdm=True, output_dir=str(tmp_path / "runs"))
    run = train(cfg)
    ep = run.epochs.set_index("epoch")
    last = cfg.num_train_epochs
    assert 0 < run.best_epoch < last
    assert ep.loc[last, "eval_loss"] > ep.loc[run.best_epoch, "eval_loss"]
    assert ep.loc[last, "train_loss"] < ep.loc[run.best_epoch, "train_loss"]


def test_base_knows_its_pretraining_text_so_forgetting_is_measurable(tmp_path):
    """The `corpus` task is held-out text of the pretraining distribution: the tiny base's
    loss on it is far below an untrained model of the same shape."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from nbkit.core.models import TINY_PATH

    cfg = small(tmp_path, dataset="corpus", max_steps=1, learning_rate=1e-12)
    base_loss = train(cfg).summary["base_eval_loss"]
    torch.manual_seed(0)
    fresh = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TINY_PATH))
    fresh.save_pretrained(tmp_path / "fresh")
    import shutil
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (TINY_PATH / name).exists():
            shutil.copy(TINY_PATH / name, tmp_path / "fresh" / name)
    fresh_loss = train(cfg.replace(model=str(tmp_path / "fresh"))).summary["base_eval_loss"]
    assert base_loss < fresh_loss


def test_the_trainers_messages_speak_chinese(tmp_path):
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po): a learner's bad split, in Chinese."""
    import warnings

    from nbkit.core.i18n import set_language
    from nbkit.core.train import check_process_split

    cfg = TrainConfig(model="tiny", per_device_train_batch_size=16, output_dir=str(tmp_path))
    set_language("zh")
    try:
        with pytest.raises(ValueError, match=r"^10 个训练样本不够给 2 个进程各分一个 "
                                             r"per_device_train_batch_size=16 的批次；"
                                             r"允许：per_device_train_batch_size <= 5"):
            check_process_split(cfg, 10, 2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_process_split(cfg, 40, 2)
        assert "不能均分给 2 个进程" in str(caught[0].message)
    finally:
        set_language("en")
