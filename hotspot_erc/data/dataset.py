"""Dialogues as dataset items, and the collate that packs them into one varlen batch.

One dataset item is one dialogue (all its utterances, all modalities). :func:`collate_dialogues`
concatenates the frames of every utterance of every dialogue per modality and describes the
segments with ``cu_seqlens`` (FlashAttention's varlen convention), so the model never pads. The
conversation graph is built by an optional ``graph_fn(batch)`` called at the very end of the
collate (inside DataLoader workers when ``num_workers > 0``); the data layer does not depend on
any particular graph builder.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hotspot_erc.data.format import Corpus, open_corpus
from hotspot_erc.segments import Segments


@dataclasses.dataclass
class DialogueItem:
    """One dialogue as tensors: frames per modality plus per-utterance frame counts."""

    dialogue_id: str
    features: dict[str, torch.Tensor]          # m -> [F_m, d_m] float32, utterances concatenated
    lengths: dict[str, torch.Tensor]           # m -> [n] int64 frames per utterance
    intensity: dict[str, torch.Tensor] | None  # m -> [F_m] float32, when the corpus has it for every modality
    speaker: torch.Tensor                      # [n] int64
    labels: torch.Tensor                       # [n] int64, -1 = ignored
    utterance_ids: list[str]
    scores: torch.Tensor | None = None         # [n] float32 continuous target, when the corpus has one

    @property
    def num_utterances(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass
class Batch:
    """A packed batch of whole dialogues.

    Utterances of all dialogues are numbered 0..S-1 in dialogue order; ``dialogue`` gives each
    utterance's batch-local dialogue index (sorted, contiguous). A modality missing for an
    utterance is a zero-length segment in that modality's ``cu_seqlens``.

    ``segments[m]`` carries everything derived from ``cu_seqlens[m]`` (lengths, row ids, presence,
    longest segment), built once by the collate from host-side lengths so that no layer has to
    re-derive it (or read a device value to learn ``max_len``); ``cu_seqlens[m]`` is the same
    tensor as ``segments[m].cu_seqlens``. It is None for a Batch built by hand.
    """

    features: dict[str, torch.Tensor]
    cu_seqlens: dict[str, torch.Tensor]
    intensity: dict[str, torch.Tensor] | None
    dialogue: torch.Tensor
    speaker: torch.Tensor
    labels: torch.Tensor
    utterance_ids: list[str]
    dialogue_ids: list[str] = dataclasses.field(default_factory=list)
    scores: torch.Tensor | None = None
    graph: object = None
    segments: dict[str, Segments] | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def num_utterances(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_dialogues(self) -> int:
        return len(self.dialogue_ids)

    def lengths(self, m: str) -> torch.Tensor:
        """Frames per utterance in modality ``m`` ([S] int64)."""
        if self.segments is not None and m in self.segments:
            return self.segments[m].lengths
        return self.cu_seqlens[m].diff()

    def present(self) -> torch.Tensor:
        """[M, S] bool: modality m has at least one frame for utterance s (order of ``modalities``)."""
        return torch.stack([self.lengths(m) > 0 for m in self.modalities])

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """A copy on ``device``; the graph moves too (see :func:`_map_graph`)."""
        device = torch.device(device)
        return self._map(lambda t: t.to(device, non_blocking=non_blocking), "to", (device,),
                         lambda s: s.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """Called by DataLoader(pin_memory=True) so host-to-device copies can be asynchronous."""
        return self._map(lambda t: t.pin_memory(), "pin_memory", (), lambda s: s.pin_memory())

    def _map(self, fn, method: str, args: tuple, seg_fn) -> "Batch":
        def opt(d):
            return None if d is None else {k: fn(v) for k, v in d.items()}

        segments = None
        cu_seqlens = opt(self.cu_seqlens)
        if self.segments is not None:
            segments = {m: seg_fn(s) for m, s in self.segments.items()}
            # One copy per modality: the offsets the collate shared with the Segments stay shared.
            for m, s in self.segments.items():
                if self.cu_seqlens.get(m) is s.cu_seqlens:
                    cu_seqlens[m] = segments[m].cu_seqlens
        return dataclasses.replace(
            self,
            features=opt(self.features),
            cu_seqlens=cu_seqlens,
            segments=segments,
            intensity=opt(self.intensity),
            dialogue=fn(self.dialogue),
            speaker=fn(self.speaker),
            labels=fn(self.labels),
            scores=None if self.scores is None else fn(self.scores),
            graph=_map_graph(self.graph, fn, method, args),
        )


def _map_graph(graph, fn, method: str, args: tuple):
    """Move (or pin) whatever ``graph_fn`` produced, without knowing its type.

    An object with its own ``to``/``pin_memory`` (the conversation graph, a PyG ``Data``) knows
    best what to move and which caches to drop, so that method is used; otherwise tensors,
    dataclass tensor fields and dict tensor values are mapped one by one.
    """
    if graph is None:
        return None
    if isinstance(graph, torch.Tensor):
        return fn(graph)
    own = getattr(graph, method, None)
    if callable(own) and not isinstance(graph, type):
        return own(*args)
    if dataclasses.is_dataclass(graph) and not isinstance(graph, type):
        changes = {f.name: fn(getattr(graph, f.name)) for f in dataclasses.fields(graph)
                   if f.init and isinstance(getattr(graph, f.name), torch.Tensor)}
        return dataclasses.replace(graph, **changes)
    if isinstance(graph, dict):
        return {k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in graph.items()}
    return graph


class DialogueDataset(Dataset):
    """Dialogues of one split of a corpus; item ``i`` is a :class:`DialogueItem`.

    ``corpus`` is a :class:`Corpus` or a path. ``modalities`` restricts (and orders) the modalities
    returned. Frames are copied out of the memory map per item, so workers share the page cache.
    """

    def __init__(self, corpus: Corpus | str | os.PathLike, split: str | None = None,
                 modalities: Sequence[str] | None = None):
        self.corpus = corpus if isinstance(corpus, Corpus) else open_corpus(corpus)
        self.split = split
        if split is None:
            self.indices = np.arange(self.corpus.num_dialogues, dtype=np.int64)
        else:
            self.indices = np.asarray(self.corpus.split_dialogues(split), dtype=np.int64)
        mods = tuple(modalities) if modalities is not None else self.corpus.modalities
        unknown = [m for m in mods if m not in self.corpus.modalities]
        if unknown:
            raise ValueError(f"modalities {unknown} are not in the corpus (it has {list(self.corpus.modalities)})")
        self.modalities = mods

    def __len__(self) -> int:
        return len(self.indices)

    def num_frames(self, i: int) -> int:
        """Total frames of item ``i`` over all modalities (the bucketing key; reads offsets only)."""
        d = int(self.indices[i])
        lo, hi = self.corpus.dialogue_utterances(d)
        return int(sum(self.corpus.offsets[m][hi] - self.corpus.offsets[m][lo] for m in self.modalities))

    def num_utterances(self, i: int) -> int:
        lo, hi = self.corpus.dialogue_utterances(int(self.indices[i]))
        return hi - lo

    def __getitem__(self, i: int) -> DialogueItem:
        c = self.corpus
        d = int(self.indices[i])
        lo, hi = c.dialogue_utterances(d)
        feats, lengths, inten = {}, {}, {}
        has_intensity = all(c.intensity[m] is not None for m in self.modalities)
        for m in self.modalities:
            off = c.offsets[m]
            f0, f1 = int(off[lo]), int(off[hi])
            feats[m] = torch.from_numpy(np.array(c.features[m][f0:f1], dtype=np.float32))
            lengths[m] = torch.from_numpy(np.diff(off[lo:hi + 1]).astype(np.int64))
            if has_intensity:
                inten[m] = torch.from_numpy(np.array(c.intensity[m][f0:f1], dtype=np.float32))
        return DialogueItem(
            dialogue_id=str(c.dialogue_ids[d]),
            features=feats,
            lengths=lengths,
            intensity=inten if has_intensity else None,
            speaker=torch.from_numpy(np.array(c.speaker[lo:hi], dtype=np.int64)),
            labels=torch.from_numpy(np.array(c.label[lo:hi], dtype=np.int64)),
            utterance_ids=[str(x) for x in c.utterance_ids[lo:hi]],
            scores=None if c.score is None else torch.from_numpy(np.array(c.score[lo:hi], dtype=np.float32)),
        )


def collate_dialogues(items: Sequence[DialogueItem],
                      graph_fn: Callable[[Batch], object] | None = None) -> Batch:
    """Pack dialogues into one :class:`Batch`; then ``batch.graph = graph_fn(batch)`` if given."""
    if len(items) == 0:
        raise ValueError("collate_dialogues needs at least one dialogue")
    mods = tuple(items[0].features)
    for it in items[1:]:
        if tuple(it.features) != mods:
            raise ValueError(f"dialogue {it.dialogue_id!r} has modalities {tuple(it.features)}, expected {mods}")
    features, cu_seqlens, segments = {}, {}, {}
    for m in mods:
        features[m] = torch.cat([it.features[m] for it in items], dim=0)
        # A Python list, so max_len is known here and never read back from a device later.
        lengths = [n for it in items for n in it.lengths[m].tolist()]
        segments[m] = Segments.from_lengths(lengths)
        cu_seqlens[m] = segments[m].cu_seqlens
    intensity = None
    if all(it.intensity is not None for it in items):
        intensity = {m: torch.cat([it.intensity[m] for it in items]) for m in mods}
    counts = torch.tensor([it.num_utterances for it in items], dtype=torch.int64)
    dialogue = torch.repeat_interleave(torch.arange(len(items), dtype=torch.int64), counts)
    scores = None
    if all(it.scores is not None for it in items):
        scores = torch.cat([it.scores for it in items])
    batch = Batch(
        features=features,
        cu_seqlens=cu_seqlens,
        intensity=intensity,
        dialogue=dialogue,
        speaker=torch.cat([it.speaker for it in items]),
        labels=torch.cat([it.labels for it in items]),
        utterance_ids=[u for it in items for u in it.utterance_ids],
        dialogue_ids=[it.dialogue_id for it in items],
        scores=scores,
        segments=segments,
    )
    return attach_graph(batch, graph_fn)


def attach_graph(batch: Batch, graph_fn: Callable[[Batch], object] | None) -> Batch:
    """The collate's graph step: the only place the data layer touches graph construction."""
    if graph_fn is not None:
        batch.graph = graph_fn(batch)
    return batch


