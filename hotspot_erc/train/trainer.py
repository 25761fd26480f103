"""Training and evaluation of :class:`~hotspot_erc.nn.model.HotspotERC`.

Adam; cross-entropy (optionally class-weighted) + ``lb_weight`` · MoA load balancing; linear
warm-up then a cosine / linear / constant LR schedule per step; gradient clipping; early stopping
on dev weighted F1; bfloat16 autocast on GPU; optional ``torch.compile``; DDP under ``torchrun``
(gloo on CPU, NCCL on GPU).

Reproducibility: the weights come from ``seed``; the data order of epoch e and the dropout stream
of epoch e are seeded from (seed, e) rather than carried over from earlier epochs, so resuming
from the checkpoint of epoch e continues exactly like the uninterrupted run.

Data: batches come from the data layer's loader (:func:`hotspot_erc.data.dataset.dialogue_loader`):
length-bucketed, seeded global batches, optional worker processes, pinned memory and non-blocking
copies on CUDA. Evaluation and prediction read the same loader without shuffling or bucketing, so
their outputs follow the stored order.

Distributed: every rank builds the same global batch of dialogues and takes its share
(``rank::world_size``, done by the sampler); the cross-entropy is normalised by the *global* (weighted) count of
labelled utterances, so the averaged DDP gradient equals the single-process gradient of the same
global batch. (The load-balancing term is computed per rank and averaged; it is not a function of
the global batch.) Every rank evaluates the full dev set with identical weights, so early-stopping
decisions agree without communication; only rank 0 writes files.

This module holds the loop; its parts live beside it, and their names stay importable from here:
:mod:`~hotspot_erc.train.distributed` (process group), :mod:`~hotspot_erc.train.device` (device
choice, autocast), :mod:`~hotspot_erc.train.batching` (loaders), :mod:`~hotspot_erc.train.class_weights`,
:mod:`~hotspot_erc.train.schedule` (LR), :mod:`~hotspot_erc.train.branches` (per-branch gradient
norms), :mod:`~hotspot_erc.train.model_io` (build, size, load, check a model) and
:mod:`~hotspot_erc.train.prediction` (``predict``).
"""
from __future__ import annotations

import logging
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from hotspot_erc.nn.config import with_legacy_fields
from hotspot_erc.train import checkpoint as ckpt
from hotspot_erc.train.batching import eval_loader, train_loader
from hotspot_erc.train.branches import BRANCH_OF, branch_grad_sq, branch_parameters  # noqa: F401
from hotspot_erc.train.class_weights import inverse_frequency_weights, split_labels
from hotspot_erc.train.config import RunConfig
from hotspot_erc.train.device import autocast, resolve_device  # noqa: F401
from hotspot_erc.train.distributed import DistInfo, init_distributed  # noqa: F401
from hotspot_erc.train.metrics import evaluate_predictions
from hotspot_erc.train.model_io import (MIN_AUTO_SPEAKERS, build_model, check_corpus_fits,  # noqa: F401
                                        checkpoint_config, load_model, size_speaker_table, speakers_needed)
from hotspot_erc.train.prediction import predict
from hotspot_erc.train.reports import Diagnostics, routing_entropy
from hotspot_erc.train.schedule import lr_lambda

