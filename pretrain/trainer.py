"""The Trainer: one object that sets up the run, then ``train()`` -> ``train_step()`` / ``evaluate()``
/ ``save()``, resuming from ``run.dir`` when a checkpoint is there."""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import time
from pathlib import Path

import torch

from pretrain import checkpoint
from pretrain.checkpoint import TrainerState
from pretrain.config import Config, gradient_accumulation
from pretrain.data.builder import SplitSizes, build_datasets
from pretrain.data.sampler import PretrainingBatchSampler
from pretrain.distributed import DistEnv
from pretrain.engine import create_engine, deepspeed_config
from pretrain.metrics import MetricsWriter, memory_gib, peak_tflops, transformer_flops
from pretrain.model import build_model, count_parameters, parameter_groups
from pretrain.presets import get_preset
from pretrain.tokenization import load_tokenizer

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    pass


def compile_engine(engine, device: torch.device) -> None:
    """torch.compile through DeepSpeed (which keeps ZeRO-3's hooks working) on GPUs; said once."""
    if device.type != "cuda":
        log.info("model.compile is ignored on CPU (it pays off on GPUs only)")
        return
    try:
        engine.compile()
        log.info("model.compile: the model runs through torch.compile")
    except Exception as exc:  # noqa: BLE001 - any failure: run eager, and say why
        log.warning("torch.compile is unavailable (%s): running eager", str(exc).splitlines()[0][:160])


