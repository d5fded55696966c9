"""Several processes: the trainer under `accelerate launch` (and torchrun) on CPU processes (gloo)
is the same run as one process with the accumulation multiplied; the checks that refuse what
cannot work; the Accelerate config files for GPUs. The launched tests start real processes
(about 30 s of CPU each): they are what makes `accelerate launch -m nbkit train` trustworthy."""
import warnings

import pytest
import yaml
from conftest import tiny_config

from nbkit import train
from nbkit.core.distributed import (accelerate_configs, check_accelerate_config, deepspeed_config, effective_batch,
                                    launch, launch_command, write_accelerate_configs)
from nbkit.core.train import check_process_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOSS_TOLERANCE = 1e-5  # relative: only the order of the floating-point sums differs between the two set-ups


def relative_difference(a, b) -> float:
    return max(abs(x / y - 1) for x, y in zip(a, b))


@pytest.mark.parametrize("launcher", ["accelerate", "torchrun"])
def test_two_processes_equal_one_process_with_double_accumulation(tmp_path, launcher):
    # 64 training rows = 8 batches of 8: each of 2 processes gets 4, two per optimizer step
    cfg = tiny_config(tmp_path, per_device_train_batch_size=8, gradient_accumulation_steps=2, num_train_epochs=2,
                      lr_scheduler_type="constant")
    two = launch(cfg.replace(run_name="two"), num_processes=2, launcher=launcher)
    one = train(cfg.replace(gradient_accumulation_steps=4, run_name="one"))
    assert two.status == "completed" and two.summary["world_size"] == 2
    assert two.summary["effective_batch_size"] == one.summary["effective_batch_size"] == 32
    assert len(two.steps) == len(one.steps) == 4
    assert relative_difference(two.steps["loss"], one.steps["loss"]) < LOSS_TOLERANCE
    assert relative_difference(two.steps["grad_norm"], one.steps["grad_norm"]) < LOSS_TOLERANCE
    assert relative_difference(two.epochs["eval_loss"], one.epochs["eval_loss"]) < LOSS_TOLERANCE
    # without the doubled accumulation (half the effective batch) the curve is another one
    half = train(cfg.replace(run_name="half"))
    assert relative_difference(two.steps["loss"][1:], half.steps["loss"][1:4]) > 1e-3
    # only the main process wrote a run folder
    folders = sorted(p.name.split("_", 1)[1] for p in tmp_path.iterdir() if p.is_dir())
    assert folders == ["half", "one", "two"]


def test_a_failing_launch_raises_with_the_processes_output(tmp_path):
    # 64 training rows cannot give 2 processes a batch of 48 each: train() refuses, launch says why
    cfg = tiny_config(tmp_path, per_device_train_batch_size=48, run_name="too-big")
    with pytest.raises(RuntimeError, match="per_device_train_batch_size"):
        launch(cfg, num_processes=2)


def test_launch_needs_a_run_name(tmp_path):
    with pytest.raises(ValueError, match="run_name"):
        launch(tiny_config(tmp_path), num_processes=2)


def test_process_split_refuses_too_few_examples_and_warns_on_uneven_batches(tmp_path):
    cfg = tiny_config(tmp_path, per_device_train_batch_size=8)
    with pytest.raises(ValueError, match="per_device_train_batch_size=8"):
        check_process_split(cfg, 12, 2)
    with pytest.warns(UserWarning, match="do not split evenly"):
        check_process_split(cfg, 24, 2)  # 3 batches over 2 processes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_process_split(cfg, 32, 2)  # 4 batches of 8: even
        check_process_split(cfg, 5, 1)  # one process: nothing to split


def test_effective_batch_arithmetic(tmp_path):
    cfg = tiny_config(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=3)
    assert effective_batch(cfg, 2)["effective_batch_size"] == 24
    assert effective_batch(cfg)["effective_batch_size"] == 12
    with pytest.raises(ValueError, match="num_processes=0"):
        effective_batch(cfg, 0)


def test_launch_commands():
    accelerate = launch_command("run.yaml", 2, "accelerate", port=1234)
    assert "--multi_gpu" in accelerate
    assert accelerate[accelerate.index("--num_processes") + 1] == "2"
    assert accelerate[-4:] == ["nbkit", "train", "--config", "run.yaml"]
    torchrun = launch_command("run.yaml", 3, "torchrun", port=1234)
    assert torchrun[torchrun.index("--nproc_per_node") + 1] == "3"
    with pytest.raises(ValueError, match="launcher='mpirun'"):
        launch_command("run.yaml", 2, "mpirun")


def test_accelerate_config_files_load_with_accelerates_own_loader(tmp_path):
    paths = write_accelerate_configs(tmp_path, num_processes=4, mixed_precision="bf16")
    assert set(paths) == {"ddp", "zero1", "zero2", "zero3", "fsdp"}
    for name, path in paths.items():
        assert check_accelerate_config(path) == [], name
        assert yaml.safe_load(path.read_text())["num_processes"] == 4
    assert yaml.safe_load(paths["zero2"].read_text())["deepspeed_config"]["zero_stage"] == 2
    assert accelerate_configs()["fsdp"]["fsdp_config"]["fsdp_version"] == 2


def test_a_wrong_key_in_a_config_file_is_found(tmp_path):
    config = deepspeed_config(2)
    config["deepspeed_config"]["zero_stag"] = 2  # a typo accelerate launch would not understand
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert check_accelerate_config(path) == ["deepspeed_config.zero_stag is not an option of accelerate launch"]
    with pytest.raises(ValueError, match="zero_stage=4"):
        deepspeed_config(4)


def test_a_bad_launch_setting_is_named_in_chinese(tmp_path):
    """The real catalogue (nbkit/locale/zh_CN/LC_MESSAGES/nbkit.po)."""
    from nbkit.core.i18n import set_language

    set_language("zh")
    try:
        with pytest.raises(ValueError, match=r"^num_processes=0 无效；允许：一个整数 >= 1$"):
            effective_batch(tiny_config(tmp_path), num_processes=0)
        with pytest.raises(ValueError, match=r"^zero_stage=4 不被允许；允许：1、2、3$"):
            deepspeed_config(4)
    finally:
        set_language("en")
