"""The Trainer: set up the run in named steps, then ``train()`` -> ``train_step()`` / ``evaluate()`` /
``save()``, resuming from ``run.dir`` when a checkpoint is there."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import socket
import time
from pathlib import Path

import torch

from pretrain import checkpoint
from pretrain.atomic import atomic_write_text
from pretrain.checkpoint import TrainerState
from pretrain.config import Config, ModelConfig, data_prefixes
from pretrain.data.builder import SplitSizes, build_datasets
from pretrain.data.collate import collate
from pretrain.data.health import changed_files, next_batch
from pretrain.data.masking import max_predictions
from pretrain.data.sampler import PretrainingBatchSampler
from pretrain.distributed import DistEnv
from pretrain.engine import clips_in_optimizer, create_engine, decay_begun_before, deepspeed_config, follow_schedule_after_resume
from pretrain.evaluation.sources import SourceEvaluation, source_names
from pretrain.evaluation.token_bytes import token_byte_lengths
from pretrain.metrics import MetricsWriter, memory_gib, peak_tflops
from pretrain.model import build_model, count_parameters, parameter_groups
from pretrain.model.hf import keep_generation_config
from pretrain.parallel import choose_plan, device_memory_bytes, request_from_config
from pretrain.planner import parameter_sizes
from pretrain.plots import RedrawSchedule, write_run_plots
from pretrain.presets import get_preset
from pretrain.run_summary import build_summary, resume_command, summary_lines, write_summary
from pretrain.run_tokenizer import load_run_tokenizer
from pretrain.step_tracking import StepStats, ThroughputWindow, finite
from pretrain.tokenization import warn_if_another_vocabulary

log = logging.getLogger(__name__)
STOP_REASONS = ("a signal", "run.dir/STOP", "train.exit_minutes")
STOPPED = "STOPPED"  # RUN_DIR/STOPPED: a launch stopped early, its checkpoint saved (why: slurm/train.sbatch reads it)


class TrainingDiverged(RuntimeError):
    pass


def optimizer_step(engine, micro_batches: list[dict], device: torch.device,
                   world_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimizer step: each micro batch forward and backward, then the update.

    Every labelled token of the step weighs the same, whichever micro batch and rank it falls in (masked
    LM batches hold different numbers): each micro batch's mean loss is scaled by its share of the step's
    tokens, counted on the host (``num_labels``, from the loader) and summed over ranks on the device, so
    the step's gradient and loss do not depend on how the global batch is split. Returns this rank's
    share of the step's mean loss and the gradient norm as device tensors: nothing is read back to the
    host here, so the next step is queued while this one runs."""
    labelled = [batch.pop("num_labels") for batch in micro_batches]  # plain ints: no device sync
    step_labels = torch.full((), float(sum(labelled)), device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(step_labels)
    step_labels = step_labels.clamp(min=1)
    undo_averaging = len(micro_batches) * world_size  # DeepSpeed divides by accumulation and averages over ranks
    share = torch.zeros((), device=device)
    for index, (batch, count) in enumerate(zip(micro_batches, labelled)):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        # the step ends at its last micro batch, whatever DeepSpeed's running count of micro steps says: with a
        # batch ramp-up the number per step changes, and its count modulo the accumulation would misplace it
        engine.set_gradient_accumulation_boundary(index == len(micro_batches) - 1)
        loss, _ = engine(batch)
        weight = count / step_labels
        engine.backward(loss * weight * undo_averaging)
        engine.step()
        share += loss.detach().float() * weight
    norm = engine.get_global_grad_norm()
    if norm is not None and not torch.is_tensor(norm):
        norm = torch.full((), float(norm), device=device)
    return share, norm


class Trainer:
    def __init__(self, config: Config, env: DistEnv) -> None:
        self.config, self.env = config, env
        self._started = time.perf_counter()
        self.run_dir = Path(config.run.dir)
        self._plot_schedule = RedrawSchedule(60 * config.run.plot_interval_minutes)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.is_main = env.rank == 0
        self.preset = get_preset(config.model.preset)
        self.stop_signal: int | None = None
        self._setup_device()
        self.state, resume_tag = self._find_checkpoint()
        self.tokenizer = load_run_tokenizer(config)  # after the checkpoint search: it decides the roles
        self.model_config = self._model_config()
        self._plan_parallelism()
        resume_tag = self._prepare_resume(resume_tag)
        self._build_model_and_engine()
        self._resume(resume_tag)
        self._build_datasets()
        self._setup_metrics()
        self._write_run_files()
        self._launch = (time.perf_counter(), self.state.step)  # train() restarts the clock
        self._wall_before = self.state.wall_seconds  # of the launches before this one

    # ----------------------------------------------------------------------------------- setup
    def _setup_device(self) -> None:
        self.device = torch.device(f"cuda:{self.env.local_rank}" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(self.config.run.seed + self.env.rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (fp32 runs) on tensor cores
        elif "OMP_NUM_THREADS" not in os.environ:
            # ranks share the cores: without this each would start one thread per core
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(self.env.local_world_size, 1)))

    def _find_checkpoint(self) -> tuple[TrainerState, str | None]:
        """The newest complete checkpoint whose files match its manifest (or run.resume_from's)."""
        tag = checkpoint.find_resumable(self.checkpoint_dir, self.env.rank, self.env.world_size,
                                        self.config.run.resume_from)
        state = checkpoint.read_state(self.checkpoint_dir, tag) if tag else TrainerState()
        if tag and tag == self.config.run.resume_from:  # every later save remembers the branch: taken once
            state.branched_from = tag
            late = decay_begun_before(self.config.optim, self.config.train.steps, state.step)
            if late and self.is_main:
                log.warning("%s", late)
        return state, tag

    def _model_config(self) -> ModelConfig:
        """The model section the launch builds from. model.init_from names the folder the first launch loaded;
        a resumed launch takes every weight from its checkpoint, so it builds the architecture from the run's
        own copy of that folder's config (RUN_DIR/model, the embedding as grown) and never reads the folder
        again: it may have moved, or be a hub name offline."""
        model = self.config.model
        saved = self.run_dir / "model" / "config.json"
        if not (self.state.step and model.init_from and saved.exists()):
            return model
        log.info("resuming: the model is built from %s (model.init_from=%s was read by the first launch)",
                 saved.parent, model.init_from)
        return dataclasses.replace(model, init_from=str(saved.parent))

    def _plan_parallelism(self) -> None:
        """ZeRO stage, micro batch, accumulation and recompute: the config's where it sets them, else the
        fastest that fits (a resumed run keeps the stage its checkpoint was saved with)."""
        config, env = self.config, self.env
        resumed_stage = self.state.zero_stage if self.state.step else None
        request = request_from_config(dataclasses.replace(config, model=self.model_config), self.tokenizer.vocab_size,
                                      env.world_size, env.local_world_size,
                                      device_memory_bytes(config.train.device_memory_gib, self.device,
                                                          env.local_world_size), resumed_stage,
                                      self.state.consumed_samples)
        self.plan = choose_plan(request)
        if self.is_main:
            log.info("parallel plan: %s", self.plan.summary())
            for reason in self.plan.rejected:
                log.info("  a faster plan does not fit: %s", reason)
            if not self.plan.fits:
                log.warning("the configured plan needs %.1f GiB per device, more than the %.1f GiB usable: it may "
                            "run out of memory", self.plan.planned_bytes / 2**30, self.plan.budget_bytes / 2**30)
        _, block, _ = parameter_sizes(request.preset, request.vocab_size, request.tie_embeddings)
        self.ds_config = deepspeed_config(config.train, config.optim, self.plan, block)
        self.state.zero_stage = self.plan.zero_stage

    def _prepare_resume(self, tag: str | None) -> str | None:
        """A ZeRO checkpoint saved on another number of ranks is converted to the universal format first
        (without ZeRO every rank saved the same whole states, which load on any number)."""
        if tag and self.state.world_size != self.env.world_size and self.plan.zero_stage > 0:
            tag = checkpoint.prepare_universal(self.checkpoint_dir, tag, self.env.rank)
            self.ds_config["checkpoint"] = {"load_universal": True}
        self.state.world_size = self.env.world_size
        return tag

    def _build_model_and_engine(self) -> None:
        config, on_gpu = self.config, self.device.type == "cuda"
        # "auto" compiles on GPUs only (on CPUs it costs more than it saves); an explicit true compiles on CPUs
        # too, which is how CI runs the compiled blocks before any GPU does
        compile_blocks = on_gpu if config.model.compile == "auto" else bool(config.model.compile)
        self.model = build_model(self.model_config, self.tokenizer.vocab_size, self.tokenizer.model_ids,
                                 sentence_order=config.data.sentence_order_prediction, seed=config.run.seed,
                                 ds_config=self.ds_config, recompute_layers=self.plan.recompute_layers,
                                 compile_blocks=compile_blocks, on_gpu=on_gpu,
                                 document_mask=bool(config.data.document_mask),
                                 load_weights=not self.state.step)  # a resumed launch's come from its checkpoint
        self.parameters = count_parameters(self.model)
        local = sum(getattr(p, "ds_tensor", p).numel() for p in self.model.parameters())
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        log.info("rank %d on %s (launcher: %s) holds %s of %s parameters", self.env.rank, node, self.env.launcher,
                 f"{local:,}", f"{self.parameters:,}")
        groups = parameter_groups(self.model, config.optim.weight_decay)
        self.weight_decays = [group["weight_decay"] for group in groups]
        self.engine, self.scheduler = create_engine(self.model, groups, config.optim, config.train.steps, self.ds_config,
                                                    on_gpu, clips_in_optimizer(self.plan, config.train.precision))

    def _resume(self, tag: str | None) -> None:
        if not tag:
            return
        checkpoint.load(self.engine, self.checkpoint_dir, tag, self.env.rank, self.weight_decays)
        before, lr = follow_schedule_after_resume(self.scheduler, self.config.optim, self.config.train.steps)
        if self.is_main and abs(lr - before) > 0.05 * before:  # train.steps, optim.lr or the schedule changed
            log.warning("the learning rate at step %d goes from %.3g (the checkpoint's schedule) to %.3g (this "
                        "launch's train.steps=%d and optim settings)%s", self.state.step, before, lr,
                        self.config.train.steps, ": a decay already done rises again" if lr > before else "")
        log.info("resumed from %s: step %d, %d samples consumed", tag, self.state.step, self.state.consumed_samples)

    def _build_datasets(self) -> None:
        config = self.config
        # exactly eval_samples, whatever the micro batch and ranks: the same set at every evaluation and
        # after a resume on another number of ranks (a rank left short runs a stand-in batch)
        sizes = SplitSizes(config.train.samples_for(config.train.steps), config.train.eval_samples, 0)
        datasets = build_datasets(config.data, self.tokenizer, self.preset.objective, config.run.seed, sizes,
                                  may_build_index=self.env.local_rank == 0)
        self.train_data, self.valid_data = datasets["train"], datasets["valid"]
        if torch.distributed.is_initialized():
            torch.distributed.barrier()

    def _setup_metrics(self) -> None:
        config = self.config
        self.metrics = MetricsWriter(self.run_dir, self.is_main, config.run.tensorboard, config.run.wandb,
                                     config.to_dict())
        self.metrics.truncate_after(self.state.step)
        self.peak = peak_tflops(config.train.peak_tflops)
        tokens = config.train.global_batch * config.data.seq_len
        # the built model's shape (a model.init_from folder's own), counted by its family (GQA, gated MLPs)
        shape, vocab, family = self.model.shape, self.model.hf.config.vocab_size, self.model.family
        head_rows = None  # CLM: every token; MLM: the fixed number of predicted positions per sample
        if self.preset.objective == "mlm":
            head_rows = config.train.global_batch * max_predictions(config.data.seq_len, config.data.mask_prob,
                                                                     packed=bool(config.data.document_mask))
        self.model_flops = family.flops(shape, config.data.seq_len, vocab, tokens, 0, head_rows)
        self.hardware_flops = family.flops(shape, config.data.seq_len, vocab, tokens, self.plan.recompute_layers,
                                           head_rows)

    def _write_run_files(self) -> None:
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / STOPPED).unlink(missing_ok=True)  # an earlier launch's: this one goes on
        (self.run_dir / "config.yaml").write_text(self.config.to_yaml())
        self.tokenizer.save(self.run_dir / "tokenizer")
        self.model.hf.config.architectures = [type(self.model.hf).__name__]
        model_dir = self.run_dir / "model"  # what export rebuilds, and a resumed launch of a continued release
        model_dir.mkdir(exist_ok=True)
        atomic_write_text(model_dir / "config.json", self.model.hf.config.to_json_string())
        if not self.state.step:  # a first launch: a generation config is the release's (model.init_from) or none
            (model_dir / "generation_config.json").unlink(missing_ok=True)
            if self.config.model.init_from:
                log.info("continued pretraining: the weights of model.init_from=%s loaded (%s, embedding of %d rows)",
                         self.config.model.init_from, type(self.model.hf).__name__, self.model.hf.config.vocab_size)
                keep_generation_config(self.config.model.init_from, model_dir)  # its sampling defaults, stop tokens
                warn_if_another_vocabulary(self.tokenizer, self.config.model.init_from)

    # ------------------------------------------------------------------------------------ loop
    def train(self) -> TrainerState:
        """Train to train.steps or until a stop; SIGUSR1, SIGTERM and a first Ctrl-C (SIGINT) ask for a stop
        meanwhile (a second Ctrl-C quits at once). Their handlers are put back afterwards, which also lets this
        trainer (and its engine's process groups) be freed."""
        previous = {signum: signal.signal(signum, self._on_signal)
                    for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)}
        try:
            return self._train()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _train(self) -> TrainerState:
        train = self.config.train
        batches = iter(self._loader(self.train_data, self.state.consumed_samples))
        self._launch = (time.perf_counter(), self.state.step)
        stats, window = StepStats(self.device, self.env.world_size), ThroughputWindow(self.device)
        saved_at, stop = self.state.step, None
        if self.state.step == 0:
            self.evaluate()  # the untrained baseline: a fresh model should be near ln(vocabulary)
        while self.state.step < train.steps:
            global_batch = train.global_batch_at(self.state.consumed_samples)  # the same after a resume
            loss, grad_norm = self.train_step(batches, global_batch)
            self.state.step += 1
            self.state.consumed_samples += global_batch
            window.count_step(global_batch)
            window.open()  # after the launch's first step: compilation and warm-up stay out of tokens/s
            stats.push(self.state.step, loss, grad_norm)
            step = self.state.step
            is_log = step % train.log_interval == 0 or step == train.steps
            for numbers in stats.collect(keep_last=0 if is_log else 1):  # one step late, all at log steps
                self._check_finite(numbers)
                if is_log and numbers.step == step:
                    self._log(numbers, window.lap(), global_batch)
            stop = self._stop_reason()
            if step % train.eval_interval == 0 or step == train.steps:
                window.pause()
                self.evaluate()
            if step % train.save_interval == 0 or step == train.steps or stop:
                window.pause()
                self.save()
                saved_at = step
            window.open()
            if stop:
                log.info("stopping at step %d (%s); the next launch resumes from here", step, stop)
                self._consume_stop_file(stop)
                break
        for numbers in stats.collect(keep_last=0):
            self._check_finite(numbers)
        if saved_at != self.state.step:
            self.save()
        self._finish("finished" if self.state.step >= train.steps else f"stopped early ({stop})")
        return self.state

    def _finish(self, status: str) -> None:
        """Last plots, the run summary (printed and in summary.json), metrics closed; RUN_DIR/STOPPED says why a
        launch stopped early (a launcher may report its exit 75 as 1: torchrun)."""
        if self.is_main:
            if status != "finished":
                atomic_write_text(self.run_dir / STOPPED, f"{status}\n")
            self._plot(final=True)
            env = self.env
            summary = build_summary(
                self.run_dir, status=status, step=self.state.step, steps=self.config.train.steps,
                tokens_seen=self.state.consumed_samples * self.config.data.seq_len, wall_seconds=self._wall_time(),
                launch_seconds=time.perf_counter() - self._started,
                checkpoint=str(self.checkpoint_dir / checkpoint.tag_for(self.state.step)),
                resume=resume_command(self.run_dir.resolve() / "config.yaml", env.world_size, env.local_world_size,
                                      env.launcher))
            write_summary(self.run_dir, summary)
            for line in summary_lines(summary):
                log.info("%s", line)
        self.metrics.close()

    def _plot(self, final: bool = False) -> None:
        if not (self.is_main and self.config.run.plots):
            return
        if not self._plot_schedule.due(final):
            return
        try:
            write_run_plots(self.run_dir)
        except Exception as exc:  # noqa: BLE001 - a picture must never stop a run
            log.warning("could not draw the plots in %s: %s", self.run_dir / "plots", exc)

    def _wall_time(self) -> float:
        return self._wall_before + time.perf_counter() - self._started

    def train_step(self, batches, global_batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimizer step of ``global_batch`` samples (default train.global_batch; less on a batch
        ramp-up): this rank's share of them in micro batches (see ``optimizer_step``)."""
        global_batch = global_batch or self.config.train.global_batch
        if global_batch != self.engine.train_batch_size():  # DeepSpeed scales the loss by its accumulation
            self.engine.set_train_batch_size(global_batch)
        accumulation = global_batch // (self.plan.micro_batch * self.env.world_size)
        micro_batches = [next_batch(batches, [self.train_data]) for _ in range(accumulation)]
        return optimizer_step(self.engine, micro_batches, self.device, self.env.world_size)

    def _stop_reason(self) -> str | None:
        """Why to stop after this step, the same on every rank: the launch's step limit is counted locally;
        signals, run.dir/STOP and the time limit are agreed on every train.stop_check_interval steps."""
        train = self.config.train
        started, first_step = self._launch
        if train.exit_interval and self.state.step - first_step >= train.exit_interval:
            return "train.exit_interval"
        if self.state.step % train.stop_check_interval:
            return None
        signalled, asked = self.stop_signal is not None, (self.run_dir / "STOP").exists()
        late = bool(train.exit_minutes) and time.perf_counter() - started >= train.exit_minutes * 60
        flags = torch.tensor([float(signalled), float(asked), float(late)], device=self.device)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        return next((reason for reason, flag in zip(STOP_REASONS, flags.tolist()) if flag > 0), None)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Loss on the valid split, and per blend source its loss and (causal LMs) bits per byte
        (pretrain/evaluation/sources.py): sums on the device, read back once at the end."""
        self.engine.eval()
        sources = self._eval_sources
        sums = sources.zeros()
        for described, batch in sources.loader():
            batch = {k: v.to(self.device) for k, v in batch.items() if k != "num_labels"}
            loss, count = self.engine(batch)
            sources.add(sums, described, batch, loss, count)
        figures = sources.figures(sums)
        self.engine.train()
        record = {"step": self.state.step, "tokens": self._tokens_seen(), **figures}
        if self.is_main:
            for line in sources.describe(figures):
                log.info("step %d | %s", self.state.step, line)
        self.metrics.write(record)
        if self.state.step < self.config.train.steps:  # the last evaluation is drawn once, by _finish
            self._plot()
        return record

    @functools.cached_property
    def _eval_sources(self) -> SourceEvaluation:
        """Built at the first evaluation: the sources' names, this rank's batches, the byte table."""
        names = source_names([prefix for prefix, _ in data_prefixes(self.config.data)])
        return SourceEvaluation(self.valid_data, names, token_byte_lengths(self.tokenizer), self.plan.micro_batch,
                                self.env.rank, self.env.world_size, self.device)

    def _tokens_seen(self) -> int:
        return self.state.consumed_samples * self.config.data.seq_len

    def save(self) -> None:
        if self.is_main:
            for change in changed_files([self.train_data, self.valid_data]):
                log.warning("%s while this run reads it: this launch goes on with the copy it opened, but a relaunch "
                            "would not find it. Restore the file.", change)
        self.state.wall_seconds = self._wall_time()
        tag = checkpoint.save(self.engine, self.checkpoint_dir, self.state, self.config.to_yaml(),
                              self.config.train.keep_last)
        if self.is_main:
            log.info("saved checkpoint %s", self.checkpoint_dir / tag)

    # --------------------------------------------------------------------------------- helpers
    def _loader(self, dataset, consumed: int, workers: int | None = None) -> torch.utils.data.DataLoader:
        sampler = PretrainingBatchSampler(len(dataset), consumed, self.plan.micro_batch, self.env.rank,
                                          self.env.world_size)
        workers = self.config.data.num_workers if workers is None else workers
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                                           pin_memory=self.device.type == "cuda", persistent_workers=False,
                                           worker_init_fn=_ignore_ctrl_c if workers else None)

    def _check_finite(self, numbers) -> None:
        if finite(numbers):
            self.state.nonfinite_streak = 0
            return
        self.state.nonfinite_streak += 1
        limit = self.config.train.max_nonfinite_steps
        log.warning("step %d: loss %s, gradient norm %s are not finite (%d in a row, stopping at %d)",
                    numbers.step, numbers.loss, numbers.grad_norm, self.state.nonfinite_streak, limit)
        if self.state.nonfinite_streak >= limit:
            latest = checkpoint.latest_complete(self.checkpoint_dir) if self.checkpoint_dir.exists() else None
            self._plot(final=True)  # the curve that diverged: the process ends without _finish
            raise TrainingDiverged(
                f"the loss or gradient was not finite for {limit} steps in a row (last: step {numbers.step}, "
                f"loss {numbers.loss}). Lower optim.lr, raise optim.warmup_steps, use bf16 instead of fp16, or check "
                f"the data. The last good checkpoint is {latest or 'none'}; nothing after it was saved.")

    def _log(self, numbers, lap: tuple[float, float] | None, global_batch: int) -> None:
        """Log step ``numbers`` (the step just taken, of ``global_batch`` samples), with the throughput of the
        steps timed since the last log (``lap``: seconds per step, samples per second; None until a step after
        the launch's first has been timed). FLOPs are counted per sample, so a batch ramp-up's steps count right."""
        train, data = self.config.train, self.config.data
        record = {"step": numbers.step, "tokens": self._tokens_seen(), "loss": numbers.loss,
                  "lr": self.scheduler.get_last_lr()[0], "grad_norm": numbers.grad_norm}
        if train.rampup_batch_size:
            record["global_batch"] = global_batch
        if lap:
            seconds_per_step, samples_per_s = lap
            per_device = samples_per_s / self.env.world_size / 1e12  # times FLOPs per sample: TFLOP/s per device
            tflops = self.model_flops / train.global_batch * per_device  # model_flops: a whole global batch's
            record.update(tokens_per_s=samples_per_s * data.seq_len, samples_per_s=samples_per_s,
                          tflops_per_device=tflops, mfu=tflops / self.peak,
                          hfu=self.hardware_flops / train.global_batch * per_device / self.peak,
                          step_time_s=seconds_per_step)
        record["memory_gib"] = memory_gib()
        if self.is_main:
            speed = (f"{record['tokens_per_s']:,.0f} tok/s | {record['tflops_per_device']:.3g} TFLOP/s | MFU "
                     f"{100 * record['mfu']:.2f}% | HFU {100 * record['hfu']:.2f}%" if "mfu" in record
                     else "speed: measured from the next steps")  # a launch's first steps compile and warm up
            ramp = f" | batch {global_batch}" if train.rampup_batch_size else ""
            log.info("step %d/%d | loss %.4f | lr %.3g | grad norm %s | %s | mem %.2f GiB%s", numbers.step, train.steps,
                     numbers.loss, record["lr"], "-" if numbers.grad_norm is None else f"{numbers.grad_norm:.3f}",
                     speed, record["memory_gib"], ramp)
        self.metrics.write(record)

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.stop_signal == signal.SIGINT:  # a second Ctrl-C: quit now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.stop_signal = signum
        again = " (Ctrl-C again quits at once, losing the steps since the last checkpoint)" \
            if signum == signal.SIGINT else ""
        log.warning("received signal %d: saving a checkpoint within %d steps, then exiting%s", signum,
                    self.config.train.stop_check_interval, again)

    def _consume_stop_file(self, reason: str) -> None:
        """A stop asked for with run.dir/STOP is done once its checkpoint is saved: the file goes, so that the
        next launch trains on instead of stopping again at its first check."""
        if reason == "run.dir/STOP" and self.is_main:
            (self.run_dir / "STOP").unlink(missing_ok=True)
            log.info("removed %s: the next launch trains on", self.run_dir / "STOP")


def _ignore_ctrl_c(worker_id: int) -> None:
    """A data-loader worker leaves Ctrl-C to its rank (a terminal sends it to the whole process group): the rank
    saves and stops, then ends its workers; a worker that took it too would log it again or die mid-batch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