class Trainer:
    def __init__(self, config: Config, env: DistEnv) -> None:
        self.config, self.env = config, env
        self.run_dir = Path(config.run.dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.device = torch.device(f"cuda:{env.local_rank}" if torch.cuda.is_available() else "cpu")
        self.is_main = env.rank == 0
        self.stop_signal: int | None = None
        self.preset = get_preset(config.model.preset)
        torch.manual_seed(config.run.seed + env.rank)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (fp32 runs, upcast logits) on tensor cores
        if self.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # ranks share the cores: without this each would start one thread per core
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(env.local_world_size, 1)))

        self.tokenizer = load_tokenizer(config.data.tokenizer)
        self.ds_config = deepspeed_config(config, env.world_size, self.preset.hidden)
        self.state = TrainerState(world_size=env.world_size)
        resume_tag = checkpoint.latest_complete(self.checkpoint_dir) if self.checkpoint_dir.exists() else None
        if resume_tag and checkpoint.read_state(self.checkpoint_dir, resume_tag).world_size != env.world_size:
            resume_tag = checkpoint.prepare_universal(self.checkpoint_dir, resume_tag, env.rank)
            self.ds_config["checkpoint"] = {"load_universal": True}

        self.model = build_model(config, self.tokenizer, self.ds_config)
        self.parameters = count_parameters(self.model)
        local = sum(getattr(p, "ds_tensor", p).numel() for p in self.model.parameters())
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        log.info("rank %d on %s (launcher: %s) holds %s of %s parameters", env.rank, node, env.launcher, f"{local:,}",
                 f"{self.parameters:,}")
        groups = parameter_groups(self.model, config.optim.weight_decay)
        self.engine, self.scheduler = create_engine(self.model, groups, config, self.ds_config, self.device.type == "cuda")
        if config.model.compile:
            compile_engine(self.engine, self.device)
        if resume_tag:
            checkpoint.load(self.engine, self.checkpoint_dir, resume_tag, env.rank, [g["weight_decay"] for g in groups])
            self.state = checkpoint.read_state(self.checkpoint_dir, resume_tag)
            self.state.world_size = env.world_size
            log.info("resumed from %s: step %d, %d samples consumed", resume_tag, self.state.step,
                     self.state.consumed_samples)

        self.accumulation = gradient_accumulation(config, env.world_size)
        block = config.train.micro_batch * env.world_size
        eval_samples = math.ceil(config.train.eval_samples / block) * block
        datasets = build_datasets(config, self.tokenizer, SplitSizes(config.train.steps * config.train.global_batch,
                                                                      eval_samples, 0), may_build_index=env.local_rank == 0)
        self.train_data, self.valid_data = datasets["train"], datasets["valid"]
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        self.metrics = MetricsWriter(self.run_dir, self.is_main, config.run.tensorboard)
        self.metrics.truncate_after(self.state.step)
        self.peak = peak_tflops(config.train.peak_tflops)
        tokens = config.train.global_batch * config.data.seq_len
        head_tokens = round(tokens * config.data.mask_prob) if self.preset.objective == "mlm" else None
        self.flops_per_step = transformer_flops(self.preset.layers, self.preset.hidden, config.data.seq_len,
                                                self.model.hf.config.vocab_size, tokens,
                                                config.model.activation_checkpointing, head_tokens)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(config.to_yaml())
            self.tokenizer.save(self.run_dir / "tokenizer")
            self.model.hf.config.architectures = [type(self.model.hf).__name__]
            self.model.hf.config.save_pretrained(self.run_dir / "model")  # what export rebuilds

    # ------------------------------------------------------------------------------------ loop
    def train(self) -> TrainerState:
        train = self.config.train
        for signum in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        batches = iter(self._loader(self.train_data, self.state.consumed_samples))
        self._launch = (time.perf_counter(), self.state.step)
        window_start, window_steps = time.perf_counter(), 0
        saved_at = self.state.step
        if self.state.step == 0:
            self.evaluate()  # the untrained baseline: a fresh model should be near ln(vocabulary)
        while self.state.step < train.steps:
            record = self.train_step(batches)
            window_steps += 1
            step = self.state.step
            if step % train.log_interval == 0 or step == train.steps:
                elapsed = time.perf_counter() - window_start
                self._log(record, elapsed / window_steps)
                window_start, window_steps = time.perf_counter(), 0
            if step % train.eval_interval == 0 or step == train.steps:
                self.evaluate()
            stop = record.pop("stop")
            if step % train.save_interval == 0 or step == train.steps or stop:
                self.save()
                saved_at = step
            if stop:
                log.info("stopping at step %d (%s); the next launch resumes from here", step, stop)
                break
        if saved_at != self.state.step:
            self.save()
        self.metrics.close()
        return self.state

    def train_step(self, batches) -> dict:
        """One optimizer step: ``accumulation`` micro-batches forward and backward, then the update.

        One all-reduce per step carries the loss and every rank's reasons to stop, so all ranks
        agree on both."""
        losses = []
        for _ in range(self.accumulation):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in next(batches).items()}
            loss, _ = self.engine(batch)
            self.engine.backward(loss)
            self.engine.step()
            losses.append(loss.detach().float())
        shared = torch.cat([torch.stack(losses).mean().reshape(1), self._stop_flags()])
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(shared)
        loss = float(shared[0]) / self.env.world_size
        grad_norm = self.engine.get_global_grad_norm()
        grad_norm = None if grad_norm is None else float(grad_norm)
        self.state.step += 1
        self.state.consumed_samples += self.config.train.global_batch
        self._check_finite(loss, grad_norm)
        reasons = ("a signal or run.dir/STOP", "train.exit_interval", "train.exit_minutes")
        stop = next((reason for reason, flag in zip(reasons, shared[1:]) if flag > 0), None)
        return {"step": self.state.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                "stop": stop}

    def _stop_flags(self) -> torch.Tensor:
        """This rank's reasons to stop after the step in progress: a signal, or the launch's limits."""
        train = self.config.train
        started, first_step = self._launch
        steps = self.state.step + 1 - first_step
        asked = self.stop_signal is not None or (self.run_dir / "STOP").exists()
        flags = [asked, bool(train.exit_interval) and steps >= train.exit_interval,
                 bool(train.exit_minutes) and time.perf_counter() - started >= train.exit_minutes * 60]
        return torch.tensor([float(f) for f in flags], device=self.device)

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.engine.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        for batch in self._loader(self.valid_data, 0, workers=0):
            batch = {k: v.to(self.device) for k, v in batch.items()}
            loss, count = self.engine(batch)
            total += torch.stack([loss.double() * count, count.double()])
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)
        self.engine.train()
        eval_loss = float(total[0] / total[1].clamp(min=1))
        record = {"step": self.state.step, "eval_loss": eval_loss, "eval_ppl": math.exp(min(eval_loss, 50.0))}
        if self.is_main:
            log.info("step %d | eval loss %.4f | eval ppl %.2f", self.state.step, eval_loss, record["eval_ppl"])
        self.metrics.write(record)
        return record

    def save(self) -> None:
        tag = checkpoint.save(self.engine, self.checkpoint_dir, self.state, self.config.to_yaml(),
                              self.config.train.keep_last)
        if self.is_main:
            log.info("saved checkpoint %s", self.checkpoint_dir / tag)

    # --------------------------------------------------------------------------------- helpers
    def _loader(self, dataset, consumed: int, workers: int | None = None) -> torch.utils.data.DataLoader:
        sampler = PretrainingBatchSampler(len(dataset), consumed, self.config.train.micro_batch, self.env.rank,
                                          self.env.world_size)
        workers = self.config.data.num_workers if workers is None else workers
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                           pin_memory=self.device.type == "cuda", persistent_workers=False)

    def _check_finite(self, loss: float, grad_norm: float | None) -> None:
        if math.isfinite(loss) and (grad_norm is None or math.isfinite(grad_norm)):
            self.state.nonfinite_streak = 0
            return
        self.state.nonfinite_streak += 1
        limit = self.config.train.max_nonfinite_steps
        log.warning("step %d: loss %s, gradient norm %s are not finite (%d in a row, stopping at %d)",
                    self.state.step, loss, grad_norm, self.state.nonfinite_streak, limit)
        if self.state.nonfinite_streak >= limit:
            latest = checkpoint.latest_complete(self.checkpoint_dir) if self.checkpoint_dir.exists() else None
            raise TrainingDiverged(
                f"the loss or gradient was not finite for {limit} steps in a row (last: step {self.state.step}, "
                f"loss {loss}). Lower optim.lr, raise optim.warmup_steps, use bf16 instead of fp16, or check the "
                f"data. The last good checkpoint is {latest or 'none'}; nothing after it was saved.")

    def _log(self, record: dict, seconds_per_step: float) -> None:
        train, data = self.config.train, self.config.data
        tflops = self.flops_per_step / seconds_per_step / self.env.world_size / 1e12
        record.update(tokens_per_s=train.global_batch * data.seq_len / seconds_per_step,
                      samples_per_s=train.global_batch / seconds_per_step, tflops_per_device=tflops,
                      mfu=tflops / self.peak, memory_gib=memory_gib(), step_time_s=seconds_per_step)
        if self.is_main:
            log.info("step %d/%d | loss %.4f | lr %.3g | grad norm %s | %s tok/s | %.3g TFLOP/s | MFU %.2f%% | "
                     "mem %.2f GiB", record["step"], train.steps, record["loss"], record["lr"],
                     "-" if record["grad_norm"] is None else f"{record['grad_norm']:.3f}",
                     f"{record['tokens_per_s']:,.0f}", tflops, 100 * record["mfu"], record["memory_gib"])
        self.metrics.write(record)

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum
        log.warning("received signal %d: saving a checkpoint after this step, then exiting", signum)