class _Collate:
    """A picklable collate (a lambda would break DataLoader workers started with spawn)."""

    def __init__(self, graph_fn):
        self.graph_fn = graph_fn

    def __call__(self, items):
        return collate_dialogues(items, self.graph_fn)


def item_frames(dataset, i: int) -> int:
    """Total frames of item ``i`` (the bucketing key): :meth:`DialogueDataset.num_frames` reads
    offsets only; any other dataset of :class:`DialogueItem` is read once."""
    own = getattr(dataset, "num_frames", None)
    if callable(own):
        return int(own(i))
    return int(sum(int(v.sum()) for v in dataset[i].lengths.values()))


class DialogueBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices, the same on every process, each process taking its share.

    Every epoch forms *global* batches of ``batch_size`` dialogues from a seeded order (seeded by
    ``(seed, epoch)`` alone, so resuming at epoch e and every DDP rank see the same batches):

    * ``shuffle``: a permutation of the dialogues, else the stored order;
    * ``bucket``: the order is cut into pools of ``pool_batches * batch_size`` dialogues and each
      pool is sorted by total frames (stable, so ties keep the shuffled order) before being cut
      into batches, and with ``shuffle`` the batch order is permuted, so batches hold dialogues of
      similar cost while their order stays random;
    * ``drop_last`` drops a short final batch; with ``world_size > 1`` a batch with fewer
      dialogues than processes is dropped too (a rank would have nothing to do);
    * the process of ``rank`` gets ``batch[rank::world_size]`` of every global batch
      (``DistributedSampler``-style sharding, at the level of batches so that the averaged DDP
      gradient is that of the whole global batch).

    Each complete pass advances the epoch; :meth:`set_epoch` sets it explicitly (the trainer does,
    before every epoch). ``len()`` is the number of batches per epoch, the same for every epoch.
    """

    def __init__(self, dataset, batch_size: int, *, shuffle: bool = False, bucket: bool = False, seed: int = 0,
                 drop_last: bool = False, pool_batches: int = 50, rank: int = 0, world_size: int = 1):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if world_size > batch_size:
            raise ValueError(f"batch_size ({batch_size}) must be >= world_size ({world_size}): it is the global batch")
        self.num_items = len(dataset)
        self.batch_size, self.shuffle, self.bucket, self.seed = batch_size, shuffle, bucket, seed
        self.drop_last, self.pool = drop_last, max(1, pool_batches) * batch_size
        self.rank, self.world_size = rank, world_size
        # Read once here (offsets only for a DialogueDataset), never per epoch.
        self.lengths = (np.array([item_frames(dataset, i) for i in range(self.num_items)], dtype=np.int64)
                        if bucket else None)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The batches of every process together, for ``epoch``."""
        n, bs = self.num_items, self.batch_size
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucket:
            order = np.concatenate([order[lo:lo + self.pool][np.argsort(self.lengths[order[lo:lo + self.pool]],
                                                                        kind="stable")]
                                    for lo in range(0, n, self.pool)] or [order])
        batches = [order[i:i + bs].tolist() for i in range(0, n, bs)]
        least = bs if self.drop_last else self.world_size
        batches = [b for b in batches if len(b) >= least]
        if self.shuffle and self.bucket:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.global_batches(self.epoch):
            yield b[self.rank::self.world_size]
        # Advance only after a complete pass: DataLoader creates (and drops) an iterator it never reads.
        self.epoch += 1

    def __len__(self) -> int:
        full, rest = divmod(self.num_items, self.batch_size)
        return full + (1 if rest and not self.drop_last and rest >= self.world_size else 0)


