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


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of dialogues with similar frame counts, so batches have similar cost.

    Shuffles the dialogues (seeded by ``(seed, epoch)``; each complete pass advances the epoch, and
    :meth:`set_epoch` sets it explicitly, e.g. to resume), cuts them into
    pools of ``pool_batches * batch_size``, sorts each pool by total frames, cuts the pool into
    batches and shuffles the batch order. Without ``shuffle`` the order is deterministic: sorted
    by length within consecutive pools of the stored order.
    """

    def __init__(self, dataset: DialogueDataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, pool_batches: int = 50):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = np.array([dataset.num_frames(i) for i in range(len(dataset))], dtype=np.int64)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.pool = drop_last, max(1, pool_batches) * batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches = []
        for lo in range(0, len(order), self.pool):
            pool = order[lo:lo + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            for b in range(0, len(pool), self.batch_size):
                batches.append(pool[b:b + self.batch_size].tolist())
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        yield from batches
        # Advance only after a complete pass: DataLoader creates (and drops) an iterator it never reads.
        self.epoch += 1

    def __len__(self) -> int:
        n = len(self.lengths)
        if not self.drop_last:
            full, rest = divmod(n, self.pool)
            return full * (-(-self.pool // self.batch_size)) + (-(-rest // self.batch_size))
        full, rest = divmod(n, self.pool)
        return full * (self.pool // self.batch_size) + rest // self.batch_size


def make_loader(corpus: Corpus | str | os.PathLike, split: str, batch_size: int, shuffle: bool = False,
                seed: int = 0, num_workers: int = 0, graph_fn: Callable[[Batch], object] | None = None,
                bucket: bool | None = None, pin_memory: bool | None = None, drop_last: bool = False,
                modalities: Sequence[str] | None = None) -> DataLoader:
    """A DataLoader of :class:`Batch` over ``split``.

    ``bucket`` (default: same as ``shuffle``) groups dialogues of similar length with
    :class:`LengthBucketSampler`; otherwise batches follow the stored order (or a seeded shuffle).
    ``pin_memory`` defaults to "CUDA is available". ``graph_fn`` must be picklable when
    ``num_workers > 0`` under the spawn start method.
    """
    ds = DialogueDataset(corpus, split, modalities=modalities)
    if bucket is None:
        bucket = shuffle
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    common = dict(collate_fn=_Collate(graph_fn), num_workers=num_workers, pin_memory=pin_memory,
                  persistent_workers=num_workers > 0)
    if bucket:
        sampler = LengthBucketSampler(ds, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        return DataLoader(ds, batch_sampler=sampler, **common)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=drop_last, **common)
