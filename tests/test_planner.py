"""The memory planner against DeepSpeed's own estimators and against memory measured on CPU runs of the
tiny presets (model states on 2 ranks, saved activations); the parallel plan's choices."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pretrain.config import ModelConfig
from pretrain.model.hf import create_uninitialized
from pretrain.parallel import PlanError, PlanRequest, choose_plan
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
from tests.probe import result_path


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


def probe(mode: str, tmp_path: Path, data: Path, tokenizer: Path, *overrides: str, ranks: int = 2,
          config: str = "tiny_clm") -> list[dict]:
    deepspeed = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
    from pretrain.distributed import free_port

    run_dir = tmp_path / f"run-{mode}"
    files = [result_path(run_dir, mode, rank) for rank in range(ranks)]
    command = [deepspeed, "--num_gpus", str(ranks), "--master_port", str(free_port())] if ranks > 1 else [sys.executable]
    proc = subprocess.run([*command, "tests/probe.py", mode, config, f"data.tokenizer={tokenizer}",
                           f"data.prefixes=[{data}]", f"run.dir={run_dir}", "data.split=90,10,0",
                           "train.eval_samples=8", *overrides], cwd=ROOT,
                          env={**train_env(), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and all(f.exists() for f in files), proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(f.read_text()) for f in files]


@pytest.fixture(scope="module")
def clm_data(tmp_path_factory, small_corpus, tokenizer_dir) -> Path:
    folder = tmp_path_factory.mktemp("plandata")
    preprocess(small_corpus, tokenizer_dir, folder / "d", "--append-eod")
    return folder / "d_text_document"


@pytest.mark.parametrize("zero", [0, 3])
def test_model_states_measured_on_two_cpu_ranks(tmp_path, clm_data, tokenizer_dir, zero):
    """fp32 on 2 ranks: the weights, gradients and Adam states each rank holds, counted in the live engine,
    without ZeRO (whole on each rank) and with ZeRO-3 (partitioned)."""
    from pretrain.tokenization import load_tokenizer

    found = probe("states", tmp_path, clm_data, tokenizer_dir, f"train.ds_config=zero{zero}")
    total = found[0]["total_parameters"]
    vocab = load_tokenizer(tokenizer_dir).vocab_size
    _, largest, small = parameter_sizes("tiny-gpt2", vocab)
    predicted, _ = model_states(total, largest, PlanInput("tiny-gpt2", zero_stage=zero, precision="fp32",
                                                          gpus_per_node=2), small)
    for rank in found:
        assert rank["zero_stage"] == zero
        held = predicted["parameters"] + predicted.get("persistent small parameters", 0)
        assert rank["parameters"] == pytest.approx(held, rel=0.05)
        assert rank["gradients"] == pytest.approx(predicted["gradients"], rel=0.05)
        assert rank["master"] + rank["moments"] == pytest.approx(predicted["optimizer"], rel=0.05)


def test_auto_plan_takes_zero3_where_nothing_else_fits_and_the_margin_holds(tmp_path, clm_data, tokenizer_dir):
    """With memory for ZeRO-3 but not for the whole model states, two CPU ranks run ZeRO-3; what they
    hold (measured) stays within the plan, and the plan within the memory less its margin."""
    from pretrain.tokenization import load_tokenizer

    vocab = load_tokenizer(tokenizer_dir).vocab_size
    base = PlanInput("tiny-gpt2", vocab_size=vocab, seq_len=64, micro_batch=1, precision="fp32", gpus_per_node=2)
    without = plan(replace(base, zero_stage=0, recompute_layers=2)).total
    with_zero3 = plan(replace(base, zero_stage=3)).total
    assert with_zero3 < without
    memory_gib = (with_zero3 + without) / 2 / 0.9 / GIB  # between the two, before the 10% margin
    found = probe("states", tmp_path, clm_data, tokenizer_dir, f"train.device_memory_gib={memory_gib}")
    for rank in found:
        assert rank["zero_stage"] == 3
        held = rank["parameters"] + rank["gradients"] + rank["master"] + rank["moments"]
        assert held <= rank["planned_gib"] * GIB <= 0.9 * memory_gib * GIB * (1 + 1e-9)


# DeepSpeed's ZeRO optimizers read the gradients' health back once per optimizer step (not per micro
# batch): whether any gradient overflowed (ZeRO-1/2, bf16's "check_grad_overflow", on by default so that
# a step with an inf is skipped, not applied) and whether the global norm is finite (every stage).
ZERO_STEP_CHECKS = ("runtime/zero/stage_1_and_2.py:", "deepspeed/runtime/utils.py:")


@pytest.mark.parametrize("ranks,overrides", [
    (1, ("train.precision=bf16",)),  # the default GPU configuration: fp32 weights under bf16 autocast, no ZeRO
    (1, ("train.precision=fp32",)),
    (2, ("train.precision=bf16", "train.ds_config=zero1")),
    (2, ("train.precision=bf16", "train.ds_config=zero2")),
    (2, ("train.precision=bf16", "train.ds_config=zero3")),
], ids=["bf16", "fp32", "zero1", "zero2", "zero3"])
def test_a_steady_state_step_never_waits_for_the_device(tmp_path, clm_data, tokenizer_dir, ranks, overrides):
    """The whole train_step (DeepSpeed engine, model, loss head, optimizer, clipping): nothing that would make
    the host wait for a GPU: no value read, no copy to the host, no data-dependent shape, no explicit
    synchronize (pretrain/host_sync.py; the GPU check repeats it under torch.cuda.set_sync_debug_mode). Under
    ZeRO, only DeepSpeed's own checks at the optimizer step, at most 4 of them."""
    found = probe("syncs", tmp_path, clm_data, tokenizer_dir, *overrides, ranks=ranks)
    if "zero" not in overrides[-1]:
        assert found == [[]] * ranks
        return
    for syncs in found:
        assert len(syncs) <= 4 and all(any(place in sync for place in ZERO_STEP_CHECKS) for sync in syncs), syncs


