"""build_conversation_graph: the vectorised builder against the per-dialogue loop (the spec)."""
import pickle
from types import SimpleNamespace

import pytest
import torch

from hotspot_erc.data.graph import (SCHEMES, ConversationGraph, build_conversation_graph, conversation_graph_fn,
                                    num_relations, relation_names)
from hotspot_erc.nn.rgcn import RGCNConv
from hotspot_erc.reference.conversation_graph import build_conversation_graph_loop


def random_batch(num_dialogues, device, max_len=7, speakers=2):
    lengths = torch.randint(1, max_len + 1, (num_dialogues,))
    dialogue = torch.repeat_interleave(torch.arange(num_dialogues), lengths).to(device)
    speaker = torch.randint(0, speakers, dialogue.shape, device=device)
    return dialogue, speaker


def edge_set(edge_index, edge_type):
    return sorted(zip(edge_index[0].tolist(), edge_index[1].tolist(), edge_type.tolist()))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("wp,wf", [(2, 2), (0, 3), (1, 0), (0, 0), (10, 10)])
def test_matches_loop_builder(device, scheme, wp, wf):
    dialogue, speaker = random_batch(6, device)
    present = torch.rand(3, dialogue.numel(), device=device) > 0.25
    for temporal, cross in [(True, True), (False, True), (True, False)]:
        kw = dict(window_past=wp, window_future=wf, scheme=scheme, temporal=temporal, cross_modal=cross)
        g = build_conversation_graph(dialogue, speaker, present=present, **kw)
        ei, et, names = build_conversation_graph_loop(dialogue.cpu(), speaker.cpu(), present=present.cpu(), **kw)
        assert g.edge_index.device == dialogue.device
        assert g.edge_index.dtype == torch.long and g.edge_type.dtype == torch.long
        assert edge_set(g.edge_index.cpu(), g.edge_type.cpu()) == edge_set(ei, et)
        assert g.relation_names == names and g.num_relations == len(names)
        # no duplicate edges
        assert len(set(edge_set(g.edge_index.cpu(), g.edge_type.cpu()))) == g.edge_index.shape[1]


def test_structure_of_default_graph():
    dialogue = torch.tensor([0, 0, 0, 1, 1])
    speaker = torch.tensor([0, 1, 0, 1, 0])
    g = build_conversation_graph(dialogue, speaker, window_past=1, window_future=1)
    assert g.num_nodes == 15 and g.num_utterances == 5
    names = g.relation_names
    assert names[:2] == ["t:past", "t:future"] and "a->t" in names and len(set(names)) == len(names)
    src, dst = g.edge_index
    utt_src, utt_dst = src % 5, dst % 5
    mod_src, mod_dst = src // 5, dst // 5
    # never across dialogues; temporal edges stay within one modality and within the window
    assert torch.equal(dialogue[utt_src], dialogue[utt_dst])
    rel = [names[t] for t in g.edge_type.tolist()]
    for k, name in enumerate(rel):
        if ":" in name:
            assert mod_src[k] == mod_dst[k] and abs(int(utt_src[k]) - int(utt_dst[k])) == 1
            assert (utt_src[k] < utt_dst[k]) == name.endswith("past")
        else:
            assert utt_src[k] == utt_dst[k] and names.index(name) >= 6
    assert g.node_id("a", 2) == 7
    # t:past from utterance 0 to 1 exists; nothing from dialogue 0's last utterance to dialogue 1
    assert (0, 1, names.index("t:past")) in edge_set(g.edge_index, g.edge_type)


def test_speaker_relations():
    dialogue = torch.tensor([0, 0, 0])
    speaker = torch.tensor([0, 1, 0])
    g = build_conversation_graph(dialogue, speaker, modalities=("t",), window_past=2, window_future=0,
                                 scheme="speaker")
    got = {(int(s), int(d), g.relation_names[t]) for (s, d), t in zip(g.edge_index.t(), g.edge_type)}
    assert got == {(0, 1, "t:past:other"), (1, 2, "t:past:other"), (0, 2, "t:past:same")}


def test_relation_counts():
    for m in (1, 2, 3):
        mods = ("t", "a", "v")[:m]
        assert num_relations(mods, "default") == 2 * m + m * (m - 1)
        assert num_relations(mods, "speaker") == 4 * m + m * (m - 1)
        assert num_relations(mods, "temporal_multi") == 2 * m * m + m * (m - 1)
        for s in SCHEMES:
            assert len(set(relation_names(mods, s))) == num_relations(mods, s)


def test_missing_modality_gets_no_edges():
    dialogue, speaker = random_batch(3, "cpu")
    present = torch.ones(3, dialogue.numel(), dtype=torch.bool)
    present[1, 2] = False
    g = build_conversation_graph(dialogue, speaker, present=present)
    node = g.node_id("a", 2)
    assert not (g.edge_index == node).any()


def test_empty_and_single_utterance_batches(device):
    empty = torch.empty(0, dtype=torch.long, device=device)
    g = build_conversation_graph(empty, empty)
    assert g.num_nodes == 0 and g.edge_index.shape == (2, 0)
    one = torch.zeros(1, dtype=torch.long, device=device)
    g1 = build_conversation_graph(one, one)
    assert g1.num_nodes == 3 and g1.edge_index.shape[1] == 6  # the cross-modal pairs only


def test_graph_fn_on_a_batch_and_rgcn():
    dialogue, speaker = random_batch(4, "cpu")
    s = dialogue.numel()
    lengths = torch.randint(0, 3, (s,))
    lengths[0] = 0
    cu = {m: torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)]) for m in ("t", "a")}
    batch = SimpleNamespace(dialogue=dialogue, speaker=speaker, cu_seqlens=cu)
    fn = pickle.loads(pickle.dumps(conversation_graph_fn(window_past=1, window_future=1)))
    g = fn(batch)
    assert isinstance(g, ConversationGraph) and g.num_nodes == 3 * s
    present = torch.stack([lengths > 0, lengths > 0, torch.zeros(s, dtype=torch.bool)])
    ei, et, _ = build_conversation_graph_loop(dialogue, speaker, window_past=1, window_future=1, present=present)
    assert edge_set(g.edge_index, g.edge_type) == edge_set(ei, et)
    layer = RGCNConv(8, 4, g.num_relations)
    x = torch.randn(g.num_nodes, 8)
    assert torch.allclose(layer(x, g), layer(x, g.edge_index, g.edge_type))
    assert g.relational() is g.relational()  # prepared once, reused by every layer
    assert g.to("cpu").edge_index.shape == g.edge_index.shape


def test_bad_inputs():
    d = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match="scheme must be one of"):
        build_conversation_graph(d, d, scheme="bogus")
    with pytest.raises(ValueError, match="non-decreasing"):
        build_conversation_graph(torch.tensor([1, 0, 1]), d)
    with pytest.raises(TypeError, match="dialogue must be a 1-D int"):
        build_conversation_graph(d.float(), d)
    with pytest.raises(ValueError, match="speaker must match"):
        build_conversation_graph(d, d[:2])
    with pytest.raises(ValueError, match="window_past must be an int >= 0"):
        build_conversation_graph(d, d, window_past=-1)
    with pytest.raises(ValueError, match="present must be a bool tensor"):
        build_conversation_graph(d, d, present=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="modalities must be distinct"):
        build_conversation_graph(d, d, modalities=("t", "t"))
    with pytest.raises(TypeError, match="come from the batch"):
        conversation_graph_fn(present=None)
