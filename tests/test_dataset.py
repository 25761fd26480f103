"""Dialogue dataset, packed collate, bucketing sampler and loader."""
import dataclasses
import pickle

import numpy as np
import pytest
import torch
from conftest import seed_for

from hotspot_erc.data.dataset import (Batch, DialogueDataset, LengthBucketSampler, collate_dialogues,
                                      make_loader)
from hotspot_erc.data.format import DialogueRecord, open_corpus, write_corpus
from hotspot_erc.data.synthetic import generate_synthetic_corpus

DIMS = {"t": 4, "a": 3, "v": 2}


@pytest.fixture(scope="module")
def ragged(tmp_path_factory):
    """Hand-made dialogues: one-utterance dialogues and modalities missing for some utterances."""
    rng = np.random.default_rng(seed_for(1))
    lens = [  # per dialogue: per utterance (t, a, v) frame counts; 0 = missing
        [(3, 0, 2)],
        [(1, 4, 0), (2, 2, 2), (0, 5, 1)],
        [(0, 0, 3)],
        [(5, 1, 1), (1, 0, 0)],
    ]
    recs = []
    for d, dl in enumerate(lens):
        recs.append(DialogueRecord(
            dialogue_id=f"d{d}", speakers=[u % 2 for u in range(len(dl))],
            labels=[(d + u) % 3 - (u == 2) for u in range(len(dl))],
            features={m: [rng.standard_normal((row[i], DIMS[m])) for row in dl] for i, m in enumerate("tav")},
            intensity={m: [rng.random(row[i]) for row in dl] for i, m in enumerate("tav")},
        ))
    path = write_corpus(tmp_path_factory.mktemp("ragged") / "c", recs, {"train": [0, 1, 2, 3]},
                        modalities=list("tav"), dims=DIMS, label_names=["a", "b", "c"], intensity=True)
    return open_corpus(path), recs, lens


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return open_corpus(generate_synthetic_corpus(tmp_path_factory.mktemp("syn") / "c", num_dialogues=12,
                                                 seed=3, missing_prob=0.3))


def test_collate_packs_ragged_dialogues(ragged):
    corpus, recs, lens = ragged
    ds = DialogueDataset(corpus, "train")
    batch = collate_dialogues([ds[i] for i in range(len(ds))])
    S = sum(len(dl) for dl in lens)
    assert batch.num_utterances == S and batch.num_dialogues == 4
    assert batch.dialogue.tolist() == [0, 1, 1, 1, 2, 3, 3]
    assert batch.speaker.tolist() == [s for r in recs for s in r.speakers]
    assert batch.labels.tolist() == [y for r in recs for y in r.labels]
    assert batch.utterance_ids == [f"d{d}_{u}" for d, dl in enumerate(lens) for u in range(len(dl))]
    for i, m in enumerate("tav"):
        lengths = [row[i] for dl in lens for row in dl]
        assert batch.cu_seqlens[m].dtype == torch.int64
        assert batch.cu_seqlens[m].tolist() == [0, *np.cumsum(lengths).tolist()]
        expect = np.concatenate([f for r in recs for f in r.features[m]]).astype(np.float32)
        assert batch.features[m].dtype == torch.float32
        torch.testing.assert_close(batch.features[m], torch.from_numpy(expect), rtol=0, atol=0)
        assert batch.intensity[m].shape == (sum(lengths),)
        assert batch.present()[i].tolist() == [L > 0 for L in lengths]
        assert batch.lengths(m).tolist() == lengths
        seg = batch.segments[m]  # built once here, carried to the model
        assert seg.cu_seqlens is batch.cu_seqlens[m] and seg.lengths.tolist() == lengths
        assert seg.max_len == max(lengths) and seg.present.tolist() == [L > 0 for L in lengths]
        assert seg.ids.tolist() == [s for s, L in enumerate(lengths) for _ in range(L)]


def test_batch_to_moves_segments_with_offsets(ragged):
    corpus, _, _ = ragged
    batch = collate_dialogues([DialogueDataset(corpus, "train")[i] for i in range(2)])
    moved = batch.to("cpu", non_blocking=True)
    for m in "tav":
        assert moved.segments[m].cu_seqlens is moved.cu_seqlens[m]  # one copy of the offsets, not two
        assert moved.segments[m].max_len == batch.segments[m].max_len
    hand = dataclasses.replace(batch, segments=None)  # a Batch built without the collate still moves
    assert hand.to("cpu").segments is None and hand.lengths("t").tolist() == batch.lengths("t").tolist()


def test_collate_single_one_utterance_dialogue(ragged):
    corpus, recs, _ = ragged
    batch = collate_dialogues([DialogueDataset(corpus, "train")[2]])
    assert batch.num_utterances == 1 and batch.dialogue.tolist() == [0]
    assert batch.cu_seqlens["t"].tolist() == [0, 0] and batch.features["t"].shape == (0, DIMS["t"])
    assert batch.cu_seqlens["v"].tolist() == [0, 3]
    with pytest.raises(ValueError, match="at least one dialogue"):
        collate_dialogues([])


@dataclasses.dataclass
class ToyGraph:
    edge_index: torch.Tensor
    num_nodes: int


