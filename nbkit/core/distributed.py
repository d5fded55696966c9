"""Several processes: launch the trainer under `accelerate launch`, and write the Accelerate
config files that take the same run to GPUs (DDP, DeepSpeed ZeRO 1/2/3, FSDP).

    run = launch(cfg, num_processes=2)        # 2 CPU processes (gloo), from a notebook or a test
    effective_batch(cfg, num_processes=2)     # per-device batch x accumulation x processes
    paths = write_accelerate_configs("configs")  # {"ddp": ..., "zero1": ..., "fsdp": ...}

`launch` is what a user types in a shell (`accelerate launch --num_processes 2 -m nbkit train
--config run.yaml`), run as a subprocess: the config goes to a YAML file, every process runs
`nbkit.core.train.train`, Accelerate wraps the model in DistributedDataParallel, deals the batches
out in turn and all-reduces the gradients; the main process writes the run store.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from nbkit.core.config import TrainConfig
from nbkit.core.i18n import _
from nbkit.core.runs import load_run

LAUNCHERS = ("accelerate", "torchrun")


def effective_batch(cfg: TrainConfig, num_processes: int = 1) -> dict:
    """The examples behind one optimizer step: per_device_train_batch_size on each process, times
    gradient_accumulation_steps micro-batches, times the processes (Hugging Face's arithmetic)."""
    if num_processes < 1:
        raise ValueError(_("num_processes={num_processes!r} is invalid; allowed: a whole number >= 1").format(
            num_processes=num_processes))
    per_device, k = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    return {"per_device_train_batch_size": per_device, "gradient_accumulation_steps": k,
            "num_processes": num_processes, "effective_batch_size": per_device * k * num_processes}


def free_port() -> int:
    """A TCP port nobody listens on now, for the processes' rendezvous (two launches at once
    on one machine, e.g. parallel tests, must not share one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(config_file: str | Path, num_processes: int = 2, launcher: str = "accelerate",
                   port: int | None = None) -> list[str]:
    """The command line that trains `config_file` on num_processes CPU processes.
    accelerate: `--multi_gpu` picks DDP with num_processes workers (with ACCELERATE_USE_CPU set,
    see launch_env, they stay on the CPU and talk over gloo; `--cpu` alone would start one).
    torchrun: the plain PyTorch launcher; Accelerator() reads its environment the same way."""
    if launcher not in LAUNCHERS:
        raise ValueError(_("launcher={launcher!r} is not allowed; allowed: {allowed}").format(
            launcher=launcher, allowed=", ".join(LAUNCHERS)))
    port = port or free_port()
    train_args = ["-m", "nbkit", "train", "--config", str(config_file)]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(num_processes),
                "--master_addr", "127.0.0.1", "--master_port", str(port)] + train_args
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)] + train_args


def launch_env(threads_per_process: int = 1) -> dict:
    """This process's environment, plus: the Accelerator forced onto the CPU, one torch thread per
    process (two processes of N threads each on few cores only fight), and this nbkit importable."""
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS=str(threads_per_process))
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([repo] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("MPLBACKEND", None)
    return env


def launch(cfg: TrainConfig, num_processes: int = 2, launcher: str = "accelerate", timeout: float = 300):
    """Train cfg on num_processes CPU processes in a subprocess; returns the Run the main process
    wrote. cfg.run_name must be set (the run is found by it). A failure raises RuntimeError with
    the end of the processes' output."""
    if not cfg.run_name:
        raise ValueError(_("cfg.run_name is None; allowed: a name, e.g. cfg.replace(run_name='ddp2'): launch finds "
                           "the run it started by its name"))
    folder = Path(cfg.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / f"{cfg.run_name}.launch.yaml"
    config_file.write_text(yaml.safe_dump(cfg.replace(disable_tqdm=True).to_dict(), sort_keys=False))
    before = set(folder.iterdir())
    command = launch_command(config_file, num_processes, launcher)
    done = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(_("{command} exited with {code}:\n{stdout}\n{stderr}").format(
            command=" ".join(command[2:4]), code=done.returncode, stdout=done.stdout[-2000:],
            stderr=done.stderr[-3000:]))
    new = [p for p in set(folder.iterdir()) - before if p.is_dir() and p.name.endswith(f"_{cfg.run_name}")]
    if len(new) != 1:
        raise RuntimeError(_("expected one new run folder named *_{run_name} in {folder}, found {found}").format(
            run_name=cfg.run_name, folder=folder, found=len(new)))
    return load_run(new[0])


# ---------------------------------------------------------------- Accelerate config files

def _base_config(distributed_type: str, num_processes: int, mixed_precision: str) -> dict:
    """The fields every `accelerate launch --config_file` YAML has (accelerate config's own keys)."""
    return {"compute_environment": "LOCAL_MACHINE", "distributed_type": distributed_type,
            "mixed_precision": mixed_precision, "num_machines": 1, "num_processes": num_processes,
            "machine_rank": 0, "main_training_function": "main", "rdzv_backend": "static",
            "same_network": True, "use_cpu": False, "debug": False}


def ddp_config(num_processes: int = 2, mixed_precision: str = "bf16") -> dict:
    """Plain data parallel: a full copy of model, gradients and optimizer state on every GPU;
    only the gradients travel (an all-reduce per optimizer step)."""
    return _base_config("MULTI_GPU", num_processes, mixed_precision) | {"gpu_ids": "all"}


def deepspeed_config(zero_stage: int, num_processes: int = 2, mixed_precision: str = "bf16",
                     gradient_accumulation_steps: int = 1, max_grad_norm: float = 1.0,
                     offload: bool = False) -> dict:
    """DeepSpeed ZeRO: stage 1 shards the optimizer state over the GPUs, stage 2 also the
    gradients, stage 3 also the weights (gathered layer by layer for each forward and backward).
    DeepSpeed then owns accumulation and clipping, so they are set here, not in the loop."""
    if zero_stage not in (1, 2, 3):
        raise ValueError(_("zero_stage={zero_stage!r} is not allowed; allowed: 1, 2, 3").format(zero_stage=zero_stage))
    ds = {"zero_stage": zero_stage, "gradient_accumulation_steps": gradient_accumulation_steps,
          "gradient_clipping": max_grad_norm, "offload_optimizer_device": "cpu" if offload else "none",
          "offload_param_device": "cpu" if offload and zero_stage == 3 else "none", "zero3_init_flag": zero_stage == 3}
    if zero_stage == 3:
        ds["zero3_save_16bit_model"] = True  # gather the shards into one normal checkpoint when saving
    return _base_config("DEEPSPEED", num_processes, mixed_precision) | {"deepspeed_config": ds}


def fsdp_config(num_processes: int = 2, mixed_precision: str = "bf16", layer_cls: str = "LlamaDecoderLayer",
                offload: bool = False) -> dict:
    """PyTorch FSDP (version 2): weights, gradients and optimizer state sharded like ZeRO-3, each
    decoder layer gathered just before it runs and re-sharded after its forward."""
    fsdp = {"fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_transformer_layer_cls_to_wrap": layer_cls, "fsdp_reshard_after_forward": True,
            "fsdp_offload_params": offload, "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_cpu_ram_efficient_loading": True, "fsdp_activation_checkpointing": False}
    return _base_config("FSDP", num_processes, mixed_precision) | {"fsdp_config": fsdp}


def accelerate_configs(num_processes: int = 2, mixed_precision: str = "bf16") -> dict[str, dict]:
    """The GPU set-ups, from the least to the most memory saved per GPU."""
    configs = {"ddp": ddp_config(num_processes, mixed_precision)}
    for stage in (1, 2, 3):
        configs[f"zero{stage}"] = deepspeed_config(stage, num_processes, mixed_precision)
    configs["fsdp"] = fsdp_config(num_processes, mixed_precision)
    return configs


def write_accelerate_configs(folder: str | Path, num_processes: int = 2, mixed_precision: str = "bf16") -> dict:
    """Write each of accelerate_configs() as <folder>/<name>.yaml; returns {name: path}. Use one
    with `accelerate launch --config_file <path> -m nbkit train --config run.yaml`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, config in accelerate_configs(num_processes, mixed_precision).items():
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(config, sort_keys=False))
    return paths


def check_accelerate_config(path: str | Path) -> list[str]:
    """Problems Accelerate itself would find in a config file (an empty list when none): it must
    load with accelerate's own loader, and each DeepSpeed / FSDP key must be an option of
    `accelerate launch` (the launcher turns every such key into that option)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(path))
    options = {action.dest for action in launch_command_parser()._actions}
    problems = []
    for section in ("deepspeed_config", "fsdp_config"):
        for key in (getattr(config, section) or {}):
            if key not in options:
                problems.append(f"{section}.{key} is not an option of accelerate launch")
    return problems
