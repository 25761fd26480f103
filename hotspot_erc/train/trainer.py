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
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from hotspot_erc.train import checkpoint as ckpt
from hotspot_erc.train.config import RunConfig
from hotspot_erc.train.metrics import evaluate_predictions
from hotspot_erc.train.reports import Diagnostics, routing_entropy

LAST, BEST = "last.safetensors", "best.safetensors"
# A speaker table smaller than this is never chosen automatically (the size models had before
# tables were sized from the corpus, so earlier runs rebuild identically).
MIN_AUTO_SPEAKERS = 8


# Train settings a resume must share with the run it continues (they fix the data order and steps),
# and the value a checkpoint written before a setting existed was trained with.
RESUME_KEYS = ("seed", "batch_size", "epochs", "lr", "schedule", "warmup", "bucket")
LEGACY_TRAIN = {"bucket": False}


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN/Inf; nothing non-finite was saved."""


# ----------------------------------------------------------------------------- distributed

@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (no-op otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_cuda = device_pref != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return info


def resolve_device(pref: str, dist_info: DistInfo | None = None) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a usable device; ValueError otherwise."""
    import re

    if not isinstance(pref, str) or not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", pref.strip()):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {pref!r}")
    pref = pref.strip()
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(pref)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {pref!r} was asked for but no CUDA device is available "
                             "(use --device cpu or auto)")
        if dev.index is None:
            dev = torch.device("cuda", dist_info.local_rank if dist_info and dist_info.enabled else 0)
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {pref!r} was asked for but only {torch.cuda.device_count()} CUDA "
                             "device(s) are visible")
    return dev


# ----------------------------------------------------------------------------- batching

def train_loader(dataset, t, device: torch.device, dist_info: DistInfo):
    """The training loader of ``t`` (a TrainConfig): this rank's share of every global batch."""
    from hotspot_erc.data.dataset import dialogue_loader

    return dialogue_loader(dataset, t.batch_size, shuffle=True, bucket=t.bucket, seed=t.seed,
                           num_workers=t.num_workers, pin_memory=device.type == "cuda",
                           rank=dist_info.rank, world_size=dist_info.world_size)


def eval_loader(dataset, batch_size: int, device: torch.device, num_workers: int = 0):
    """Consecutive dialogues in stored order, so predictions come back in that order."""
    from hotspot_erc.data.dataset import dialogue_loader

    return dialogue_loader(dataset, batch_size, shuffle=False, bucket=False, num_workers=num_workers,
                           pin_memory=device.type == "cuda")