LAST, BEST = "last.safetensors", "best.safetensors"
# Train settings a resume must share with the run it continues (they fix the data order and steps),
# and the value a checkpoint written before a setting existed was trained with.
RESUME_KEYS = ("seed", "batch_size", "epochs", "lr", "schedule", "warmup", "bucket", "align_warmup")
LEGACY_TRAIN = {"bucket": False, "align_warmup": 0}


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN/Inf; nothing non-finite was saved."""


class Trainer:
    """Fits a model on ``train_set`` with early stopping on ``dev_set``.

    ``run_dir`` (optional) receives ``checkpoints/last.safetensors`` every epoch and
    ``checkpoints/best.safetensors`` whenever dev weighted F1 improves (rank 0 only).
    ``resume=True`` continues from ``run_dir/checkpoints/last.safetensors``.
    ``callbacks``: callables ``fn(trainer, epoch, record)`` run after each epoch's checkpoint.
    """

    def __init__(self, cfg: RunConfig, train_set, dev_set, label_names: list[str], dims: dict[str, int],
                 run_dir: str | None = None, resume: bool = False, callbacks=(), dist_info: DistInfo | None = None):
        if len(train_set) and len(dev_set):
            cfg = size_speaker_table(cfg, speakers_needed(train_set, dev_set),
                                     getattr(getattr(train_set, "corpus", None), "path", "the corpus"))
        self.cfg = cfg
        self.t = cfg.train
        self.train_set, self.dev_set = train_set, dev_set
        self.label_names = list(label_names)
        self.dims = dict(dims)
        self.run_dir = run_dir
        self.callbacks = list(callbacks)
        self.dist = dist_info or DistInfo()
        self.device = resolve_device(self.t.device, self.dist)
        if len(train_set) == 0:
            raise ValueError("the train split is empty")
        if len(dev_set) == 0:
            raise ValueError("the dev split is empty (early stopping needs it)")
        if self.dist.enabled and self.t.batch_size < self.dist.world_size:
            raise ValueError(f"batch_size ({self.t.batch_size}) must be >= the number of processes "
                             f"({self.dist.world_size}): it is the global batch")

        torch.manual_seed(self.t.seed)
        self.model = build_model(cfg, dims, len(label_names)).to(self.device)
        # Warm-up trains the alignment objective alone: without one (MoA off, e.g. the no_moa
        # ablation or text-only data, or align_weight 0) there is nothing to warm up.
        self.align_warmup = self.t.align_warmup if self.model.align_weight > 0 else 0
        if self.t.align_warmup and not self.align_warmup and self.dist.is_main:
            logging.getLogger(__name__).warning(
                "align_warmup (%d epochs) is ignored: the model has no alignment objective (MoA off or "
                "align_weight 0)", self.t.align_warmup)
        self.total_epochs = self.align_warmup + self.t.epochs
        self.class_weight = None
        if self.t.class_weights:
            self.class_weight = inverse_frequency_weights(split_labels(train_set), len(label_names)).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.t.lr, weight_decay=self.t.weight_decay)
        self.loader = train_loader(train_set, self.t, self.device, self.dist)
        self._eval_loaders: dict[int, object] = {}
        self.steps_per_epoch = len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.total_epochs * self.steps_per_epoch, self.t.warmup, self.t.schedule))
        self.fwd = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Some parameters get no gradient in some steps by design: the frame encoder whenever
            # its vectors do not reach the loss (the default: the graph reads MoA's vectors; the
            # encoder still feeds the instruments), HGF with moa_input="projected" and no hgf_join,
            # and everything but MoA's queries/keys (and HGF's rows behind them) in warm-up epochs.
            self.fwd = DDP(self.model, device_ids=ids, find_unused_parameters=True)
        if self.t.compile:
            self.fwd = torch.compile(self.fwd, dynamic=True)

        self.start_epoch = 0
        self.history: list[dict] = []
        self.best_f1 = -1.0
        self.best_epoch = -1
        self.bad_epochs = 0
        self.stopped = False
        self._best_state = None
        # The checkpoint folder is created by the first save: a refused configuration leaves no folder.
        if resume:
            self._resume()

    # -------------------------------------------------------------- paths & state
    @property
    def checkpoint_dir(self) -> str:
        if self.run_dir is None:
            raise ValueError("this Trainer has no run_dir")
        return os.path.join(self.run_dir, "checkpoints")

    def _config_dict(self) -> dict:
        return checkpoint_config(self.cfg, self.dims, self.label_names)

    def _state(self) -> dict:
        return {"epoch": len(self.history) - 1, "history": self.history, "best_f1": self.best_f1,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs, "stopped": self.stopped,
                "scheduler": self.scheduler.state_dict(), "world_size": self.dist.world_size}

    def _resume(self) -> None:
        path = os.path.join(self.checkpoint_dir, LAST)
        if self.dist.is_main:
            ckpt.remove_stale_temp_files(self.checkpoint_dir)
        ck = ckpt.load_checkpoint(path)
        saved, now = dict(ck.config.get("run", {})), self.cfg.to_dict()
        saved["model"] = with_legacy_fields(saved.get("model") or {})
        for section in ("model",):
            if saved.get(section) != now[section]:
                diff = {k: (saved.get(section, {}).get(k), v) for k, v in now[section].items()
                        if saved.get(section, {}).get(k) != v}
                raise ckpt.CheckpointError(f"cannot resume from {path}: the model config differs "
                                           f"(setting: (checkpoint, now)) {diff}")
        for key in RESUME_KEYS:
            was = saved.get("train", {}).get(key, LEGACY_TRAIN.get(key))
            if was != now["train"][key]:
                raise ckpt.CheckpointError(
                    f"cannot resume from {path}: train.{key} was {was!r}, now {now['train'][key]!r} "
                    "(resuming reproduces the original run; start a new run instead)")
        ckpt.apply_model_state(self.model, ck)
        ckpt.apply_optimizer_state(self.optimizer, ck)
        st = ck.state
        self.scheduler.load_state_dict(st["scheduler"])
        self.history = list(st["history"])
        self.best_f1, self.best_epoch = st["best_f1"], st["best_epoch"]
        self.bad_epochs, self.stopped = st["bad_epochs"], st["stopped"]
        self.start_epoch = st["epoch"] + 1

    # -------------------------------------------------------------- training
    def _step(self, batch, warmup: bool = False) -> tuple[torch.Tensor, ...]:
        with autocast(self.device, self.t.amp):
            out = self.fwd(batch)
        logits = out.logits.float()
        labels = batch.labels
        valid = (labels >= 0).to(logits.dtype)
        safe = labels.clamp(min=0)
        w = valid if self.class_weight is None else self.class_weight[safe] * valid
        ce_sum = (F.cross_entropy(logits, safe, reduction="none") * w).sum()
        denom = w.sum().detach()
        if self.dist.enabled:
            dist.all_reduce(denom)
        denom = torch.where(denom > 0, denom, torch.ones_like(denom))
        lb = out.lb_loss.float()
        # DDP averages gradients over ranks: scale so the average is the global-batch mean.
        loss = ce_sum / denom * self.dist.world_size * (0.0 if warmup else 1.0) + self.t.lb_weight * lb
        align = lb.new_zeros(())
        if out.align_loss is not None:
            align = out.align_loss.float()
            loss = loss + self.model.align_weight * align
        # Checking every step is free on CPU; on a GPU it would sync, so there the epoch totals
        # (which a NaN step poisons) are checked before anything is evaluated or saved.
        if loss.device.type == "cpu" and not bool(torch.isfinite(loss.detach())):
            self._diverged(f"the training loss became {float(loss.detach())}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._grad_sq = self._grad_sq + branch_grad_sq(self._branch_params)
        if self.t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return ce_sum.detach(), w.sum().detach(), lb.detach(), align.detach()

    def _train_epoch(self, epoch: int) -> dict:
        # Dropout / modality-dropout stream of this epoch: a function of (seed, epoch, rank) only.
        torch.manual_seed(self.t.seed * 1_000_003 + epoch * 7919 + self.dist.rank)
        self.model.train()
        ce_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        denom = torch.zeros((), dtype=torch.float64, device=self.device)
        lb_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        align_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.loader.batch_sampler.set_epoch(epoch)
        steps = len(self.loader)
        self._branch_params = branch_parameters(self.model)
        self._grad_sq = torch.zeros(len(self._branch_params), dtype=torch.float64, device=self.device)
        bar = tqdm(self.loader, total=steps, desc=f"epoch {epoch + 1}/{self.total_epochs}", leave=False,
                   disable=None if (self.t.progress and self.dist.is_main) else True)
        for batch in bar:
            c, d, lb, al = self._step(batch.to(self.device, non_blocking=True), warmup=epoch < self.align_warmup)
            ce_sum += c.double()
            denom += d.double()
            lb_sum += lb.double()
            align_sum += al.double()
        stats = torch.stack([ce_sum, denom, lb_sum, align_sum])
        if self.dist.enabled:
            dist.all_reduce(stats)
        ce_sum, denom, lb_sum, align_sum = stats.tolist()
        if not all(math.isfinite(v) for v in (ce_sum, lb_sum, align_sum)):
            self._diverged(f"the training loss of epoch {epoch + 1} is not finite")
        lb = lb_sum / max(steps * self.dist.world_size, 1)
        align = align_sum / max(steps * self.dist.world_size, 1)
        ce = ce_sum / max(denom, 1e-12)
        # root-mean-square over the epoch's steps of each branch's gradient norm (before clipping)
        rms = (self._grad_sq / max(steps, 1)).sqrt().tolist()
        return {"train_ce": ce, "train_lb": lb, "train_align": align,
                "train_loss": ce + self.t.lb_weight * lb + self.model.align_weight * align,
                "grad_norm": dict(zip(self._branch_params, rms))}

    def _diverged(self, what: str) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        kept = (f"; the last good epoch ({len(self.history)}) is in {os.path.join(self.checkpoint_dir, LAST)}"
                if self.run_dir is not None and self.history else "")
        raise TrainingDiverged(f"training diverged at epoch {len(self.history) + 1}: {what} (learning rate "
                               f"{lr:.3g}); lower --lr or keep --grad-clip > 0"
                               f"{kept}; no non-finite weights were saved")

    def _check_weights_finite(self) -> None:
        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p.detach()).all())]
        if bad:
            self._diverged(f"{len(bad)} weight tensor(s) hold NaN/Inf (e.g. {bad[0]})")

    def evaluate(self, dataset, diagnostics: Diagnostics | None = None, desc: str = "eval") -> dict:
        # One loader per dataset, kept: its worker processes (if any) then live across epochs.
        if id(dataset) not in self._eval_loaders:
            self._eval_loaders[id(dataset)] = (dataset, eval_loader(dataset, self.t.batch_size, self.device,
                                                                    self.t.num_workers))
        res = predict(self.model, dataset, self.device, amp=self.t.amp, diagnostics=diagnostics,
                      progress=self.t.progress and self.dist.is_main, desc=desc,
                      loader=self._eval_loaders[id(dataset)][1])
        res["metrics"] = evaluate_predictions(res["labels"], res["preds"], self.label_names)
        return res

    def fit(self) -> list[dict]:
        """Train until ``epochs`` or early stopping; leaves the best-dev weights in ``self.model``."""
        for epoch in range(self.start_epoch, self.total_epochs):
            if self.stopped:
                break
            t0 = time.perf_counter()
            rec = {"epoch": epoch + 1, "align_warmup": epoch < self.align_warmup, **self._train_epoch(epoch)}
            self._check_weights_finite()
            dev = self.evaluate(self.dev_set, desc="dev")
            rec.update(dev_loss=dev["loss"], dev_accuracy=dev["metrics"]["accuracy"],
                       dev_weighted_f1=dev["metrics"]["weighted_f1"],
                       dev_routing_entropy={p: routing_entropy(u) for p, u in dev["usage"].items()},
                       lr=self.optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
            self.history.append(rec)
            # Warm-up epochs train no classifier: their dev F1 is neither a best nor a bad epoch.
            improved = epoch >= self.align_warmup and rec["dev_weighted_f1"] > self.best_f1
            if improved:
                self.best_f1, self.best_epoch, self.bad_epochs = rec["dev_weighted_f1"], epoch + 1, 0
                self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            elif epoch >= self.align_warmup:
                self.bad_epochs += 1
            if self.t.patience > 0 and self.bad_epochs >= self.t.patience:
                self.stopped = True
            if self.run_dir is not None and self.dist.is_main:
                if improved:
                    ckpt.save_checkpoint(os.path.join(self.checkpoint_dir, BEST), self.model, self._config_dict(),
                                         {"epoch": epoch, "dev_weighted_f1": self.best_f1}, with_rng=False)
                ckpt.save_checkpoint(os.path.join(self.checkpoint_dir, LAST), self.model, self._config_dict(),
                                     self._state(), optimizer=self.optimizer)
            if self.dist.enabled:
                    dist.barrier()
            if self.t.progress and self.dist.is_main:
                print(f"epoch {epoch + 1:3d}  loss {rec['train_loss']:.4f}  dev acc {rec['dev_accuracy']:.4f}  "
                      f"dev wF1 {rec['dev_weighted_f1']:.4f}" + ("  *" if improved else ""), flush=True)
            for cb in self.callbacks:
                cb(self, epoch, rec)
        self._load_best()
        return self.history

    def _load_best(self) -> None:
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
            return
        path = os.path.join(self.checkpoint_dir, BEST) if self.run_dir is not None else None
        if path and os.path.exists(path):
            ckpt.apply_model_state(self.model, ckpt.load_checkpoint(path))
