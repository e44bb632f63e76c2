"""A generic trainer on HF ``accelerate``: one loop for every model kind, from one CPU to many GPUs and nodes.

Scaling: the same command runs under ``accelerate launch`` (several GPUs / nodes; configure with
``accelerate config``) — data are sharded per process, gradients all-reduced, checkpoints written once.
``data.batch_size`` is per process.

Output directory (``train.output_dir``)::

    config.yaml                    the resolved configuration of the run
    checkpoints/step_000200/       accelerate.save_state (model weights as safetensors; optimizer, scheduler and
                                   RNG states as torch pickles) + trainer_state.json (written last: a checkpoint
                                   without it is incomplete and ignored)
    logs/metrics.csv               step, split (train/val), metric, value, wall time [s]
    logs/tensorboard/              the same metrics for TensorBoard
    final/                         the trained model(s), diffusers/transformers-style (config + safetensors)

Checkpoints are trusted local files: the optimizer and RNG states are pickles (``torch.load``); resume only from
checkpoints you wrote. Final models are safetensors only.

Resume (``resume=True``): the newest complete checkpoint is loaded after its stored config has been compared with
the given one — any difference outside :data:`vidplan_core.training.config.RESUME_FREE_KEYS` is a ConfigError
naming the keys, raised before models or data are touched. Without ``resume`` an output directory that already
has checkpoints is refused (nothing is overwritten by accident).

Divergence: a non-finite loss (or gradient norm, or parameters at a checkpoint) raises :class:`TrainingDivergedError`
naming the step and the loss; nothing is saved after it, so the newest checkpoint is the last good one.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from vidplan_core.config import ConfigError
from vidplan_core.training.config import TrainConfig, config_diff

__all__ = ["TrainError", "TrainRecipe", "Trainer", "TrainingDivergedError", "latest_checkpoint"]

STATE_NAME = "trainer_state.json"


class TrainError(RuntimeError):
    """A training run that cannot start or continue (e.g. nothing to resume); the message says why."""


class TrainingDivergedError(TrainError):
    """The loss became NaN/Inf. Attributes: step, name (loss term), value, checkpoint (last good one or None)."""

    def __init__(self, step: int, name: str, value: float, checkpoint: Path | None):
        self.step, self.name, self.value, self.checkpoint = step, name, value, checkpoint
        keep = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint had been written yet"
        super().__init__(f"training diverged at step {step}: {name} = {value}; stopped without saving; {keep}")


class TrainRecipe(Protocol):
    """What a model kind provides to :class:`Trainer` (see :mod:`vidplan_core.training.recipes`).

    ``setup`` builds the trainable module (whose ``forward(**inputs)`` returns a dict of scalar losses with the
    key ``"loss"`` for the total), frozen helpers and the datasets. ``inputs`` turns a data batch into the
    module's inputs (frozen models run here, under no_grad). ``val_metrics`` adds metrics on a validation batch,
    ``save_final`` writes the trained model(s).
    """

    model: Any
    train_dataset: Any
    val_dataset: Any

    def setup(self, device: Any, is_main: bool) -> None: ...

    def inputs(self, batch: dict[str, Any], train: bool) -> dict[str, Any]: ...

    def val_metrics(self, model: Any, batch: dict[str, Any], inputs: dict[str, Any]) -> dict[str, float]: ...

    def save_final(self, model: Any, out_dir: Path) -> None: ...


def _complete_checkpoints(output_dir: Path) -> list[Path]:
    d = output_dir / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / STATE_NAME).is_file())


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    ck = _complete_checkpoints(Path(output_dir))
    return ck[-1] if ck else None


class _CsvLog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.is_file()
        self.f = path.open("a", newline="")
        self.w = csv.writer(self.f)
        if new:
            self.w.writerow(["step", "split", "metric", "value", "wall_s"])

    def write(self, step: int, split: str, metrics: dict[str, float], wall: float) -> None:
        for k, v in metrics.items():
            self.w.writerow([step, split, k, f"{v:.6g}", f"{wall:.1f}"])
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class Trainer:
    """Runs a :class:`TrainRecipe` with the settings of a :class:`TrainConfig` (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, recipe: TrainRecipe, resume: bool = False):
        self.cfg, self.recipe, self.resume = cfg, recipe, resume
        self.out = Path(cfg.train.output_dir)
        self.resume_from: Path | None = None
        self._check_resume()

    # ------------------------------------------------------------------------------------------------ checks
    def _check_resume(self) -> None:
        """Before any work: a resumed run must match its checkpoint's config; a new one must not clobber one."""
        ckpt = latest_checkpoint(self.out)
        if not self.resume:
            if ckpt is not None:
                raise TrainError(f"{self.out} already holds checkpoints (newest {ckpt.name}); pass --resume to "
                                 f"continue that run, or choose another train.output_dir")
            return
        if ckpt is None:
            raise TrainError(f"nothing to resume: {self.out} holds no complete checkpoint")
        state = json.loads((ckpt / STATE_NAME).read_text())
        try:
            old = TrainConfig.model_validate(state["config"])
        except Exception as exc:
            raise ConfigError(str(ckpt / STATE_NAME), [("config", f"cannot be read with this version: {exc}")]) from exc
        diff = config_diff(old, self.cfg)
        if diff:
            raise ConfigError(f"{ckpt} (resumed with a different config)", diff)
        self.resume_from = ckpt

    # ------------------------------------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        """Train until ``train.max_steps``; returns {"step", "final_dir", "val": last validation metrics}."""
        import torch
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        # cpu=True on a machine without a GPU: accelerate otherwise ignores a multi-process launch there
        # (WORLD_SIZE=2, yet every process believes it is alone and they race on the same checkpoints)
        from accelerate.utils import GradientAccumulationPlugin

        tracker = None if cfg.train.tracker == "none" else cfg.train.tracker
        if tracker == "wandb":
            try:
                import wandb  # noqa: F401
            except ImportError as exc:
                raise ConfigError(f"training config ({cfg.kind})", [
                    ("train.tracker", "wandb is not installed (pip install wandb), or choose tensorboard / none")
                ]) from exc
        # micro-batches are counted by the trainer, not by the end of an epoch's loader: sync every n exactly
        accum = GradientAccumulationPlugin(num_steps=cfg.train.grad_accum_steps, sync_with_dataloader=False)
        acc = Accelerator(cpu=not _has_gpu(), mixed_precision=cfg.train.mixed_precision, log_with=tracker,
                          gradient_accumulation_plugin=accum,
                          project_config=ProjectConfiguration(project_dir=str(self.out),
                                                              logging_dir=str(self.out / "logs")))
        set_seed(cfg.train.seed, device_specific=True)
        with acc.main_process_first():  # the main process builds caches (latents) first, the others reuse them
            self.recipe.setup(acc.device, acc.is_main_process)
        model = self.recipe.model
        if cfg.train.gradient_checkpointing:
            enabled = [m for m in model.modules() if getattr(m, "_supports_gradient_checkpointing", False)
                       and hasattr(m, "enable_gradient_checkpointing")]
            if not enabled:
                raise ConfigError(f"training config ({cfg.kind})", [
                    ("train.gradient_checkpointing", f"{cfg.kind}: no module of this model supports gradient "
                     "checkpointing")])
            for m in enabled:
                m.enable_gradient_checkpointing()
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise TrainError(f"{cfg.kind}: the model has no trainable parameters")
        ema = None
        if cfg.train.ema_decay is not None:
            from diffusers.training_utils import EMAModel

            ema = EMAModel(params, decay=cfg.train.ema_decay)
            acc.register_for_checkpointing(ema)  # saved and resumed with the optimizer
        opt = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
                                weight_decay=cfg.optim.weight_decay)
        warm = cfg.optim.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        model, opt, sched = acc.prepare(model, opt, sched)
        if ema is not None:
            ema.to(acc.device)
        step = 0
        if self.resume_from is not None:
            acc.load_state(str(self.resume_from))
            step = int(json.loads((self.resume_from / STATE_NAME).read_text())["step"])
        if acc.is_main_process:
            import yaml

            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        if tracker is not None:
            # tensorboard: the project name is the sub-directory of logs/ (logs/tensorboard); wandb: the project
            acc.init_trackers("tensorboard" if tracker == "tensorboard" else "vidplan",
                              config={k: v for k, v in cfg.flat().items() if isinstance(v, (int, float, str, bool))})
        log = _CsvLog(self.out / "logs" / "metrics.csv") if acc.is_main_process else None
        t_start = time.time()
        last_ckpt = latest_checkpoint(self.out)
        val: dict[str, float] = {}
        batches = self._batches(acc, step)
        pbar = None
        if cfg.train.progress and acc.is_main_process:
            from tqdm.auto import tqdm

            pbar = tqdm(total=cfg.train.max_steps, initial=step, desc=f"train {cfg.kind}", unit="step")
        running: dict[str, float] = {}
        n_run = 0
        try:
            while step < cfg.train.max_steps:
                model.train()
                values: dict[str, float] = {}
                # one optimizer step = grad_accum_steps micro-batches (accelerate scales each loss by 1/n and
                # skips the all-reduce until the last one)
                for _ in range(cfg.train.grad_accum_steps):
                    batch = next(batches)
                    with acc.accumulate(model):
                        inputs = self.recipe.inputs(batch, train=True)
                        losses = model(**inputs)
                        loss = losses["loss"]
                        micro = {k: float(v.detach().float().mean()) for k, v in losses.items()}
                        for k, v in micro.items():
                            if not math.isfinite(v):
                                raise TrainingDivergedError(step + 1, k, v, last_ckpt)
                            values[k] = values.get(k, 0.0) + v / cfg.train.grad_accum_steps
                        acc.backward(loss)
                        if cfg.optim.grad_clip is not None and acc.sync_gradients:
                            gn = float(acc.clip_grad_norm_(params, cfg.optim.grad_clip))
                            if not math.isfinite(gn):
                                raise TrainingDivergedError(step + 1, "gradient norm", gn, last_ckpt)
                            values["grad_norm"] = gn
                        opt.step()
                        sched.step()
                        opt.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.step(params)
                step += 1
                for k, v in values.items():
                    running[k] = running.get(k, 0.0) + v
                n_run += 1
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{values['loss']:.4g}")
                if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                    metrics = {k: v / n_run for k, v in running.items()}
                    metrics["lr"] = sched.get_last_lr()[0]
                    acc.log({f"train/{k}": v for k, v in metrics.items()}, step=step)
                    if log:
                        log.write(step, "train", metrics, time.time() - t_start)
                    running, n_run = {}, 0
                if step % cfg.train.val_every == 0 or step == cfg.train.max_steps:
                    val = self._validate(acc, model)
                    if val:
                        acc.log({f"val/{k}": v for k, v in val.items()}, step=step)
                        if log:
                            log.write(step, "val", val, time.time() - t_start)
                        if pbar is not None:
                            pbar.write(f"step {step}: " + ", ".join(f"val {k} {v:.4g}" for k, v in val.items()))
                if step % cfg.train.ckpt_every == 0 or step == cfg.train.max_steps:
                    last_ckpt = self._checkpoint(acc, model, step, last_ckpt)
        except BaseException:
            acc.end_training()  # flush the trackers of a failed run
            raise
        finally:
            if pbar is not None:
                pbar.close()
            if log:
                log.close()
        final = self.out / "final"
        acc.wait_for_everyone()
        if acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            if ema is not None:
                ema.copy_to(params)  # the final model is the average (training has ended: no restore needed)
            self.recipe.save_final(acc.unwrap_model(model), final)
        acc.wait_for_everyone()
        # last: end_training also ends a multi-process run's process group, which the barriers above need
        acc.end_training()
        return {"step": step, "final_dir": final, "val": val, "checkpoint": last_ckpt}

    # ------------------------------------------------------------------------------------------------ parts
    def _loader(self, acc: Any, dataset: Any, shuffle: bool, seed: int) -> Any:
        import torch
        from torch.utils.data import DataLoader

        if len(dataset) == 0:
            raise TrainError(f"{self.cfg.kind}: a dataset split yields no samples (episodes shorter than a window?)")
        gen = torch.Generator().manual_seed(seed)
        loader = DataLoader(dataset, batch_size=self.cfg.data.batch_size, shuffle=shuffle, generator=gen,
                            num_workers=self.cfg.data.num_workers, drop_last=shuffle and len(dataset) >= 2 *
                            self.cfg.data.batch_size * acc.num_processes)
        return acc.prepare_data_loader(loader)

    def _batches(self, acc: Any, step: int) -> Iterator[dict[str, Any]]:
        """Endless batches; epoch e is shuffled with seed + e, so a resumed run sees the same order."""
        first = self._loader(acc, self.recipe.train_dataset, True, self.cfg.train.seed)
        per_epoch = max(1, len(first))
        epoch, skip = divmod(step * self.cfg.train.grad_accum_steps, per_epoch)  # micro-batches seen
        while True:
            loader = self._loader(acc, self.recipe.train_dataset, True, self.cfg.train.seed + epoch)
            if skip:
                loader = acc.skip_first_batches(loader, skip)
                skip = 0
            yield from loader
            epoch += 1

    def _validate(self, acc: Any, model: Any) -> dict[str, float]:
        import torch

        ds = self.recipe.val_dataset
        if ds is None or len(ds) == 0:
            return {}
        loader = self._loader(acc, ds, False, 0)
        model.eval()
        sums: dict[str, float] = {}
        n = 0
        rng_state = torch.get_rng_state()
        torch.manual_seed(12345)  # same noise every validation: comparable numbers across steps
        try:
            with torch.no_grad():
                for i, batch in enumerate(loader):
                    if i >= self.cfg.train.val_batches:
                        break
                    inputs = self.recipe.inputs(batch, train=False)
                    out = {k: float(v.float().mean()) for k, v in model(**inputs).items()}
                    out.update(self.recipe.val_metrics(acc.unwrap_model(model), batch, inputs))
                    for k, v in out.items():
                        sums[k] = sums.get(k, 0.0) + v
                    n += 1
        finally:
            torch.set_rng_state(rng_state)
        if n == 0:
            return {}
        t = torch.tensor([sums[k] / n for k in sorted(sums)], device=acc.device)
        t = acc.reduce(t, reduction="mean")
        return dict(zip(sorted(sums), (float(x) for x in t), strict=False))

    def _checkpoint(self, acc: Any, model: Any, step: int, previous: Path | None) -> Path | None:
        import torch

        for name, p in acc.unwrap_model(model).named_parameters():
            if not bool(torch.isfinite(p).all()):
                raise TrainingDivergedError(step, f"parameter {name} (non-finite after the update)", float("nan"),
                                       previous)
        ck = self.out / "checkpoints" / f"step_{step:07d}"
        acc.wait_for_everyone()
        if acc.is_main_process and ck.exists():
            shutil.rmtree(ck)
        acc.wait_for_everyone()
        acc.save_state(str(ck))
        if acc.is_main_process:
            state = {"step": step, "kind": self.cfg.kind, "config": self.cfg.model_dump(mode="json"),
                     "time": time.time()}
            tmp = ck / (STATE_NAME + ".tmp")
            tmp.write_text(json.dumps(state, indent=2))
            tmp.replace(ck / STATE_NAME)  # written last: marks the checkpoint complete
            keep = self.cfg.train.keep_checkpoints
            d = self.out / "checkpoints"
            for old in sorted(p for p in d.iterdir() if p.is_dir() and p != ck):
                if not (old / STATE_NAME).is_file():
                    shutil.rmtree(old)  # incomplete leftovers of an interrupted save
            complete = _complete_checkpoints(self.out)
            for old in complete[:-keep]:
                shutil.rmtree(old)
        acc.wait_for_everyone()
        return ck


def _has_gpu() -> bool:
    """A CUDA (or other torch accelerator) device is visible."""
    import torch

    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return bool(torch.cuda.is_available())
