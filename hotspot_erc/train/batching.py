"""The loaders the trainer reads: the data layer's :func:`~hotspot_erc.data.dataset.dialogue_loader`
set up from the run settings (bucketing, workers, pinned memory on CUDA, this rank's share)."""
from __future__ import annotations

import torch

from hotspot_erc.data.dataset import dialogue_loader
from hotspot_erc.train.distributed import DistInfo


def train_loader(dataset, t, device: torch.device, dist_info: DistInfo):
    """The training loader of ``t`` (a TrainConfig): this rank's share of every global batch."""
    return dialogue_loader(dataset, t.batch_size, shuffle=True, bucket=t.bucket, seed=t.seed,
                           num_workers=t.num_workers, pin_memory=device.type == "cuda",
                           rank=dist_info.rank, world_size=dist_info.world_size)


def eval_loader(dataset, batch_size: int, device: torch.device, num_workers: int = 0):
    """Consecutive dialogues in stored order, so predictions come back in that order."""
    return dialogue_loader(dataset, batch_size, shuffle=False, bucket=False, num_workers=num_workers,
                           pin_memory=device.type == "cuda")