COMPILED = ("model.compile=true", "model.compile_backend=aot_eager")  # the blocks' graphs, kernels run eager: visible


@pytest.mark.parametrize("config,overrides", [
    ("tiny_llama", ()),  # packed documents masked from each other
    ("modernbert_tiny", ("optim.optimizer=stable_adamw", "train.ds_config=zero0")),  # as modernbert_base trains
    ("tiny_mlm", ()),  # BERT's masked batches, padded sentence pairs
    ("tiny_clm", COMPILED),  # the GPU default compiles the blocks (CompiledOrEager, its grad-mode bookkeeping)
    ("tiny_llama", COMPILED),
], ids=["llama", "modernbert", "bert", "gpt2-compiled", "llama-compiled"])
def test_each_familys_default_step_never_waits_for_the_device(tmp_path, clm_data, tokenizer_dir, config, overrides):
    """Llama, ModernBERT and BERT on their default GPU path (bf16 autocast, fp32 weights, no ZeRO; document masks,
    rotary positions, ModernBERT's unpadded masked batches and StableAdamW, BERT's padded pairs), and the blocks
    compiled as a GPU compiles them: no host sync in a step."""
    found = probe("syncs", tmp_path, clm_data, tokenizer_dir, "train.precision=bf16", *overrides, ranks=1,
                  config=config)
    assert found == [[]]


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


