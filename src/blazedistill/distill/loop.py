"""The distillation loop, top to bottom: processes and device, parts, data, optimizer, epochs, checkpoints.

The teacher labels each augmented batch on the fly (eval mode, under torch.inference_mode); the student
learns to reproduce its raw outputs through the configured loss. Runs unchanged under torchrun (DDP).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from blazedistill.distill import checkpoint as ckpt
from blazedistill.distill.config import RunConfig, save_config
from blazedistill.distill.logs import RunLog
from blazedistill.distill.plots import draw_side_by_side
from blazedistill.distill.runtime import (
    ModelEMA,
    Processes,
    all_finite,
    barrier,
    close_processes,
    derive_seed,
    init_processes,
    param_groups,
    pick_device,
    seed_everything,
    warmup_cosine,
)
from blazedistill.distill.validate import validate
from blazedistill.jsonsafe import json_safe
from blazedistill.specs import ModelSpec

#: (student (reg, cls), teacher (reg, cls)) -> scalar tensor, or a dict of tensors with "total" to backpropagate
LossFn = Callable[[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], "torch.Tensor | dict"]


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite; the run stopped."""


@dataclass
class Parts:
    """The models, the loss and the data of a run (built from the config, or handed in by a caller)."""

    teacher: nn.Module  # BlazeFace-contract model with .spec
    student: nn.Module  # same contract, trainable
    loss_fn: LossFn
    train_loader: Iterable  # batches: (N, 3, S, S) tensors in [-1, 1] (or uint8), or objects with .images;
    #                         len() = batches per epoch; set_epoch(epoch) is called when present
    val_loader: Iterable  # same batches, not augmented; iterated on the main process only
    preview: list = field(default_factory=list)  # (name, image source) pairs for side_by_side/
    data_note: str = ""  # one line about the data (printed at the start)


def default_out_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def train(
    cfg: RunConfig, parts: Parts | None = None, *, resume: str | Path | None = None, stop_after_epoch: int | None = None
) -> dict:
    """Run a distillation (or continue one: `resume` = a run folder or a checkpoint); returns the summary.

    Under torchrun every process calls this; only the main process writes files. `stop_after_epoch`
    pauses the run after that many epochs (the run folder stays resumable).
    """
    cfg.validate()
    procs = init_processes(cfg.train.device)
    try:
        return _train(cfg, parts, procs, resume, stop_after_epoch)
    finally:
        close_processes()