def split_labels(dataset) -> np.ndarray:
    """Labels of every utterance of a :class:`DialogueDataset` (reads only the label array)."""
    c = dataset.corpus
    parts = []
    for d in dataset.indices:
        lo, hi = c.dialogue_utterances(int(d))
        parts.append(np.asarray(c.label[lo:hi], dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def inverse_frequency_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """w_c = n / (C · n_c), 1 for classes absent from the training split."""
    labels = labels[labels >= 0]
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, labels.size / (num_classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(w, dtype=torch.float32)


# Which branch a top-level submodule of HotspotERC belongs to, for the per-branch gradient norms.
BRANCH_OF = {"proj": "hotspot_fusion", "center_beta": "hotspot_fusion", "scorer": "hotspot_fusion",
             "hotspot_marker": "hotspot_fusion", "hgf": "hotspot_fusion", "encoder": "encoder", "pool": "encoder",
             "moa": "moa", "moa_pool": "moa",
             "speaker": "graph", "gnn": "graph", "gnn_norm": "graph", "classifier": "classifier"}


def branch_parameters(model) -> dict[str, list]:
    """{branch: parameters}, branches named by :data:`BRANCH_OF` (other modules by their own name)."""
    groups: dict[str, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            top = name.split(".", 1)[0]
            groups.setdefault(BRANCH_OF.get(top, top), []).append(p)
    return groups


def branch_grad_sq(groups: dict[str, list]) -> torch.Tensor:
    """Squared gradient norm of each branch, float64 [G] on the parameters' device (no sync)."""
    rows = []
    for params in groups.values():
        sq = [p.grad.detach().double().square().sum() for p in params if p.grad is not None]
        rows.append(torch.stack(sq).sum() if sq else torch.zeros((), dtype=torch.float64, device=params[0].device))
    return torch.stack(rows)


def lr_lambda(total_steps: int, warmup: float, schedule: str):
    warm = max(1, int(round(warmup * total_steps))) if warmup > 0 else 0

    def fn(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "linear":
            return 1.0 - progress
        return 1.0

    return fn


# ----------------------------------------------------------------------------- model I/O

def build_model(cfg: RunConfig, dims: dict[str, int], num_classes: int):
    from hotspot_erc.nn.model import HotspotERC

    model_cfg = dataclasses.asdict(cfg.model)
    if model_cfg["num_speakers"] == 0:  # auto, but no corpus was consulted (see size_speaker_table)
        model_cfg["num_speakers"] = MIN_AUTO_SPEAKERS
    return HotspotERC.from_config(model_cfg, dims, num_classes)


def speakers_needed(*datasets) -> int:
    """Speaker-table size the corpora behind ``datasets`` need: the largest dialogue-local speaker
    id + 1 over each whole corpus (every split, so test dialogues fit the trained table too)."""
    need, seen = 0, set()
    for ds in datasets:
        corpus = getattr(ds, "corpus", None)
        if corpus is not None:
            if id(corpus) in seen:
                continue
            seen.add(id(corpus))
            spk = np.asarray(corpus.speaker)
            if spk.size:
                need = max(need, int(spk.max()) + 1)
        else:
            for i in range(len(ds)):
                spk = ds[i].speaker
                if spk.numel():
                    need = max(need, int(spk.max()) + 1)
    return need


def size_speaker_table(cfg: RunConfig, needed: int, where: str = "the corpus") -> RunConfig:
    """A copy of ``cfg`` whose ``model.num_speakers`` fits ``needed`` speakers.

    0 (auto) becomes ``needed``, at least :data:`MIN_AUTO_SPEAKERS` (exactly ``needed`` for the
    ``cogmen`` scheme, whose relations are per speaker pair); an explicit value that is too small
    is refused, since the model would otherwise have to merge speakers.
    """
    cfg = RunConfig.from_dict(cfg.to_dict())
    m = cfg.model
    if m.num_speakers == 0:
        floor = 1 if m.graph_scheme == "cogmen" else MIN_AUTO_SPEAKERS
        m.num_speakers = max(needed, floor)
    elif m.num_speakers < needed:
        raise ValueError(f"num_speakers {m.num_speakers} is too small: {where} has a dialogue with speaker id "
                         f"{needed - 1} ({needed} speakers); use --num-speakers {needed} or more, or 0 to size "
                         "the table from the corpus")
    return cfg


def checkpoint_config(cfg: RunConfig, dims: dict, label_names: list[str]) -> dict:
    import hotspot_erc

    return {"run": cfg.to_dict(), "dims": dict(dims), "label_names": list(label_names),
            "hotspot_erc_version": hotspot_erc.__version__}


def load_model(path: str, device="cpu"):
    """Rebuild the model a checkpoint was trained with and load its weights.
    Returns (model in eval mode, RunConfig, checkpoint config dict)."""
    ck = ckpt.load_checkpoint(path)
    try:
        cfg = RunConfig.from_dict(ck.config["run"])
        dims, labels = ck.config["dims"], ck.config["label_names"]
    except (KeyError, ValueError, TypeError) as exc:
        raise ckpt.CheckpointError(f"checkpoint {path} has an unusable config ({exc})") from exc
    model = build_model(cfg, dims, len(labels))
    ckpt.apply_model_state(model, ck)
    return model.to(device).eval(), cfg, ck.config


def check_corpus_fits(corpus, dims: dict, label_names: list[str], modalities, what: str) -> None:
    """A corpus must have the modalities, feature dims and label names the model was built for."""
    missing = [m for m in modalities if m not in corpus.modalities]
    if missing:
        raise ValueError(f"{what} uses modalities {list(modalities)} but corpus {corpus.path} only has "
                         f"{list(corpus.modalities)}")
    bad = {m: (corpus.dims[m], dims[m]) for m in modalities if int(corpus.dims[m]) != int(dims[m])}
    if bad:
        desc = ", ".join(f"{m}: corpus {c} vs model {d}" for m, (c, d) in bad.items())
        raise ValueError(f"feature dims of corpus {corpus.path} do not match {what} ({desc})")
    if list(corpus.label_names) != list(label_names):
        unknown = [n for n in corpus.label_names if n not in label_names]
        detail = f"unknown label names {unknown}" if unknown else "same names in another order or a subset"
        raise ValueError(f"labels of corpus {corpus.path} ({list(corpus.label_names)}) do not match {what} "
                         f"({list(label_names)}): {detail}")


# ----------------------------------------------------------------------------- evaluation

def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(model, dataset, device, batch_size: int = 16, amp: bool = False, diagnostics: Diagnostics | None = None,
            progress: bool = False, desc: str = "eval", num_workers: int = 0, loader=None) -> dict:
    """Run ``model`` over ``dataset`` in stored order (through ``loader`` when given, e.g. one kept
    with its workers across epochs). Returns numpy arrays ``labels``, ``preds``, ``probs`` [U, C],
    the ``utterance_ids``, the mean dev cross-entropy ``loss`` and the routing usage per pair."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    if loader is None:
        loader = eval_loader(dataset, batch_size, device, num_workers)

    was_training = model.training
    model.eval()
    labels, probs, ids = [], [], []
    usage: dict[str, torch.Tensor] = {}
    ce_sum = torch.zeros((), dtype=torch.float64, device=device)
    # disable=None: tqdm stays quiet when stderr is not a terminal (logs, CI, `make train | tee`).
    for batch in tqdm(loader, desc=desc, disable=None if progress else True, leave=False):
        batch = batch.to(device, non_blocking=True)
        with autocast(device, amp):
            out = model(batch)
        logits = out.logits.float()
        valid = batch.labels >= 0
        ce_sum += F.cross_entropy(logits, batch.labels.clamp(min=0), reduction="none")[valid].double().sum()
        probs.append(torch.softmax(logits, -1).cpu())
        labels.append(batch.labels.cpu())
        ids.extend(batch.utterance_ids)
        for pair, info in out.routing.items():
            u = info.usage.detach().double().cpu()
            usage[pair] = usage[pair] + u if pair in usage else u
        if diagnostics is not None:
            diagnostics.update(out, batch)
    model.train(was_training)
    labels_t = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    probs_t = torch.cat(probs) if probs else torch.zeros(0, 0)
    n_valid = int((labels_t >= 0).sum())
    return {"labels": labels_t.numpy(), "probs": probs_t.numpy(), "preds": probs_t.argmax(-1).numpy(),
            "utterance_ids": ids, "loss": float(ce_sum) / max(n_valid, 1), "usage": usage}


# ----------------------------------------------------------------------------- trainer

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
        self.class_weight = None
        if self.t.class_weights:
            self.class_weight = inverse_frequency_weights(split_labels(train_set), len(label_names)).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.t.lr, weight_decay=self.t.weight_decay)
        self.loader = train_loader(train_set, self.t, self.device, self.dist)
        self._eval_loaders: dict[int, object] = {}
        self.steps_per_epoch = len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.t.epochs * self.steps_per_epoch, self.t.warmup, self.t.schedule))
        self.fwd = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.fwd = DDP(self.model, device_ids=ids)
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
        saved, now = ck.config.get("run", {}), self.cfg.to_dict()
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
    def _step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
            import torch.distributed as dist

            dist.all_reduce(denom)
        denom = torch.where(denom > 0, denom, torch.ones_like(denom))
        lb = out.lb_loss.float()
        # DDP averages gradients over ranks: scale so the average is the global-batch mean.
        loss = ce_sum / denom * self.dist.world_size + self.t.lb_weight * lb
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
        return ce_sum.detach(), w.sum().detach(), lb.detach()

    def _train_epoch(self, epoch: int) -> dict:
        from tqdm.auto import tqdm

        # Dropout / modality-dropout stream of this epoch: a function of (seed, epoch, rank) only.
        torch.manual_seed(self.t.seed * 1_000_003 + epoch * 7919 + self.dist.rank)
        self.model.train()
        ce_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        denom = torch.zeros((), dtype=torch.float64, device=self.device)
        lb_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.loader.batch_sampler.set_epoch(epoch)
        steps = len(self.loader)
        self._branch_params = branch_parameters(self.model)
        self._grad_sq = torch.zeros(len(self._branch_params), dtype=torch.float64, device=self.device)
        bar = tqdm(self.loader, total=steps, desc=f"epoch {epoch + 1}/{self.t.epochs}", leave=False,
                   disable=None if (self.t.progress and self.dist.is_main) else True)
        for batch in bar:
            c, d, lb = self._step(batch.to(self.device, non_blocking=True))
            ce_sum += c.double()
            denom += d.double()
            lb_sum += lb.double()
        stats = torch.stack([ce_sum, denom, lb_sum])
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(stats)
        ce_sum, denom, lb_sum = stats.tolist()
        if not all(math.isfinite(v) for v in (ce_sum, lb_sum)):
            self._diverged(f"the training loss of epoch {epoch + 1} is not finite")
        lb = lb_sum / max(steps * self.dist.world_size, 1)
        ce = ce_sum / max(denom, 1e-12)
        # root-mean-square over the epoch's steps of each branch's gradient norm (before clipping)
        rms = (self._grad_sq / max(steps, 1)).sqrt().tolist()
        return {"train_ce": ce, "train_lb": lb, "train_loss": ce + self.t.lb_weight * lb,
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
        for epoch in range(self.start_epoch, self.t.epochs):
            if self.stopped:
                break
            t0 = time.perf_counter()
            rec = {"epoch": epoch + 1, **self._train_epoch(epoch)}
            self._check_weights_finite()
            dev = self.evaluate(self.dev_set, desc="dev")
            rec.update(dev_loss=dev["loss"], dev_accuracy=dev["metrics"]["accuracy"],
                       dev_weighted_f1=dev["metrics"]["weighted_f1"],
                       dev_routing_entropy={p: routing_entropy(u) for p, u in dev["usage"].items()},
                       lr=self.optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
            self.history.append(rec)
            improved = rec["dev_weighted_f1"] > self.best_f1
            if improved:
                self.best_f1, self.best_epoch, self.bad_epochs = rec["dev_weighted_f1"], epoch + 1, 0
                self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
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
                import torch.distributed as dist

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
