"""The memory planner against DeepSpeed's own estimators, and against memory measured on CPU runs of
the tiny presets (ZeRO-3 partitions on 2 ranks, saved activations)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pretrain.planner import (
    GIB,
    PlanInput,
    count_parameters,
    largest_micro_batch,
    model_states,
    parameter_sizes,
    plan,
    saved_in_forward,
)
from pretrain.presets import get_preset
from tests.conftest import ROOT
from tests.distributed import preprocess, train_env


@pytest.mark.parametrize("preset", ["gpt2-small", "gpt2-xl", "bert-large"])
@pytest.mark.parametrize("gpus,nodes", [(1, 1), (8, 1), (8, 4)])
def test_model_states_equal_deepspeeds_estimators(preset, gpus, nodes):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    params, largest = count_parameters(preset, None)
    for offload, (cpu_offload, offload_params) in {"none": (False, False), "optimizer": (True, False),
                                                   "all": (True, True)}.items():
        spec = PlanInput(preset, zero_stage=3, offload=offload, gpus_per_node=gpus, nodes=nodes)
        states, cpu = model_states(params, largest, spec)
        ds_cpu, ds_gpu, _ = estimate_zero3_model_states_mem_needs(params, largest, gpus, nodes, cpu_offload=cpu_offload,
                                                                  cpu_offload_params=offload_params,
                                                                  additional_buffer_factor=1.0)
        assert sum(states.values()) == pytest.approx(ds_gpu, rel=1e-6), offload
        if cpu_offload:
            assert cpu == pytest.approx(ds_cpu, rel=1e-6), offload
    for cpu_offload in (False, True):
        states, _ = model_states(params, largest, PlanInput(preset, zero_stage=2, offload="optimizer" if cpu_offload else "none",
                                                            gpus_per_node=gpus, nodes=nodes))
        _, ds_gpu = estimate_zero2_model_states_mem_needs(params, gpus, nodes, cpu_offload=cpu_offload,
                                                          additional_buffer_factor=1.0)
        assert sum(states.values()) == pytest.approx(ds_gpu, rel=1e-6)


def test_model_states_measured_on_two_cpu_ranks(tmp_path, small_corpus, shared_bpe):
    """fp32 ZeRO-3: each rank's partitions and Adam moments, as counted in the live engine."""
    preprocess(small_corpus, shared_bpe, tmp_path / "d", "--append-eod")
    deepspeed = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
    from pretrain.distributed import free_port

    proc = subprocess.run([deepspeed, "--num_gpus", "2", "--master_port", str(free_port()), "tests/measure_model_states.py",
                           "tiny_clm", f"data.tokenizer={shared_bpe}", f"data.prefixes=[{tmp_path}/d_text_document]",
                           f"run.dir={tmp_path}/run", "data.split=90,10,0", "train.eval_samples=8"],
                          cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=600)
    found = [json.loads(m) for m in re.findall(r"MEASURED (\{[^}]*\})", proc.stdout + proc.stderr)]
    assert len(found) == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    total = found[0]["total_parameters"]
    _, largest, small = parameter_sizes("tiny-gpt2", 50261)
    predicted, _ = model_states(total, largest, PlanInput("tiny-gpt2", zero_stage=3, precision="fp32", gpus_per_node=2),
                                small)
    for rank in found:
        held = predicted["parameters"] + predicted["persistent small parameters"]
        assert rank["parameters"] == pytest.approx(held, rel=0.05)
        assert rank["gradients"] == pytest.approx(predicted["gradients"], rel=0.05)
        assert rank["master"] + rank["moments"] == pytest.approx(predicted["optimizer"], rel=0.05)


def saved_activation_bytes(model: torch.nn.Module, run) -> int:
    """Bytes autograd keeps for backward during ``run()`` (weights excluded): the activations."""
    seen, total = set(), [0]
    weights = {p.data_ptr() for p in model.parameters()}

    def pack(tensor):
        key = tensor.data_ptr()
        if key not in seen and key not in weights:
            seen.add(key)
            total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return total[0]


@pytest.mark.parametrize("preset,attention", [("tiny-gpt2", "sdpa"), ("tiny-gpt2", "eager"), ("tiny-bert", "eager")])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_memory_measured_on_cpu(preset, attention, checkpointing):
    """(BERT's padding mask sends SDPA to its math kernel on CPU, which stores the attention
    probabilities as eager attention does; the planner's SDPA figure is the GPU kernels'.)"""
    from pretrain.config import Config
    from pretrain.model import create_uninitialized, hf_config, hf_model_class

    family = get_preset(preset).family

    class _Vocabulary:
        vocab_size = 1000
        specials = type("S", (), {"ids": {"eod": 0, "pad": 0}})()

    config = Config()
    config.model.preset, config.model.attention = preset, attention
    model = create_uninitialized(hf_model_class(family, False), hf_config(get_preset(preset), config, _Vocabulary()))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # as build_model
    model.train()
    batch, seq = 4, 128
    ids = torch.randint(0, 1000, (batch, seq))
    if family == "gpt2":
        measured = saved_activation_bytes(model, lambda: model.transformer(input_ids=ids).last_hidden_state.sum())
    else:  # as in training: padded batches come with an attention mask
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[:, -9:] = 0
        measured = saved_activation_bytes(model, lambda: model.bert(input_ids=ids, attention_mask=mask).last_hidden_state.sum())
    spec = PlanInput(preset, vocab_size=1000, seq_len=seq, micro_batch=batch, precision="fp32", attention=attention,
                     activation_checkpointing=checkpointing)
    shape = get_preset(preset)
    predicted = saved_in_forward(spec, family, shape.layers, shape.hidden, shape.heads)
    assert measured == pytest.approx(predicted, rel=0.1), (measured, predicted)


def test_largest_micro_batch_is_the_edge():
    spec = PlanInput("gpt2-medium", seq_len=1024, gpus_per_node=1, gpu_memory_gib=80)
    best = largest_micro_batch(spec)
    assert best > 0
    assert plan(replace(spec, micro_batch=best)).total <= 80 * GIB
    assert plan(replace(spec, micro_batch=best + 1)).total > 0.95 * 80 * GIB


def test_plan_cli(tmp_path):
    proc = subprocess.run([sys.executable, "tools/plan.py", "--preset", "gpt2-xl", "--zero", "3", "--gpus-per-node", "8",
                           "--nodes", "2", "--micro-batch", "8"], cwd=ROOT, capture_output=True, text=True, env=train_env())
    assert proc.returncode == 0, proc.stderr
    assert "1,557.7M parameters" in proc.stdout and "largest micro batch in 80 GiB with checkpointing" in proc.stdout
