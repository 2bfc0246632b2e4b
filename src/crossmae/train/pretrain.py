"""The pretraining engine: one process per device (torchrun), DDP or FSDP2, resumable.

`pretrain(*layers)` builds the run from settings layers (a YAML file's, then the command
line's), and when resuming puts the checkpoint's own settings underneath, so
`--resume auto --output-dir DIR` alone continues a run exactly as it was configured.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from crossmae.errors import CrossMAEError
from crossmae.models.autoencoder import MaskedAutoencoder
from crossmae.models.config import AutoencoderConfig
from crossmae.serialization import load_state_dict_strict
from crossmae.train import checkpointing as ckpt
from crossmae.train.batches import BatchSource, InMemorySource, derive_seed, masking_noise
from crossmae.train.checkpoint_writer import CheckpointWriter, host_copy, live_storages
from crossmae.train.config import PretrainConfig
from crossmae.train.data import TrainingData, open_training_data
from crossmae.train.distributed import (
    DistInfo,
    StopVote,
    cleanup_distributed,
    init_distributed,
)
from crossmae.train.logging import RunLogger, peak_host_memory_gib, read_log
from crossmae.train.meters import StepMeters
from crossmae.train.monitor import save_loss_curve, save_reconstruction
from crossmae.train.optim import build_adamw, param_groups, set_lr
from crossmae.train.precision import autocast_context, resolve_precision
from crossmae.train.run_folder import CONFIG_YAML, check_resumable, new_run_folder, resume_point
from crossmae.train.schedule import check_min_lr, lr_at, scaled_lr
from crossmae.train.signals import EXIT_CODES, GracefulStop
from crossmae.train.step import OptimizerStep
from crossmae.train.warm_start import read_initial_weights

RECONSTRUCTION_IMAGES = 8
LOSS_PNG, RECON_PNG = "loss.png", "reconstruction.png"
# loss.png is drawn after the first epoch, then at most this often and at the end: drawing
# it takes 0.2 s on a 2-core CPU, which epochs of a few seconds should not pay each time
LOSS_CURVE_SECONDS = 60.0


def pretrain(*layers: dict[str, Any], source: str = "") -> int:
    """Run (or continue) a pretraining run; returns the process exit code.

    Settings are validated before anything is set up, so bad ones fail at once.
    """
    cfg, state, path = resume_point(layers, source)
    dist = init_distributed(cfg.device)
    claimed = None
    try:
        if cfg.output_dir is None:
            cfg.output_dir = claimed = new_run_folder(dist)
        return Pretrainer(cfg, dist, state, path).run()
    except BaseException:
        if claimed and dist.is_main and not any(Path(claimed).iterdir()):
            Path(claimed).rmdir()  # a run that failed to start leaves no empty folder,
            if not any(Path(claimed).parent.iterdir()):
                Path(claimed).parent.rmdir()  # nor an empty runs/
        raise
    finally:
        cleanup_distributed()


class Pretrainer:
    """One pretraining run in this process: data, model, optimizer, loop, files."""

    def __init__(
        self,
        cfg: PretrainConfig,
        dist: DistInfo,
        state: dict[str, Any] | None = None,
        resumed_from: Path | None = None,
    ) -> None:
        self.started = time.perf_counter()  # setup (data loading, model) counts as run time
        self.seconds_before = 0.0  # wall time of the processes this run resumed from
        self.loss_curve_drawn = -math.inf  # perf_counter() when loss.png was last drawn
        self.cfg, self.dist, self.device = cfg, dist, dist.device
        self.output_dir = Path(cfg.output_dir or ".")
        self.model_cfg: AutoencoderConfig = cfg.model_config()
        self.precision = resolve_precision(cfg.precision, self.device)
        initial = None  # a new run's starting weights (a resumed one's are in `state`)
        if state is None and cfg.init_from:
            initial = read_initial_weights(cfg.init_from, self.model_cfg)
        self.initial_weights = initial.description if initial else None
        ckpt.seed_everything(cfg.seed)  # same initial weights on every rank (DDP also syncs)
        self.data: TrainingData = open_training_data(cfg, self.model_cfg, dist)
        self.source: BatchSource = self.data.source
        self.steps_per_epoch = self.source.batches_per_epoch // cfg.accum_iter
        if self.steps_per_epoch < 1:
            raise CrossMAEError(
                f"{self.data.description} gives {self.source.batches_per_epoch} batches of "
                f"{cfg.batch_size} per process, fewer than --accum-iter {cfg.accum_iter}; "
                "use a smaller --batch-size"
            )
        self.effective_batch = cfg.batch_size * cfg.accum_iter * dist.world_size
        self.base_lr = self._base_lr()
        check_min_lr(cfg.min_lr, self.base_lr)
        self.module = MaskedAutoencoder(self.model_cfg)
        self.module.set_grad_checkpointing(self.cfg.grad_checkpointing)
        if initial is not None:
            initial.load_into(self.module)
        self.module.to(self.device)
        self.model = self._wrap(self.module)
        groups = param_groups(self.module, cfg.weight_decay)
        self.optimizer = build_adamw(groups, self.base_lr, tuple(cfg.betas), self.device)
        self.stepper = OptimizerStep(
            self.model, self.optimizer, device=self.device, precision=self.precision,
            accum_iter=cfg.accum_iter, clip_grad=cfg.clip_grad,
        )  # fmt: skip
        self.mask_generator = torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, 2))
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.figure_images: list[torch.Tensor] = []  # the first images, for the figures
        self.figure_count = 0
        self.nonfinite_steps = 0
        self.meters = StepMeters(self.device)
        if state is not None:
            self._restore(state, resumed_from)
        self.logger = RunLogger(
            self.output_dir, enabled=dist.is_main, total_steps=self._planned_steps(),
            initial_step=self.global_step, tensorboard=cfg.tensorboard,
        )  # fmt: skip
        self.resumed_from = resumed_from
        self.stop_vote = StopVote() if dist.distributed else None
        self.checkpoints = CheckpointWriter()

    # ----- setup ---------------------------------------------------------------------------

    def _base_lr(self) -> float:
        if self.cfg.lr is not None:
            return self.cfg.lr
        c = self.model_cfg
        by_ratio = self.cfg.scale_lr_by_ratio and c.decoder == "cross"
        gamma = c.prediction_ratio if by_ratio else None
        return scaled_lr(self.cfg.blr, self.effective_batch, c.mask_ratio, gamma)

    def _wrap(self, module: MaskedAutoencoder) -> nn.Module:
        """FSDP2 (sharded) or DDP across processes, optionally compiled."""
        model: nn.Module = module
        if self.cfg.fsdp:
            if not torch.distributed.is_initialized():
                raise CrossMAEError(
                    "--fsdp shards the model over processes started by torchrun, e.g. "
                    "torchrun --nproc_per_node=8 -m crossmae pretrain --fsdp ..."
                )
            from torch.distributed.fsdp import fully_shard

            for block in [*module.encoder.blocks, *module.decoder.blocks]:
                fully_shard(block)
            fully_shard(module)
        if self.cfg.compile:
            module.compile()
        if self.dist.distributed and not self.cfg.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(module, device_ids=ids)
        return model

    def _restore(self, state: dict[str, Any], path: Path | None) -> None:
        check_resumable(
            state, path, model_config=self.model_cfg.to_dict(),
            effective_batch=self.effective_batch, readers=getattr(self.source, "readers", None),
            steps_per_epoch=self.steps_per_epoch, data=self.data.description,
            epochs=self.cfg.epochs,
        )  # fmt: skip
        settings = [{k: v for k, v in g.items() if k != "params"}
                    for g in self.optimizer.param_groups]  # fmt: skip
        if self.cfg.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            full = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.module, state["model"], options=full)
            optimizer_state = ckpt.optimizer_state_by_name(
                state["optimizer"], self.optimizer, self.module
            )
            set_optimizer_state_dict(self.module, self.optimizer, optimizer_state, options=full)
        else:
            load_state_dict_strict(self.module, state["model"], f"checkpoint {path}")
            self.optimizer.load_state_dict(state["optimizer"])
        # the moments resume; the settings (weight decay, betas) are this run's, as its config says
        for group, setting in zip(self.optimizer.param_groups, settings, strict=True):
            group.update(setting)
        if self.stepper.scaler is not None and state.get("scaler"):
            self.stepper.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]  # steps taken: the logs' x axis
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        self.seconds_before = float(state.get("train_seconds", 0.0))
        ckpt.restore_rng(state["rng"], {"masking": self.mask_generator})

    def _planned_steps(self) -> int:
        """Steps taken plus steps left (a resume may have changed the steps per epoch)."""
        left = (self.cfg.epochs - self.epoch) * self.steps_per_epoch - self.step_in_epoch
        total = self.global_step + left
        return min(total, self.cfg.max_steps or total)

    # ----- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        self._announce()
        with GracefulStop() as stop, contextlib.ExitStack() as cleanup:
            cleanup.callback(self.logger.close)
            if self.stop_vote is not None:
                cleanup.callback(self.stop_vote.close)
            cleanup.callback(self.checkpoints.close)  # an error on its way: finish the write
            try:
                code = self._train(stop)
                self._finish_writes()  # the last checkpoint is on disk before the summary
            except KeyboardInterrupt:  # a second signal: stop now, the last whole file stays
                self.checkpoints.abandon()
                raise
        if code == 0:
            report = self.data.report()  # every rank takes part: it merges their findings
            if self.dist.is_main:
                self._summary(report)
        return code

    def _train(self, stop: GracefulStop) -> int:
        cfg = self.cfg
        while self.epoch < cfg.epochs:
            if self.source.forks_each_epoch:
                self._finish_writes()  # no thread writes while the process forks its workers
            batches = self.source.epoch(self.epoch, self.step_in_epoch * cfg.accum_iter)
            while self.step_in_epoch < self.steps_per_epoch and not self._reached_max_steps():
                set_lr(self.optimizer, self._lr())
                result = self.stepper(itertools.islice(batches, cfg.accum_iter), self._loss)
                self.meters.count(result)
                self.global_step += 1
                self.step_in_epoch += 1
                if self._log_due():
                    self._log_progress()
                if self._stop_requested(stop):
                    return self._stop_on_signal(stop)
                if cfg.save_every_steps and self.global_step % cfg.save_every_steps == 0:
                    self._save(ckpt.LATEST)
            if self.step_in_epoch == self.steps_per_epoch:
                self.epoch += 1
                self.step_in_epoch = 0
                self._end_of_epoch(final=self.epoch == cfg.epochs or self._reached_max_steps())
                self.meters.restart_clock()  # images/s counts training time only
            else:  # --max-steps ended the run mid-epoch
                self._save(ckpt.LATEST)
                self._figures(final=True)
            if self._reached_max_steps():
                break
        return 0

    def _log_due(self) -> bool:
        return (
            self.global_step % self.cfg.log_every == 0
            or self.step_in_epoch == self.steps_per_epoch
            or self.global_step == 1  # the loss curve starts at the initial loss
        )

    def _stop_requested(self, stop: GracefulStop) -> bool:
        """True when a signal asks to stop (under torchrun: any rank, agreed by all one step
        later, see `StopVote`)."""
        if self.stop_vote is None:
            return stop.requested is not None
        return self.stop_vote(stop.requested is not None)

    def _loss(self, images: torch.Tensor) -> torch.Tensor:
        """One micro-batch's loss; the run's first images are kept for its figures."""
        if self.figure_count < RECONSTRUCTION_IMAGES:
            self.figure_images.append(images[:RECONSTRUCTION_IMAGES].detach().clone())
            self.figure_count += self.figure_images[-1].shape[0]
        noise = masking_noise(self.mask_generator, images.shape[0], self.dist.rank,
                              self.dist.world_size, self.model_cfg.num_patches)  # fmt: skip
        return self.model(images, noise=noise).loss

    def _seconds(self) -> float:
        """Wall time of the whole run so far, across resumes."""
        return self.seconds_before + time.perf_counter() - self.started

    def _lr(self) -> float:
        """Per iteration, indexed in epochs as MAE's: a run resumed with another effective
        batch or data set size stays on its schedule (a step count would not)."""
        progress = self.epoch + self.step_in_epoch / self.steps_per_epoch
        return lr_at(progress, base_lr=self.base_lr, warmup_steps=self.cfg.warmup_epochs,
                     total_steps=self.cfg.epochs, min_lr=self.cfg.min_lr)  # fmt: skip

    def _reached_max_steps(self) -> bool:
        return self.cfg.max_steps is not None and self.global_step >= self.cfg.max_steps

    # ----- logging -----------------------------------------------------------------------

    def _log_progress(self) -> None:
        cfg = self.cfg
        reading = self.meters.read()
        record: dict[str, Any] = {
            "epoch": round(self.epoch + self.step_in_epoch / self.steps_per_epoch, 4),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if reading.loss is not None:  # else every step was skipped: no loss, not a loss of 0
            record["loss"] = reading.loss
            record["grad_norm"] = reading.grad_norm
        record |= {
            "images_per_s": reading.steps * self.effective_batch / max(reading.seconds, 1e-9),
            "nonfinite_steps": self.nonfinite_steps + reading.nonfinite,
            "seconds": round(self._seconds(), 3),  # the run's wall time, across resumes
        }
        if self.device.type == "cuda":
            record["gpu_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        elif (rss := peak_host_memory_gib()) is not None:
            record["host_mem_gib"] = rss
        self.nonfinite_steps = record["nonfinite_steps"]
        line = (
            f"epoch {self.epoch + 1}/{cfg.epochs} step {self.global_step}/{self._planned_steps()}"
            + (f" loss {record['loss']:.4f}" if "loss" in record else " loss - (no finite step)")
            + f" lr {record['lr']:.2e} {record['images_per_s']:.0f} img/s"
        )
        self.logger.log(record, self.global_step, line)
        if reading.worst_streak >= cfg.max_nonfinite:
            try:
                self.checkpoints.wait()
                unwritten = ""
            except CrossMAEError as err:
                unwritten = f" (and {err})"
            kept = ckpt.readable_latest(self.output_dir)
            raise CrossMAEError(
                f"the loss or gradient was not finite for {reading.worst_streak} steps in a row "
                f"(up to step {self.global_step}), so the run stopped; "
                + (f"the last good checkpoint is {kept}" if kept else "no checkpoint was saved")
                + "; lower --blr or --lr, or set --clip-grad"
                + (", or use --precision bf16 or fp32" if self.precision == "fp16" else "")
                + unwritten
            )
        self.meters.reset()

    # ----- epoch ends, checkpoints, figures ------------------------------------------------

    def _end_of_epoch(self, final: bool) -> None:
        cfg = self.cfg
        if self.epoch == 1:
            report = self.data.report()
            if report:
                self.logger.message(f"data: {report}")
        # The kept copy first: a run killed between the two resumes from the newest file,
        # which is then the kept copy, so a resumed run never lacks one. The latest is a
        # link to (or copy of) it: no second gather, transfer and serialization of the state.
        if cfg.keep_every_epochs and self.epoch % cfg.keep_every_epochs == 0:
            self._save(ckpt.epoch_checkpoint_name(self.epoch), also_latest=True)
        else:
            self._save(ckpt.LATEST)
        self._figures(final)

    def _figures(self, final: bool) -> None:
        cfg = self.cfg
        recon = cfg.recon_every_epochs and (final or self.epoch % cfg.recon_every_epochs == 0)
        knn = cfg.knn_every_epochs and (final or self.epoch % cfg.knn_every_epochs == 0)
        if not (recon or knn):
            if self.dist.is_main:
                self._loss_curve(final)
            return
        model = self._plain_model()
        if not self.dist.is_main:
            return
        self._loss_curve(final)
        if recon and self.figure_images:
            images = torch.cat(self.figure_images)[:RECONSTRUCTION_IMAGES]
            title = f"{self.model_cfg.decoder} decoder, epoch {self.epoch}, step {self.global_step}"
            grid = save_reconstruction(model, images, self.output_dir / RECON_PNG, cfg.seed, title)
            self.logger.image("reconstruction", grid, self.global_step)
        if knn and self.data.knn is not None:
            self._finish_writes()  # its loader may fork workers: no thread may be writing
            accuracy = self.data.knn.accuracy(
                model, self.device, lambda: autocast_context(self.device, self.precision)
            )
            self.logger.log({"epoch": self.epoch, "knn_top1": accuracy}, self.global_step)
            self.logger.message(f"epoch {self.epoch}: kNN top-1 {accuracy:.2f}%")

    def _loss_curve(self, final: bool) -> None:
        now = time.perf_counter()
        if not final and now - self.loss_curve_drawn < LOSS_CURVE_SECONDS:
            return
        self.loss_curve_drawn = now
        records = read_log(self.logger.path) if self.logger.path.exists() else []
        if records:
            save_loss_curve(records, self.output_dir / LOSS_PNG, self._title())

    def _plain_model(self) -> MaskedAutoencoder:
        """The model as one module on this device (gathered from the shards under FSDP)."""
        if not self.cfg.fsdp:
            return self.module
        state = self._full_model_state()
        copy = MaskedAutoencoder(self.model_cfg).to(self.device)
        if self.dist.is_main:
            copy.load_state_dict(state)
        return copy

    def _full_model_state(self) -> dict[str, torch.Tensor] | None:
        if not self.cfg.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.module, options=options)

    def _save(self, name: str, also_latest: bool = False) -> Path:
        """Start writing a resumable checkpoint behind training (rank 0 writes; under FSDP
        all ranks gather); `also_latest` links the latest to it once written."""
        self._finish_writes()  # one copy of the state in host memory at a time
        path = self.output_dir / name
        if self.cfg.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_optimizer_state_dict,
            )

            model_state = self._full_model_state()
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            optimizer_state = get_optimizer_state_dict(self.module, self.optimizer, options=options)
        else:
            model_state, optimizer_state = self.module.state_dict(), self.optimizer.state_dict()
        if self.dist.is_main:
            scaler = self.stepper.scaler
            state = ckpt.training_state(
                self.module, optimizer_state,
                epoch=self.epoch, step_in_epoch=self.step_in_epoch, global_step=self.global_step,
                config=self.cfg.to_dict(), scaler_state=scaler.state_dict() if scaler else None,
                generators={"masking": self.mask_generator}, model_state=model_state,
                effective_batch=self.effective_batch, nonfinite_steps=self.nonfinite_steps,
                data_readers=getattr(self.source, "readers", None),
                train_seconds=self._seconds(),
            )  # fmt: skip
            # the next step changes the live tensors in place, so the write gets copies of
            # them (of FSDP's gathered state only what is not fresh: on one process, all)
            state = host_copy(state, live_storages(self.module, self.optimizer))
            latest = self.output_dir / ckpt.LATEST if also_latest else None
            self.checkpoints.submit(lambda: ckpt.write_training_state(state, path, also_as=latest))
        return path

    def _finish_writes(self) -> None:
        """Wait for the checkpoint write in flight; one that failed stops the run here."""
        try:
            self.checkpoints.wait()
        except CrossMAEError as err:
            raise CrossMAEError(f"{err}; the run stopped at step {self.global_step}") from None

    def _stop_on_signal(self, stop: GracefulStop) -> int:
        """Save where we are and exit; another rank may have caught the signal (SIGTERM)."""
        path = self._save(ckpt.LATEST)
        self._finish_writes()
        if self.dist.is_main:
            self._loss_curve(final=True)
            self.logger.message(
                f"stopped by {stop.name or 'a signal'} at epoch {self.epoch + 1}, step "
                f"{self.global_step}; saved {path}\ncontinue with: crossmae pretrain "
                f"--resume auto --output-dir {self.output_dir}"
            )
        return stop.exit_code or EXIT_CODES[signal.SIGTERM]

    # ----- what the user reads -------------------------------------------------------------

    def _title(self) -> str:
        c = self.model_cfg
        name = self.cfg.model
        gamma = f", γ {c.prediction_ratio}" if c.decoder == "cross" else ""
        return f"{name}: p {c.mask_ratio}{gamma}, batch {self.effective_batch}"

    def _announce(self) -> None:
        if not self.dist.is_main:
            return
        cfg, c = self.cfg, self.model_cfg
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / CONFIG_YAML).write_text(yaml.safe_dump(self._settings_used(),
                                                                  sort_keys=False))  # fmt: skip
        params = sum(p.numel() for p in self.module.parameters()) / 1e6
        gamma = f", γ {c.prediction_ratio}" if c.decoder == "cross" else ""
        processes = f"{self.dist.world_size} process{'es' if self.dist.distributed else ''}"
        warmup = math.ceil(cfg.warmup_epochs * self.steps_per_epoch - 1e-9)  # steps below peak
        lines = [
            f"model   {cfg.model}: ViT {c.embed_dim}x{c.depth}, "
            f"{c.decoder} decoder {c.decoder_dim}x{c.decoder_depth}, p {c.mask_ratio}{gamma}, "
            f"{params:.1f}M parameters",
            f"data    {self.data.description}",
            f"batch   {cfg.batch_size} x {cfg.accum_iter} accumulation x {processes} = "
            f"{self.effective_batch} images per step; {_count(self.steps_per_epoch, 'step')} "
            f"per epoch, {_count(cfg.epochs, 'epoch')}",
            f"lr      {self.base_lr:.3g} after {_count(warmup, 'warmup step')}, cosine to "
            f"{cfg.min_lr:g}",
            f"device  {self.device}, {self.precision}"
            + (", FSDP2" if cfg.fsdp else ", DDP" if self.dist.distributed else "")
            + (", compiled" if cfg.compile else "")
            + (", gradient checkpointing" if cfg.grad_checkpointing else ""),
            f"output  {self.output_dir}",
        ]
        if cfg.resume == "auto" and not self.resumed_from:
            lines.append(f"resume  no checkpoint in {self.output_dir} yet: a new run")
        if self.resumed_from:
            where = (
                f"at epoch {self.epoch + 1}, step {self.global_step}"
                if self._planned_steps() > self.global_step
                else f"after its last step ({self.global_step}): nothing left to train"
            )
            lines.append(f"resumed {self.resumed_from} {where}")
        if self.initial_weights:
            lines.append(f"weights {self.initial_weights}")
        if c.decoder != "cross" and cfg.prediction_ratio not in (None, c.mask_ratio):
            lines.append(f"note    --prediction-ratio {cfg.prediction_ratio} is CrossMAE's: this "
                         "MAE decodes every masked patch")  # fmt: skip
        for line in lines:
            self.logger.message(line)

    def _settings_used(self) -> dict[str, Any]:
        """The run's settings with the ones left to the model or the data (None: "the
        model's", "auto") as they came out, so config.yaml says what the run used."""
        c = self.model_cfg
        size = c.img_size if isinstance(c.img_size, int) else list(c.img_size)
        return self.cfg.to_dict() | {
            "img_size": size, "mask_ratio": c.mask_ratio, "prediction_ratio": c.prediction_ratio,
            "norm_pix_loss": c.norm_pix_loss, "in_memory": isinstance(self.source, InMemorySource),
        }  # fmt: skip

    def _summary(self, report: str | None) -> None:
        records = [r for r in read_log(self.logger.path) if "loss" in r]
        first = records[0]["loss"] if records else math.nan
        last = records[-1]["loss"] if records else math.nan
        speed = [r["images_per_s"] for r in records if "images_per_s" in r]
        out = self.output_dir
        files = [
            ("checkpoint", out / ckpt.LATEST),
            ("log", self.logger.path),
            ("loss curve", out / LOSS_PNG),
            ("reconstructions", out / RECON_PNG),
            ("config", out / CONFIG_YAML),
        ]
        seconds = self._seconds()
        took = _duration(seconds)
        if self.resumed_from:
            took += f" ({_duration(seconds - self.seconds_before)} since the resume)"
        lines = [
            "",
            f"done in {took}: {self.global_step} steps, epoch "
            f"{self.epoch + self.step_in_epoch / self.steps_per_epoch:.3g}/{self.cfg.epochs}"
            + (f", {np.median(speed):.0f} images/s" if speed else ""),
            f"loss    {first:.4f} (first log) -> {last:.4f} (last log)"
            if records
            else f"loss    not logged: no step of this run fell on a --log-every "
            f"{self.cfg.log_every} step",
        ]
        if self.nonfinite_steps:
            lines.append(f"skipped {self.nonfinite_steps} steps with a non-finite loss or gradient")
        if report:
            lines.append(f"data    {report}")
        lines += [f"{name:16}{path}" for name, path in files if path.exists()]
        if self.cfg.tensorboard:
            lines.append(f"{'tensorboard':16}tensorboard --logdir {out}")
        print("\n".join(lines), flush=True)


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"