def _train(cfg: RunConfig, parts: Parts | None, procs: Processes, resume, stop_after_epoch: int | None) -> dict:
    # -- device, seeds, run folder, parts --------------------------------------------------------------------
    device = pick_device(cfg.train.device, procs.local_rank)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    out = Path(cfg.train.out or default_out_dir())
    cfg.train.out = str(out)
    resume_state = ckpt.load_checkpoint(_resume_path(resume, out)) if resume is not None else None
    if parts is None:
        from blazedistill.distill.parts import build_parts

        parts = build_parts(cfg, device, announce=procs.is_main)
    if procs.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if parts.data_note:
            print(parts.data_note, flush=True)

    # -- models: teacher frozen, student trainable; NHWC where it pays -------------------------------------
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    teacher = parts.teacher.to(device, memory_format=memory_format).eval().requires_grad_(False)
    student = parts.student.to(device, memory_format=memory_format)
    spec = teacher.spec
    autocast = _autocast(device, cfg.train.amp)

    # -- data: batches per epoch and the step budget --------------------------------------------------------
    steps_per_epoch = len(parts.train_loader)
    if steps_per_epoch == 0:
        raise ValueError(f"no training batches: lower --batch-size (now {cfg.train.batch_size}) or add data")
    total_steps = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    epochs = math.ceil(total_steps / steps_per_epoch)

    # -- optimizer, schedule (per step), EMA, DDP ------------------------------------------------------------
    optimizer = torch.optim.AdamW(
        param_groups(student, cfg.optim.weight_decay), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas)
    )
    warmup = cfg.optim.warmup_steps if cfg.optim.warmup_steps is not None else min(500, total_steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total_steps, cfg.optim.min_lr_ratio))
    ema = ModelEMA(student, cfg.optim.ema_decay) if cfg.optim.ema_decay else None
    model = DistributedDataParallel(student) if procs.distributed else student

    # -- state, possibly resumed -----------------------------------------------------------------------------
    step, epoch, epoch_step, best = 0, 0, 0, -math.inf
    calibrated = None  # the student's score threshold calibrated on the last validation (None: not yet / off)
    log = RunLog(out, enabled=procs.is_main)
    if resume_state is not None:
        student.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if ema is not None and resume_state.get("ema") is not None:
            ema.load_state_dict(resume_state["ema"], resume_state["ema_updates"])
        step, epoch, epoch_step = resume_state["step"], resume_state["epoch"], resume_state["epoch_step"]
        best = resume_state["best_metric"]
        calibrated = resume_state.get("calibrated_min_score")
        log.restore(resume_state["history"])
        ckpt.set_rng_state(resume_state["rng"])
        if procs.is_main:
            print(f"resuming {out} at epoch {epoch + 1}, step {step}", flush=True)

    def checkpoint_state() -> dict:
        return {
            "format": ckpt.FORMAT,
            "student": cfg.model.student,
            "student_kwargs": dict(cfg.model.student_kwargs),
            "spec": _student_spec(student, spec, calibrated).to_dict(),
            "teacher": cfg.model.teacher,
            "anchors": spec.anchors.to_dict(),
            "input_size": spec.input_size,
            "min_score": spec.min_score,  # the teacher's threshold
            "calibrated_min_score": calibrated,  # the student's (also its spec's min_score), None when not calibrated
            "nms_iou": spec.nms_iou,
            "config": cfg.to_dict(),
            "model": student.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "ema_updates": ema.updates if ema is not None else 0,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "epoch_step": epoch_step,
            "step": step,
            "best_metric": best,
            "metric_name": cfg.val.metric,
            "history": log.history(),
            "rng": ckpt.rng_state(),
        }

    def save(name: str) -> None:
        if procs.is_main:
            ckpt.save_checkpoint(checkpoint_state(), out / name)

    def validate_and_save() -> None:
        """Validate (main process), log the row, write best.pt / last.pt and the plots; all processes wait."""
        nonlocal best, calibrated
        if procs.is_main:
            eval_model = ema.module if ema is not None else student
            metrics = validate(eval_model, teacher, parts.val_loader, parts.loss_fn, cfg.val, device, memory_format)
            row = {
                "epoch": round(epoch + epoch_step / steps_per_epoch, 4),
                "step": step,
                "lr": scheduler.get_last_lr()[0],
                "train_loss": period_loss[0] / period_loss[1] if period_loss[1] else math.nan,
                **metrics,
            }
            if cfg.val.calibrate and math.isfinite(metrics["calibrated_min_score"]):
                calibrated = round(metrics["calibrated_min_score"], 4)
            log.epoch_end(row)
            tqdm.write(log.format_row(row))
            if not (out / "best.pt").exists() or metrics[cfg.val.metric] > best:
                best = metrics[cfg.val.metric]
                save("best.pt")
            save("last.pt")
            log.plot()
        period_loss[:] = [0.0, 0]
        barrier(procs)

    # -- epochs ----------------------------------------------------------------------------------------------
    period_loss = [0.0, 0]  # train loss sum and count since the last validation
    timer = StepTimer(device)
    started = time.monotonic()
    stop_reason = "finished"
    while step < total_steps:
        if epoch_step and resume_state is not None:
            ckpt.set_rng_state(resume_state["rng"])  # mid-epoch resume: continue the saved random streams
        else:
            seed_everything(derive_seed(cfg.train.seed, epoch, procs.rank))
        if hasattr(parts.train_loader, "set_epoch"):
            parts.train_loader.set_epoch(epoch)
        batches = iter(parts.train_loader)
        for _ in range(epoch_step):  # mid-epoch resume: the same order, so drop the batches already trained on
            next(batches)
        model.train()
        epoch_done = True
        bar = tqdm(
            total=steps_per_epoch,
            initial=epoch_step,
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not procs.is_main,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        timer.start()
        for batch in batches:
            images = _as_model_input(batch, device, memory_format)
            timer.mark("data")
            with torch.inference_mode():
                t_reg, t_cls = teacher(images)
            target = (t_reg.clone(), t_cls.clone())  # plain tensors: inference tensors cannot be saved for backward
            timer.mark("teacher")
            with autocast:
                s_reg, s_cls = model(images)
            loss, loss_parts = _call_loss(parts.loss_fn, (s_reg.float(), s_cls.float()), target)
            if not all_finite(loss, procs):
                save("last.pt")  # the weights are still those after the last good step
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}: stopping; {out / 'last.pt'} "
                    f"keeps the last good state (step {step}); lower --lr or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(student.parameters(), cfg.optim.grad_clip or math.inf)
            if not all_finite(grad_norm, procs):
                save("last.pt")
                raise NonFiniteLossError(
                    f"gradient norm is {grad_norm.item()} at epoch {epoch + 1}, step {step + 1}: stopping; "
                    f"{out / 'last.pt'} keeps the last good state (step {step}); lower --lr or the clip"
                )
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(student)
            step, epoch_step = step + 1, epoch_step + 1
            timer.mark("student", images=images.shape[0] * procs.world_size)

            loss_value = loss.item()
            period_loss[0], period_loss[1] = period_loss[0] + loss_value, period_loss[1] + 1
            lr = scheduler.get_last_lr()[0]
            if step % cfg.train.log_every == 0:
                log.train_step(step, loss_value, lr, loss_parts)
            bar.set_postfix(
                loss=f"{loss_value:.4g}", lr=f"{lr:.2e}", img_s=f"{timer.images_per_s():.0f}", refresh=False
            )
            bar.update()
            mid_epoch = epoch_step < steps_per_epoch and step < total_steps
            if cfg.train.val_every_steps and step % cfg.train.val_every_steps == 0 and mid_epoch:
                validate_and_save()
            elif step % cfg.train.save_every_steps == 0:
                save("last.pt")
            out_of_time = cfg.train.time_limit and time.monotonic() - started > cfg.train.time_limit * 60
            if step >= total_steps or out_of_time:
                stop_reason = f"time limit of {cfg.train.time_limit:g} min" if out_of_time else stop_reason
                epoch_done = epoch_step >= steps_per_epoch
                break
            timer.start()
        bar.close()
        if epoch_done:
            epoch, epoch_step = epoch + 1, 0

        validate_and_save()
        if stop_reason != "finished":
            break
        if stop_after_epoch is not None and epoch >= stop_after_epoch and step < total_steps:
            stop_reason = f"paused after epoch {epoch} (continue with --resume)"
            break

    # -- the end: side-by-side pictures, summary -------------------------------------------------------------
    summary = {}
    if procs.is_main:
        eval_model = ema.module if ema is not None else student
        pictures = draw_side_by_side(
            teacher, eval_model.eval(), parts.preview, out / "side_by_side", student_min_score=calibrated
        )
        summary = {
            "run": str(out),
            "teacher": cfg.model.teacher,
            "student": cfg.model.student,
            "loss": cfg.loss.name,
            "stopped": stop_reason,
            "epochs": round(epoch + epoch_step / steps_per_epoch, 4),
            "steps": step,
            "wall_time_s": round(time.monotonic() - started, 1),
            "device": str(device),
            "processes": procs.world_size,
            "train_batches_per_epoch": steps_per_epoch,
            "best": {cfg.val.metric: best},
            "teacher_min_score": spec.min_score,
            "calibrated_min_score": calibrated,
            "final": log.last_row(),
            "throughput": timer.summary(),
            "side_by_side": len(pictures),
            "data": parts.data_note,
        }
        (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
        print(_format_summary(summary), flush=True)
    return summary


class StepTimer:
    """Splits each step's wall time into waiting for data, the teacher, and the student's update."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals = {"data": 0.0, "teacher": 0.0, "student": 0.0}
        self.images = 0
        self.steps = 0
        self._last = time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def mark(self, phase: str, images: int = 0) -> None:
        if self.device.type == "cuda" and phase != "data":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.totals[phase] += now - self._last
        self._last = now
        self.images += images
        self.steps += phase == "student"

    def images_per_s(self) -> float:
        return self.images / max(1e-9, sum(self.totals.values()))

    def summary(self) -> dict:
        total = max(1e-9, sum(self.totals.values()))
        return {
            "images_per_s": round(self.images_per_s(), 2),
            "step_ms": round(1000 * total / max(1, self.steps), 2),
            "data_wait_share": round(self.totals["data"] / total, 4),
            "teacher_share": round(self.totals["teacher"] / total, 4),
            "student_share": round(self.totals["student"] / total, 4),
            "steps_timed": self.steps,
        }


def _resume_path(resume: str | Path, out: Path) -> Path:
    path = Path(resume) if str(resume) else out
    return path / "last.pt" if path.is_dir() else path


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _as_model_input(batch, device: torch.device, memory_format: torch.memory_format) -> torch.Tensor:
    """A batch (tensor, or object with .images) as float32 in [-1, 1] on the device; uint8 is converted there."""
    images = batch.images if hasattr(batch, "images") else batch
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = images.float().div_(127.5).sub_(1.0)
    return images.contiguous(memory_format=memory_format)


def _call_loss(loss_fn: LossFn, student_out, teacher_out) -> tuple[torch.Tensor, dict]:
    """(scalar to backpropagate, {component: value}) from a loss returning a tensor or a dict with "total"."""
    result = loss_fn(student_out, teacher_out)
    if isinstance(result, dict):
        return result["total"], {k: float(v.detach()) for k, v in result.items() if k != "total"}
    return result, {}


def _student_spec(student: nn.Module, teacher_spec: ModelSpec, min_score: float | None) -> ModelSpec:
    """The student's spec (the teacher's layout), with the calibrated threshold when there is one."""
    spec = getattr(student, "spec", None) or teacher_spec
    return spec if min_score is None else dataclasses.replace(spec, min_score=min_score)


def _threshold_note(summary: dict) -> str:
    if summary["calibrated_min_score"] is None:
        return f"student threshold {summary['teacher_min_score']:g} (the teacher's)"
    calibrated, teacher = summary["calibrated_min_score"], summary["teacher_min_score"]
    return f"student threshold {calibrated:g} (calibrated; teacher {teacher:g})"


def _format_summary(summary: dict) -> str:
    tp = summary["throughput"]
    return (
        f"done ({summary['stopped']}): {summary['steps']} steps, {summary['epochs']:.2f} epochs; "
        f"best {', '.join(f'{k} {v:.4f}' for k, v in summary['best'].items())}; "
        f"{_threshold_note(summary)}; "
        f"{tp['images_per_s']:.1f} images/s, {100 * tp['data_wait_share']:.1f}% of step time waiting for data, "
        f"{100 * tp['teacher_share']:.1f}% in the teacher; run folder {summary['run']}"
    )