class LengthBucketSampler(DialogueBatchSampler):
    """:class:`DialogueBatchSampler` with length bucketing on (and shuffling by default): batches of
    dialogues with similar frame counts, so batches have similar cost."""

    def __init__(self, dataset, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 pool_batches: int = 50, rank: int = 0, world_size: int = 1):
        super().__init__(dataset, batch_size, shuffle=shuffle, bucket=True, seed=seed, drop_last=drop_last,
                         pool_batches=pool_batches, rank=rank, world_size=world_size)


def dialogue_loader(dataset, batch_size: int, *, shuffle: bool = False, bucket: bool | None = None, seed: int = 0,
                    num_workers: int = 0, pin_memory: bool | None = None, drop_last: bool = False,
                    graph_fn: Callable[[Batch], object] | None = None, rank: int = 0, world_size: int = 1,
                    pool_batches: int = 50) -> DataLoader:
    """The loader of :class:`Batch` that training, evaluation and prediction all read from.

    Batches come from a :class:`DialogueBatchSampler` (``bucket`` defaults to ``shuffle``; without
    either, batches are consecutive dialogues in stored order). ``num_workers > 0`` prepares batches
    in persistent worker processes while the device computes; ``pin_memory`` (default: CUDA is
    available) lets ``batch.to(device, non_blocking=True)`` copy asynchronously. ``graph_fn`` must
    be picklable when workers are started with spawn.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    sampler = DialogueBatchSampler(dataset, batch_size, shuffle=shuffle, bucket=shuffle if bucket is None else bucket,
                                   seed=seed, drop_last=drop_last, pool_batches=pool_batches, rank=rank,
                                   world_size=world_size)
    # A DataLoader draws its workers' base seed from this generator each time it starts them, and
    # from the global RNG without one: that would shift the dropout stream by a draw per epoch,
    # differently with and without (persistent) workers. Nothing here is random, so any seed does.
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=_Collate(graph_fn), num_workers=num_workers,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))


def make_loader(corpus: Corpus | str | os.PathLike, split: str, batch_size: int, shuffle: bool = False,
                seed: int = 0, num_workers: int = 0, graph_fn: Callable[[Batch], object] | None = None,
                bucket: bool | None = None, pin_memory: bool | None = None, drop_last: bool = False,
                modalities: Sequence[str] | None = None) -> DataLoader:
    """:func:`dialogue_loader` over ``split`` of a corpus (a :class:`Corpus` or its path)."""
    return dialogue_loader(DialogueDataset(corpus, split, modalities=modalities), batch_size, shuffle=shuffle,
                           bucket=bucket, seed=seed, num_workers=num_workers, pin_memory=pin_memory,
                           drop_last=drop_last, graph_fn=graph_fn)