@pytest.mark.parametrize("preset,attention", [("tiny-gpt2", "sdpa"), ("tiny-gpt2", "eager"), ("tiny-bert", "sdpa")])
@pytest.mark.parametrize("recompute", [0, 1, 2])
@pytest.mark.parametrize("mode", ["fp32", "autocast", "half"])
def test_activation_memory_measured_on_cpu(preset, attention, recompute, mode):
    """Each precision mode (fp32; bf16 autocast over fp32 weights; bf16 weights), each attention kernel,
    no / selective / full recompute, on 4-layer tiny models."""
    from pretrain.model.build import set_recompute
    from pretrain.model.hf import create_uninitialized, hf_config, hf_model_class

    shape = dataclasses.replace(get_preset(preset), layers=4)
    family = shape.family
    model = create_uninitialized(hf_model_class(family, False), hf_config(shape, 1024, {}, attention=attention))
    if mode == "half":
        model = model.bfloat16()
    set_recompute(model, recompute)
    model.train()
    batch, seq = 4, 128
    ids = torch.randint(0, 1000, (batch, seq))

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
            trunk = model.transformer if family == "gpt2" else model.bert
            trunk(input_ids=ids).last_hidden_state.float().sum()

    measured = saved_activation_bytes(model, run)
    spec = PlanInput(preset, vocab_size=1000, seq_len=seq, micro_batch=batch, attention=attention,
                     recompute_layers=recompute, precision="fp32" if mode == "fp32" else "bf16",
                     zero_stage=0 if mode == "autocast" else 3)
    predicted = saved_in_forward(spec, family, 4, shape.hidden, shape.heads)
    if family == "bert" or attention == "eager":  # no padding here: no mask was built or kept
        predicted -= seq * batch * seq
    assert measured == pytest.approx(predicted, rel=0.1), (measured, predicted)


@pytest.mark.parametrize("attention,document_mask,head_size", [("sdpa", False, None), ("sdpa", True, None),
                                                                ("eager", False, None), ("sdpa", False, 32),
                                                                ("sdpa", True, 32), ("eager", False, 32)])
@pytest.mark.parametrize("recompute", [0, 1])
@pytest.mark.parametrize("mode", ["fp32", "autocast", "half"])
def test_llama_activation_memory_measured_on_cpu(attention, document_mask, head_size, recompute, mode):
    """The trainer's Llama forward (grouped-query attention, SwiGLU, RMSNorm; packed documents masked or not;
    heads of hidden / heads or, as a folder may have, wider: 4 of 32 on a 64-wide model), 4 layers, each
    precision mode: the bytes saved for backward by 4 more samples (so autocast's bf16 weight copies, counted
    with the model states, cancel) equal the planner's within 2%."""
    family, shape, model = four_layer_model("llama-tiny", {}, attention, mode, recompute, head_size=head_size)
    seq, saved = 128, {}
    for batch in (4, 8):
        ids = torch.randint(0, 1000, (batch, seq))
        positions = None
        if document_mask:  # three documents in every sample, cut at other places in every other sample
            positions = torch.arange(seq).repeat(batch, 1)
            positions[:, 50:] -= 50
            positions[::2, 90:] -= 40

        def run(ids=ids, positions=positions):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
                family.trunk(model, ids, positions).float().sum()

        saved[batch] = saved_activation_bytes(model, run)
    spec = PlanInput(shape, vocab_size=1000, seq_len=seq, micro_batch=4, attention=attention,
                     recompute_layers=recompute, precision="fp32" if mode == "fp32" else "bf16",
                     zero_stage=0 if mode == "autocast" else 3, document_mask=document_mask)
    predicted = saved_in_forward(spec, "llama", 4, shape.hidden, shape.heads)
    assert saved[8] - saved[4] == pytest.approx(predicted, rel=0.02), (saved, predicted)


def four_layer_model(preset: str, special_ids: dict, attention: str, mode: str, recompute: int, **dimensions):
    """(family, shape, model): the family's transformers model of ``preset`` at 4 layers (other ``dimensions``
    replaced too), uninitialized, in the precision ``mode`` gives its weights (bf16 for "half"), recomputing
    ``recompute`` blocks, training."""
    from pretrain.model.build import set_recompute
    from pretrain.model.families import get_family

    family = get_family(get_preset(preset).family)
    shape = dataclasses.replace(get_preset(preset), layers=4, **dimensions)
    model = create_uninitialized(family.model_class(), family.hf_config(shape, 1024, special_ids, attention=attention))
    if mode == "half":
        model = model.bfloat16()
    set_recompute(model, recompute)
    return family, shape, model.train()