def chain_graph(batch):
    """A stand-in graph_fn: chain over utterances inside each dialogue (one edge per consecutive pair)."""
    same = batch.dialogue[1:] == batch.dialogue[:-1]
    src = torch.arange(batch.num_utterances - 1)[same]
    return ToyGraph(torch.stack([src, src + 1]), batch.num_utterances)


def test_graph_fn_is_called_and_moves_with_batch(ragged):
    corpus, _, _ = ragged
    ds = DialogueDataset(corpus, "train")
    batch = collate_dialogues([ds[1], ds[3]], graph_fn=chain_graph)
    assert isinstance(batch.graph, ToyGraph)
    assert batch.graph.edge_index.tolist() == [[0, 1, 3], [1, 2, 4]]
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and isinstance(moved.graph, ToyGraph) and moved.graph.num_nodes == 5


def test_conversation_graph_fn_in_workers(synthetic):
    """The project's graph builder plugs into the collate, in worker processes too."""
    from hotspot_erc.data.graph import ConversationGraph, conversation_graph_fn

    loader = make_loader(synthetic, "train", batch_size=4, num_workers=2, graph_fn=conversation_graph_fn(),
                         pin_memory=False)
    for batch in loader:
        g = batch.graph
        assert isinstance(g, ConversationGraph) and g.num_nodes == 3 * batch.num_utterances
        # missing modalities (missing_prob=0.3) are nodes without edges
        absent = (~batch.present()).reshape(-1).nonzero().flatten()
        assert not torch.isin(g.edge_index, absent).any()
        assert isinstance(batch.to("cpu").graph, ConversationGraph)


def test_dataset_modalities_subset(ragged):
    corpus, _, _ = ragged
    ds = DialogueDataset(corpus, "train", modalities=["v", "t"])
    item = ds[1]
    assert list(item.features) == ["v", "t"]
    assert ds.num_frames(1) == (1 + 2 + 0) + (0 + 2 + 1)
    with pytest.raises(ValueError, match=r"modalities \['x'\] are not in the corpus"):
        DialogueDataset(corpus, "train", modalities=["x"])


def test_bucket_sampler_covers_and_sorts(synthetic):
    ds = DialogueDataset(synthetic, "train")
    s = LengthBucketSampler(ds, batch_size=3, shuffle=True, seed=5, pool_batches=100)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    assert len(batches) == len(s)
    # One pool holds everything here, so batches are length-sorted runs: no batch straddles another.
    spans = sorted((min(ds.num_frames(i) for i in b), max(ds.num_frames(i) for i in b)) for b in batches)
    assert all(hi <= nxt_lo for (_, hi), (nxt_lo, _) in zip(spans, spans[1:]))
    assert batches == list(LengthBucketSampler(ds, 3, shuffle=True, seed=5, pool_batches=100))
    second = [i for b in s for i in b]  # a second pass reshuffles by itself
    assert second != [i for b in batches for i in b]
    s.set_epoch(1)
    assert [i for b in s for i in b] == second
    s.set_epoch(0)
    assert list(s) == batches
    dropped = LengthBucketSampler(ds, 3, shuffle=True, seed=5, drop_last=True)
    assert all(len(b) == 3 for b in dropped) and len(list(dropped)) == len(dropped) == len(ds) // 3


def _flatten(loader):
    return [(b.utterance_ids, b.features["a"].sum().item(), b.cu_seqlens["v"].tolist()) for b in loader]


def test_loader_workers_match_single_process(synthetic):
    kw = dict(batch_size=3, shuffle=True, seed=11, pin_memory=False)
    one = _flatten(make_loader(synthetic, "train", num_workers=0, **kw))
    loader = make_loader(synthetic, "train", num_workers=2, graph_fn=chain_graph, **kw)
    two = _flatten(loader)
    assert one == two
    assert _flatten(loader) != one  # the next epoch is reshuffled (persistent workers)
    assert _flatten(make_loader(synthetic, "train", num_workers=0, **kw)) == one  # seeded
    plain = list(make_loader(synthetic, "test", batch_size=2))
    stored = [synthetic.dialogue_ids[i] for i in synthetic.split_dialogues("test")]
    assert [d for b in plain for d in b.dialogue_ids] == stored  # no shuffle, no bucketing: stored order


def test_dataset_pickles_without_frames(synthetic):
    ds = DialogueDataset(synthetic, "train")
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000  # spawn-started workers get the path, not a copy of the corpus
    again = pickle.loads(blob)
    torch.testing.assert_close(again[0].features["t"], ds[0].features["t"], rtol=0, atol=0)  # the same stored bytes


@pytest.mark.gpu
def test_pinned_batch_moves_to_cuda(synthetic):
    loader = make_loader(synthetic, "train", batch_size=4, shuffle=True, pin_memory=True, graph_fn=chain_graph)
    batch = next(iter(loader))
    assert batch.features["t"].is_pinned()
    assert batch.segments["a"].ids.is_pinned() and batch.segments["a"].cu_seqlens is batch.cu_seqlens["a"]
    dev = batch.to("cuda", non_blocking=True)
    assert dev.features["t"].is_cuda and dev.cu_seqlens["a"].is_cuda and dev.graph.edge_index.is_cuda
    assert dev.segments["a"].ids.is_cuda and dev.segments["a"].cu_seqlens is dev.cu_seqlens["a"]
