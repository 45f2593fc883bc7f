"""The one training loop every task uses.

DDP (gloo on CPU, nccl on CUDA), gradient accumulation with a last partial window, AMP, clipping,
transformers schedulers, adversarial training, evaluation on all ranks with gathered predictions,
best/last/periodic checkpoints, exact resume. The task supplies data, model and metrics.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from loguru import logger
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from bertorch import checkpoint as ckpt
from bertorch import distributed as D
from bertorch.adversarial import build_adversary
from bertorch.data.batching import eval_shard
from bertorch.ema import WeightEMA
from bertorch.hardware import emulated_bf16_cpu
from bertorch.errors import UsageError
from bertorch.losses.rdrop import doubled_batch, symmetric_kl
from bertorch.logging import MetricsWriter, format_metrics, plot_curves, progress_bar
from bertorch.memory import release_free_memory
from bertorch.models.low_memory import checkpoint_large_batches, use_low_memory_training
from bertorch.optim import build_optimizer, build_param_groups, build_scheduler
from bertorch.signals import StopSignals, TrainingStopped

if TYPE_CHECKING:  # the trainer runs any task; it needs the Task type for the hint only, not the tasks layer above
    from bertorch.tasks.base import Task


class TrainingDiverged(RuntimeError):
    pass


class RankTimeout(TrainingDiverged):
    """A collective timed out (--ddp_timeout): reported in one line like a diverged run."""


@dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    best_metric: float | None = None
    best_step: int | None = None
    history: list = field(default_factory=list)


class Trainer:
    def __init__(self, task: Task, args, env: D.DistEnv):
        self.task, self.args, self.env = task, args, env
        self.output_dir = args.saved_dir
        self.model = task.model.to(env.device)
        self.raw_model = self.model
        self.amp_dtype = torch.float16 if args.fp16 else torch.bfloat16 if args.bf16 else None
        if self.amp_dtype is torch.bfloat16 and env.device.type == "cpu" and emulated_bf16_cpu():
            logger.warning("--bf16: this CPU has no bf16 instructions (no avx512_bf16 or amx_bf16 in /proc/cpuinfo); "
                           "bf16 is emulated and trains many times slower than fp32 here: drop --bf16")
        self.ema: WeightEMA | None = None  # --ema_decay: evaluated and saved instead of the raw weights
        self.rdrop_alpha = getattr(args, "rdrop_alpha", 0.0)
        self.state = TrainState()
        self.metrics = MetricsWriter(self.output_dir, env.is_main)
        self.training = getattr(args, "do_train", True)
        if self.training:  # --no-do_train needs none of this: evaluate_only() uses the unwrapped model
            self.prepare_training()

    def prepare_training(self) -> None:
        """Sampler, optimiser, schedule, loss scaler, adversary and the DDP wrapper."""
        task, args, env = self.task, self.args, self.env
        release_free_memory()  # tokenising the data left hundreds of MB freed but resident
        if args.low_memory_training:
            use_low_memory_training(self.raw_model)  # only takes over on CPU, in fp32 or bf16 autocast
        if args.gradient_checkpointing:
            if not checkpoint_large_batches(self.raw_model, max_tokens=0):  # every batch, any device
                logger.warning("--gradient_checkpointing: this model has no layers transformers can checkpoint; "
                               "training runs without it")
        elif args.low_memory_training and args.checkpoint_above_tokens > 0:
            checkpoint_large_batches(self.raw_model, args.checkpoint_above_tokens)
        self.sampler = task.train_sampler()
        self.accum = args.gradient_accumulation_steps
        self.steps_per_epoch = math.ceil(len(self.sampler) / self.accum)
        self.total_steps = args.max_steps if args.max_steps > 0 else self.steps_per_epoch * args.epochs
        num_layers = getattr(self.raw_model.backbone.config, "num_hidden_layers", 0)
        groups = build_param_groups(self.raw_model, args.learning_rate, args.weight_decay,
                                    args.layerwise_lr_decay, num_layers, task.lr_overrides())
        self.optimizer = build_optimizer(groups, args.learning_rate)
        self.scheduler = build_scheduler(args.scheduler, self.optimizer, self.total_steps, args.warmup_proportion)
        self.scaler = torch.amp.GradScaler("cuda") if args.fp16 else None
        self.adversary = build_adversary(args.adversarial, self.raw_model.backbone.get_input_embeddings(),
                                         args.adv_epsilon, args.adv_alpha, args.adv_steps)
        if getattr(args, "ema_decay", None):
            self.ema = WeightEMA(self.raw_model, args.ema_decay)
        self.step_loss: torch.Tensor | None = None  # summed over the micro-batches of the current step
        self.stop_signals: StopSignals | None = None  # set by train()
        self.stop_agreed = False  # some rank received SIGTERM/SIGINT: stop after this step
        if env.is_distributed:
            ids = [env.local_rank] if env.device.type == "cuda" else None
            self.model = DDP(self.model, device_ids=ids, find_unused_parameters=args.find_unused_parameters)

    # -- helpers --------------------------------------------------------------------------------------
    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.env.device.type, dtype=self.amp_dtype)

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.env.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def backward(self, loss: torch.Tensor, sync: bool) -> None:
        """Gradients are all-reduced only on the last backward of an optimisation step."""
        context = self.model.no_sync() if isinstance(self.model, DDP) and not sync else contextlib.nullcontext()
        with context:
            (self.scaler.scale(loss) if self.scaler else loss).backward()

    def banner(self) -> None:
        a, e = self.args, self.env
        logger.info(f"***** {self.task.name}: {len(self.task.train_features)} training examples, "
                    f"{len(self.task.eval_features)} dev examples *****")
        logger.info(f"per-device batch = {a.batch_size}, world size = {e.world_size}, accumulation = {self.accum}, "
                    f"total batch = {a.batch_size * e.world_size * self.accum}")
        logger.info(f"optimisation steps = {self.total_steps} ({self.steps_per_epoch} per epoch), "
                    f"device = {e.device}, precision = {self.amp_dtype or torch.float32}, "
                    f"threads per process = {torch.get_num_threads()}")

    # -- training -------------------------------------------------------------------------------------
    def train(self) -> dict:
        """Train to the end, or until SIGTERM/SIGINT (then checkpoint and exit 128 + signal)."""
        with StopSignals() as self.stop_signals:
            try:
                return self._train()
            except RuntimeError as e:
                if self.env.is_distributed and D.is_timeout(e):
                    raise RankTimeout(f"rank {self.env.rank}: a collective waited longer than --ddp_timeout "
                                      f"{getattr(self.args, 'ddp_timeout', None)} s (another rank is stuck or "
                                      f"died); the last checkpoint is kept ({str(e).splitlines()[0][:200]})") from None
                raise

    def _train(self) -> dict:
        args, state = self.args, self.state
        if args.resume_from_checkpoint:
            self.resume(ckpt.resolve_resume(args.resume_from_checkpoint, self.output_dir))
        self.metrics.start(state.global_step)
        self.banner()
        started = time.perf_counter()
        # The loader gets its own generator: drawing worker seeds from the global RNG at every epoch
        # would shift the dropout masks of a resumed run away from those of an uninterrupted one.
        loader = DataLoader(self.task.train_features, batch_sampler=self.sampler, collate_fn=self.task.collate,
                            num_workers=args.num_workers, pin_memory=self.env.device.type == "cuda",
                            generator=torch.Generator().manual_seed(args.seed))
        bar = progress_bar(self.total_steps, state.global_step, self.env.is_main)
        window = {"loss": [torch.zeros((), device=self.env.device), 0]}
        tic, steps_at_tic = time.perf_counter(), state.global_step
        self.model.train()
        num_batches = len(self.sampler)
        while state.global_step < self.total_steps:
            self.sampler.set_epoch(state.epoch, state.batch_in_epoch)
            for batch in loader:
                b = state.batch_in_epoch
                window_start = (b // self.accum) * self.accum
                window_size = min(self.accum, num_batches - window_start)
                last_micro = b + 1 == window_start + window_size
                batch = self.to_device(batch)
                self.train_micro_step(batch, window_size, last_micro, window)
                state.batch_in_epoch += 1
                if not last_micro:
                    continue
                self.optimizer_step()
                bar.update(1)
                if args.logging_steps > 0 and state.global_step % args.logging_steps == 0:
                    self.log_train(window, state.global_step - steps_at_tic, time.perf_counter() - tic)
                    tic, steps_at_tic = time.perf_counter(), state.global_step
                if args.eval_steps > 0 and state.global_step % args.eval_steps == 0:
                    self.evaluate_and_keep_best()
                saved = None
                if args.save_steps > 0 and state.global_step % args.save_steps == 0:
                    saved = self.save_checkpoint()
                if self.stop_agreed:
                    bar.close()
                    self.stop_for_signal(saved)
                if state.global_step >= self.total_steps:
                    break
            else:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        bar.close()
        # Free DDP's reducer now, while the process group is alive on every rank: freed only at exit, after the
        # group was destroyed, its gloo threads were seen to hang the last rank (a resumed 2-process run).
        self.model = self.raw_model
        return self.finish(train_seconds=time.perf_counter() - started)

    @property
    def eval_model(self):
        """The weights evaluated and saved as the model: their moving average with --ema_decay, else the raw ones."""
        return self.ema.model if self.ema is not None else self.raw_model

    def forward_loss(self, batch: dict):
        """(output, training loss, the batch the output's rows belong to); with --rdrop_alpha that batch is
        `batch` twice, run in one forward pass (two dropout masks), and the symmetric KL of the two predictions
        is added to the loss."""
        if not self.rdrop_alpha:
            with self.autocast():
                output = self.model(**batch)
            return output, output.loss, batch
        batch = doubled_batch(batch)
        with self.autocast():
            output = self.model(**batch)
        logits, mask = self.task.rdrop_logits(batch, output)
        first, second = logits.chunk(2)
        kl = symmetric_kl(first, second, None if mask is None else mask.chunk(2)[0])
        return output, output.loss + self.rdrop_alpha * kl, batch

    def train_micro_step(self, batch: dict, window_size: int, last_micro: bool, window: dict) -> None:
        def forward_loss() -> torch.Tensor:
            return self.forward_loss(batch)[1] / window_size

        output, loss, rows = self.forward_loss(batch)
        loss = loss / window_size
        self.backward(loss, sync=last_micro and self.adversary is None)
        if self.adversary is not None:
            params = [p for p in self.raw_model.parameters() if p.requires_grad]
            self.adversary.step(forward_loss, lambda l, final: self.backward(l, sync=last_micro and final), params)
        detached = loss.detach().float()
        self.step_loss = detached if self.step_loss is None else self.step_loss + detached
        window["loss"][0] += detached * window_size
        window["loss"][1] += 1
        masks = [v for k, v in batch.items() if k.endswith("attention_mask")]
        tokens = window.setdefault("tokens", [torch.zeros((), device=self.env.device), 0])
        tokens[0] += sum(m.sum() for m in masks)  # real tokens, summed on device: no host sync per step
        tokens[1] += sum(m.numel() for m in masks)  # tokens including padding
        for name, (num, den) in self.task.train_stats(rows, output).items():
            acc = window.setdefault(name, [torch.zeros((), device=self.env.device), 0.0])
            acc[0] += num.detach().float()
            acc[1] += den

    def optimizer_step(self) -> None:
        # One small all-reduce and host sync per optimisation step, agreed by every rank: a NaN/inf loss on
        # any rank stops all of them *before* it reaches the weights (so the last checkpoint stays the last
        # good model, and no rank waits forever in the next all-reduce for one that raised), and a stop
        # signal received by any rank stops all of them after this step.
        loss, self.step_loss = self.step_loss, None
        stop = float(self.stop_signals is not None and self.stop_signals.received is not None)
        flags = torch.stack([(~torch.isfinite(loss)).float(), loss.new_tensor(stop), loss.float()])
        nonfinite, stop, loss_sum = D.sum_across_ranks(flags)
        if nonfinite:
            where = "" if self.env.world_size == 1 else f" on {int(nonfinite)} of {self.env.world_size} ranks"
            raise TrainingDiverged(f"loss is {loss_sum if self.env.world_size == 1 else 'not finite'}{where} at "
                                   f"optimisation step {self.state.global_step + 1}; training stopped, the last good "
                                   f"checkpoint is kept. Try a lower --learning_rate, --max_grad_norm, or fp32.")
        self.stop_agreed = self.stop_agreed or bool(stop)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.args.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.raw_model)
        self.state.global_step += 1

    def log_train(self, window: dict, steps: int, seconds: float) -> None:
        """The bertorch log line, averaged over the window and over ranks (one small all-reduce)."""
        names = list(window)
        sums = D.all_reduce_sum([float(window[k][0]) for k in names] + [float(window[k][1]) for k in names],
                                self.env.device)
        totals = {k: (sums[i], sums[i + len(names)]) for i, k in enumerate(names)}
        for k in names:
            window[k] = [torch.zeros((), device=self.env.device), 0]
        real, padded = totals.pop("tokens", (0.0, 0.0))
        values = {k: num / den for k, (num, den) in totals.items() if den}  # a multi-task window may lack a task
        s, speed = self.state, steps / seconds
        logger.info(f"global step: {s.global_step}, epoch: {s.epoch + 1}, batch: {s.batch_in_epoch}, "
                    f"{format_metrics(values)}, speed: {speed:.2f} step/s")
        self.metrics.write("train", s.global_step, {
            **values, "lr": self.scheduler.get_last_lr()[0], "speed": speed, "epoch": s.epoch + 1,
            "tokens_per_s": real / seconds, "padded_tokens_per_s": padded / seconds,
            "pad_fraction": 1 - real / max(padded, 1)})

    # -- evaluation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Each rank predicts its own shard of the dev set; predictions are gathered back in file order."""
        features = self.task.eval_features
        if not features:
            return {}
        model = self.eval_model
        was_training = self.raw_model.training
        model.eval()
        shard = eval_shard([self.task.feature_length(f) for f in features], self.args.eval_batch_size,
                           self.env.rank, self.env.world_size)
        predictions, loss_sum, loss_count = [], 0.0, 0
        for indices in shard:
            batch = self.to_device(self.task.collate([features[i] for i in indices]))
            with self.autocast():
                output = model(**batch)
            if getattr(output, "loss", None) is not None:
                loss_sum += float(output.loss) * len(indices)
                loss_count += len(indices)
            predictions.extend(zip(indices, self.task.predict(model, batch, output)))
        self.raw_model.train(was_training)
        ordered = [p for _, p in sorted(p for part in D.gather_objects(predictions) for p in part)]
        loss_sum, loss_count = D.all_reduce_sum([loss_sum, loss_count], self.env.device)
        metrics = self.task.compute_metrics(ordered)
        if loss_count:
            metrics = {"loss": loss_sum / loss_count, **metrics}
        return metrics

    def evaluate_and_keep_best(self) -> dict:
        metrics = self.evaluate()
        if not metrics:
            return metrics
        report = metrics.pop("report", None)
        logger.info("eval " + format_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))}))
        if report:
            logger.info("classification report:\n" + report)
        self.metrics.write("eval", self.state.global_step, metrics)
        self.state.history.append({"step": self.state.global_step, **metrics})
        value = metrics.get(self.task.metric_for_best)
        s = self.state
        better = value is not None and (s.best_metric is None or (
            value > s.best_metric if self.task.greater_is_better else value < s.best_metric))
        if better:
            s.best_metric, s.best_step = value, s.global_step
            if self.args.save_best_model and self.training:
                self.save_model(os.path.join(self.output_dir, "best"))
                logger.info(f"new best {self.task.metric_for_best}: {value:.5f}, saved to "
                            f"{os.path.join(self.output_dir, 'best')}")
        return metrics

    # -- saving ---------------------------------------------------------------------------------------
    def save_model(self, directory: str, extra=None, into_existing: bool = False, raw: bool = False) -> None:
        """Rank 0 writes (atomically); the others wait so nobody reads a directory being written. The model saved
        is the evaluated one (the EMA with --ema_decay) unless `raw`: checkpoints keep the weights being trained."""
        if self.env.is_main:
            model = self.raw_model if raw else self.eval_model

            def write(tmp: str) -> None:
                self.task.save(model, tmp)
                if extra:
                    extra(tmp)
            (ckpt.save_into if into_existing else ckpt.save_directory)(directory, write)
        D.barrier()

    def save_checkpoint(self) -> str:
        directory = os.path.join(self.output_dir, f"checkpoint-{self.state.global_step}")
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler else {},
                 # every rank's generators: with dropout their draws may differ, and each rank goes on with its own
                 "rng_per_rank": D.gather_objects(ckpt.rng_state()),
                 "trainer": {k: v for k, v in vars(self.state).items() if k != "history"},
                 "history": json.dumps(self.state.history), "run": ckpt.run_shape(self.args, self.env.world_size)}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        self.save_model(directory, extra=lambda tmp: ckpt.save_training_state(tmp, state), raw=True)
        if self.env.is_main:
            ckpt.rotate_checkpoints(self.output_dir, self.args.save_total_limit)
        logger.info(f"saved checkpoint {directory}")
        return directory

    def stop_for_signal(self, saved: str | None) -> None:
        """Write a resumable checkpoint of the step just finished (every rank takes part), say how to go on,
        and exit with 128 + the signal number."""
        directory = saved or self.save_checkpoint()
        received = self.stop_signals.received if self.stop_signals is not None else None
        signum = received or 15  # a rank that got no signal itself stops as if terminated
        name = self.stop_signals.name if received else "a signal on another rank"
        message = (f"stopped by {name} after optimisation step {self.state.global_step} of {self.total_steps}; "
                   f"checkpoint saved to {directory}. Continue with the same command plus "
                   f"--resume_from_checkpoint latest")
        logger.error(message)
        self.metrics.close()
        raise TrainingStopped(signum, message)

    def resume(self, directory: str) -> None:
        state = ckpt.load_checkpoint(directory, self.raw_model, self.args, self.env.world_size)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        for key, value in state["trainer"].items():
            setattr(self.state, key, value)
        self.state.history = json.loads(state["history"])
        if self.ema is not None:
            if "ema" not in state:
                raise UsageError(f"--ema_decay: {directory} was written without it, so it holds no weight "
                                      f"average to resume; resume without --ema_decay, or start afresh")
            self.ema.load_state_dict(state["ema"])
        per_rank = state.get("rng_per_rank") or [state["rng"]]  # older checkpoints kept rank 0's only
        if len(per_rank) != self.env.world_size:
            logger.warning(f"{directory} was written by {len(per_rank)} process(es) and is resumed by "
                           f"{self.env.world_size}: every rank starts from rank 0's random state, so dropout draws "
                           f"differ from the uninterrupted run")
        ckpt.set_rng_state(per_rank[self.env.rank if len(per_rank) == self.env.world_size else 0])
        logger.info(f"resumed from {directory} at step {self.state.global_step} (epoch {self.state.epoch + 1}, "
                    f"batch {self.state.batch_in_epoch})")

    def finish(self, train_seconds: float) -> dict:
        s = self.state
        last_eval = s.history[-1]["step"] if s.history else None
        if self.task.eval_features and last_eval != s.global_step:
            self.evaluate_and_keep_best()
        self.save_model(self.output_dir, into_existing=True)  # beside checkpoints, best/ and the logs
        results = self.write_results(train_seconds)
        if self.env.is_main:
            plot_curves(self.output_dir, self.task.metric_for_best)
        logger.info(f"training done: {format_metrics(results)}; model saved to {self.output_dir}")
        return results

    def evaluate_only(self) -> dict:
        """--no-do_train: one evaluation of the model as loaded, gathered from every rank like the trainer's,
        written as a training run's end is (all_results.json with global_step 0, metrics.jsonl)."""
        e = self.env
        logger.info(f"***** {self.task.name}: evaluation only, {len(self.task.eval_features)} dev examples, world "
                    f"size = {e.world_size}, device = {e.device}, precision = {self.amp_dtype or torch.float32} *****")
        if not self.task.eval_features:
            raise ValueError(f"--dev_data_file {self.args.dev_data_file}: no dev examples to evaluate")
        self.metrics.start()
        self.evaluate_and_keep_best()
        results = self.write_results(train_seconds=0.0)
        logger.info(f"evaluation done: {format_metrics(results)}; results in {self.output_dir}")
        return results

    def write_results(self, train_seconds: float) -> dict:
        """all_results.json: budget, best and final dev metrics (what scripts/results.py reads)."""
        s = self.state
        at_best = next((h for h in s.history if h.get("step") == s.best_step), {})  # every metric of the best model
        results = {"global_step": s.global_step, "train_seconds": round(train_seconds, 1), "best_step": s.best_step,
                   **{f"best_{k}": v for k, v in at_best.items() if k != "step"},
                   f"best_{self.task.metric_for_best}": s.best_metric,
                   **{f"final_{k}": v for k, v in (s.history[-1] if s.history else {}).items() if k != "step"}}
        if self.env.device.type == "cuda":  # this rank's peak, what a user sizes the next run's batch by
            results["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(self.env.device) / 1024 ** 3, 3)
        if self.env.is_main:
            with open(os.path.join(self.output_dir, "all_results.json"), "w", encoding="utf-8") as f:
                json.dump(results, f, indent=2, ensure_ascii=False)
            self.metrics.close()
        return results