@pytest.mark.parametrize("attention,document_mask", [("sdpa", False), ("sdpa", True), ("eager", False)])
@pytest.mark.parametrize("recompute", [0, 1])
@pytest.mark.parametrize("mode", ["fp32", "autocast", "half"])
def test_modernbert_activation_memory_measured_on_cpu(attention, document_mask, recompute, mode):
    """The trainer's ModernBERT forward (global and local layers, GeGLU, LayerNorm without bias) on padded
    batches longer than a local layer's reach, or on packed documents (unpadded), 4 layers, each precision
    mode: the bytes saved for backward by 4 more samples equal the planner's within 2%."""
    family, shape, model = four_layer_model("modernbert-tiny", {"pad": 0}, attention, mode, recompute)
    seq, saved = 128, {}
    for batch in (4, 8):
        ids = torch.randint(1, 1000, (batch, seq))
        mask = positions = None
        if document_mask:  # three documents in every sample, cut at other places in every other sample
            positions = torch.arange(seq).repeat(batch, 1)
            positions[:, 50:] -= 50
            positions[::2, 90:] -= 40
        else:
            mask = torch.ones(batch, seq, dtype=torch.long)
            mask[::2, seq // 2 :] = 0  # every other sample padded: the batch carries a mask, as MLM batches do

        def run(ids=ids, mask=mask, positions=positions):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
                family.trunk(model, ids, mask, positions).float().sum()

        saved[batch] = saved_activation_bytes(model, run)
    spec = PlanInput("modernbert-tiny", vocab_size=1000, seq_len=seq, micro_batch=4, attention=attention,
                     recompute_layers=recompute, precision="fp32" if mode == "fp32" else "bf16",
                     zero_stage=0 if mode == "autocast" else 3, document_mask=document_mask)
    predicted = saved_in_forward(spec, "modernbert", 4, shape.hidden, shape.heads)
    if not recompute:  # the planner counts the first block's attention norm, an identity, as a LayerNorm
        predicted -= 4 * seq * ((2 * shape.hidden + 4) if mode == "half" else (4 * shape.hidden + 8))
    assert saved[8] - saved[4] == pytest.approx(predicted, rel=0.02), (saved, predicted)


def test_largest_micro_batch_is_the_edge():
    spec = PlanInput("gpt2-medium", seq_len=1024, gpus_per_node=1, gpu_memory_gib=80)
    best = largest_micro_batch(spec)
    assert best > 0
    assert plan(replace(spec, micro_batch=best)).total <= 80 * GIB
    assert plan(replace(spec, micro_batch=best + 1)).total > 0.95 * 80 * GIB


def request(preset: str, memory_gib: float, world: int = 1, **fixed) -> PlanRequest:
    vocab = 50257 if preset.startswith("gpt2") else 30522
    seq = 1024 if preset.startswith("gpt2") else 512
    return PlanRequest(preset, vocab, seq, fixed.pop("global_batch", 512), world, min(world, 8), memory_gib * GIB,
                       predicted_per_sample=77 if preset.startswith("bert") else None, **fixed)


@pytest.mark.parametrize("preset", ["gpt2-small", "gpt2-medium", "gpt2-xl", "bert-base", "bert-large"])
def test_models_that_fit_one_80_gb_gpu_run_without_zero3_or_full_recompute(preset):
    chosen = choose_plan(request(preset, 80))
    assert chosen.zero_stage == 0 and chosen.recompute_layers < chosen.layers and chosen.fits
    assert chosen.micro_batch * chosen.accumulation == 512
    assert plan(PlanInput(preset, seq_len=1024 if "gpt2" in preset else 512, micro_batch=chosen.micro_batch,
                          zero_stage=0, recompute_layers=chosen.recompute_layers, gpus_per_node=1,
                          predicted_per_sample=77 if "bert" in preset else None)).total <= 0.9 * 80 * GIB


def test_a_model_too_big_for_whole_states_gets_zero3_and_says_why():
    chosen = choose_plan(request("gpt2-xl", 10, world=4))  # 1.56 B parameters: 9.8 GB of states even with ZeRO-2
    assert chosen.zero_stage == 3 and chosen.fits
    assert any(reason.startswith("ZeRO-0") for reason in chosen.rejected)
    assert any(reason.startswith("ZeRO-1") for reason in chosen.rejected)


def test_less_memory_buys_selective_recompute_before_full():
    chosen = choose_plan(request("gpt2-xl", 40))
    assert 0 < chosen.recompute_layers < chosen.layers and chosen.recompute.startswith("selective")


def test_explicit_choices_win_and_nothing_fitting_is_an_error():
    fixed = choose_plan(request("gpt2-small", 80, zero_stage=3, micro_batch=4, recompute="full"))
    assert (fixed.zero_stage, fixed.micro_batch, fixed.accumulation, fixed.recompute) == (3, 4, 128, "full")
    assert choose_plan(request("gpt2-small", 80, whole_stage_only=(0,), world=8)).zero_stage == 0  # LAMB
    assert choose_plan(request("gpt2-small", 80, zero_stage=0, world=8)).zero_stage == 0
    with pytest.raises(PlanError, match="no parallel plan fits 8.0 GiB .*zero3_offload"):
        choose_plan(request("gpt2-xl", 8))
    too_big = choose_plan(request("gpt2-xl", 8, zero_stage=0, micro_batch=16, recompute="none"))
    assert not too_big.fits  # fully fixed by the config: run as asked, the trainer warns


def test_config_keys_reach_the_plan(tmp_path):
    from pretrain.config import load_config
    from pretrain.parallel import request_from_config

    config = load_config("gpt2_xl", ["model.activation_checkpointing=selective", "model.checkpoint_layers=6",
                                     "train.ds_config=zero3_offload", "train.micro_batch=2"])
    made = request_from_config(config, 50257, 8, 8, 80 * GIB)
    assert (made.zero_stage, made.offload, made.micro_batch, made.recompute, made.recompute_layers) == (
        3, "all", 2, "selective", 6)
    with pytest.raises(PlanError, match="saved with ZeRO stage 0"):
        request_from_config(config, 50257, 8, 8, 80 * GIB, resumed_stage=0)
    assert request_from_config(load_config("gpt2_xl"), 50257, 8, 8, 80 * GIB, resumed_stage=1).zero_stage == 1
    assert ModelConfig(activation_checkpointing=True).activation_checkpointing == "full"


def test_plan_cli():
    proc = subprocess.run([sys.executable, "tools/plan.py", "--config", "gpt2_xl", "--gpus-per-node", "8", "--nodes", "2"],
                          cwd=ROOT, capture_output=True, text=True, env=train_env())
    assert proc.returncode == 0, proc.stderr
    assert "1,557.7M parameters" in proc.stdout and "plan: ZeRO-0, micro batch 8 x accumulation 4" in proc.stdout
    small = subprocess.run([sys.executable, "tools/plan.py", "--config", "gpt2_xl", "--gpus-per-node", "1",
                            "--gpu-memory", "8"], cwd=ROOT, capture_output=True, text=True, env=train_env())
    assert small.returncode == 2 and "no parallel plan fits" in small.stderr and "Traceback" not in small.stderr
    # any config key after the options, as the trainer takes it: here a smaller batch without the config's ramp
    smaller = [sys.executable, "tools/plan.py", "--config", "modernbert_base", "--global-batch", "512"]
    refused = subprocess.run(smaller, cwd=ROOT, capture_output=True, text=True, env=train_env())
    assert refused.returncode == 2 and "train.rampup_batch_size=null trains without a ramp" in refused.stderr
    cleared = subprocess.run(smaller + ["train.rampup_batch_size=null"], cwd=ROOT, capture_output=True, text=True,
                             env=train_env())
    assert cleared.returncode == 0, cleared.stderr
    assert "global batch 512" in cleared.stdout and "ramp-up" not in cleared.stdout


def test_a_run_continued_from_a_folder_is_planned_for_the_folders_model(tmp_path):
    """model.init_from: the plan and ZeRO-3's units are sized on the folder's model (its config.json), not on
    model.preset's shape: a 3B-shaped Llama folder under the llama_1b config is planned as 3B, its heads as
    wide as the folder says (32 heads of 128 on a 3,072-wide model, as the pruned Llama-3.1-Minitron-4B has)."""
    from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM

    from pretrain.config import load_config
    from pretrain.parallel import request_from_config

    folder = tmp_path / "released-3b"
    config = LlamaConfig(vocab_size=50048, hidden_size=3072, intermediate_size=8192, num_hidden_layers=26,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=4096,
                         tie_word_embeddings=True)
    config.save_pretrained(folder)  # the planner reads config.json only: no weights needed
    with torch.device("meta"):
        expected = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    run = load_config("llama_1b", [f"model.init_from={folder}"])
    request = request_from_config(run, 32000, 8, 8, 80 * GIB)
    assert request.vocab_size == 50048  # the folder's rows (a multiple of 64, as releases have), more than the tokenizer's
    assert (request.preset.head_dim, request.preset.attention_width) == (128, 4096)  # its FLOPs and activations
    assert parameter_sizes(request.preset, request.vocab_size, request.tie_embeddings)[0] == expected
    assert parameter_sizes(request_from_config(load_config("llama_1b"), 32000, 8, 8, 80 * GIB).preset,
                           32000)[0] == get_preset("llama-1b").published_params

    command = [sys.executable, "tools/plan.py", "--config", "llama_1b", "--gpus-per-node", "8"]
    proc = subprocess.run([*command, f"model.init_from={folder}"], cwd=ROOT, capture_output=True, text=True,
                          env=train_env())
    assert proc.returncode == 0, proc.stderr
    assert f"{expected / 1e6:,.1f}M parameters" in proc.stdout and str(folder) in proc.stdout
    deeper = subprocess.run([*command, f"model.init_from={folder}", "model.activation_checkpointing=selective",
                             "model.checkpoint_layers=26"], cwd=ROOT, capture_output=True, text=True, env=train_env())
    assert deeper.returncode == 0, deeper.stderr  # all 26 of the folder's layers (the preset has 22)
    GPT2Config(n_layer=2, n_embd=64, n_head=2).save_pretrained(tmp_path / "gpt2")
    for init_from, says, *more in ((tmp_path / "gpt2", "is a gpt2 model, but model.preset=llama-1b asks for the llama"),
                                   (tmp_path / "missing", "its config.json cannot be read"),
                                   (folder, "data.seq_len=8192 exceeds the 4096 positions", "data.seq_len=8192"),
                                   (folder, "model.checkpoint_layers=27 must be between 1 and the 26 layers",
                                    "model.activation_checkpointing=selective", "model.checkpoint_layers=27")):
        refused = subprocess.run([*command, f"model.init_from={init_from}", *more], cwd=ROOT, capture_output=True,
                                 text=True, env=train_env())
        assert refused.returncode == 2 and says in refused.stderr and "Traceback" not in refused.stderr


def test_gpt2_xl_on_one_80_gb_gpu_recomputes_nothing_with_the_gib_the_readme_quotes():
    """README, Pretraining: "gpt2-xl on one 80 GB GPU recomputes nothing"; Export: the lines of
    `tools/plan.py --config gpt2_xl --gpus-per-node 1 --gpu-memory 80` it quotes, GiB included."""
    from pretrain.config import load_config
    from pretrain.parallel import request_from_config

    chosen = choose_plan(request_from_config(load_config("gpt2_xl"), 50257, 1, 1, 80 * GIB))
    assert chosen.recompute_layers == 0 and chosen.recompute == "none" and chosen.zero_stage == 0 and chosen.fits
    printed = [f"plan: {chosen.summary()}"] + [f"  a faster plan does not fit: {reason}" for reason in chosen.rejected]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "gpt2-xl on one 80 GB GPU recomputes nothing" in " ".join(readme.split())
    after = readme.split("python tools/plan.py --config gpt2_xl --gpus-per-node 1 --gpu-memory 80\n", 1)[1]
    quoted = []
    for line in after.splitlines():
        if not line.startswith("# "):
            break
        quoted.append(line.removeprefix("# "))
    assert quoted[0] == printed[0] == ("plan: ZeRO-0, micro batch 8 x accumulation 64, recompute none: 51.7 GiB "
                                       "planned of 72.0 GiB usable")
    assert all(line in printed for line in quoted), (quoted, printed)
