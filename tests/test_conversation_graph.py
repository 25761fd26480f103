"""build_conversation_graph: the vectorised builder against the per-dialogue loop (the spec)."""
import pickle
from types import SimpleNamespace


import pytest
import torch
from conftest import seed_for
from tolerance import abs_copy, assert_close, magnitude

from hotspot_erc.data.graph import (OUR_SCHEMES, SCHEMES, ConversationGraph, baseline_relation_keys,
                                    build_conversation_graph, conversation_graph_fn, node_modalities,
                                    num_relations, relation_names)
from hotspot_erc.nn.graph import prepare_graph
from hotspot_erc.nn.rgcn import RGCNConv
from hotspot_erc.reference.baseline_graphs import cogmen_graph_loop, corect_graph_loop
from hotspot_erc.reference.conversation_graph import build_conversation_graph_loop
from hotspot_erc.segments import Segments


def random_batch(num_dialogues, device, max_len=7, speakers=2):
    lengths = torch.randint(1, max_len + 1, (num_dialogues,))
    dialogue = torch.repeat_interleave(torch.arange(num_dialogues), lengths).to(device)
    speaker = torch.randint(0, speakers, dialogue.shape, device=device)
    return dialogue, speaker


def edge_set(edge_index, edge_type):
    return sorted(zip(edge_index[0].tolist(), edge_index[1].tolist(), edge_type.tolist()))


@pytest.mark.parametrize("scheme", OUR_SCHEMES)
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
    # per node: the root term and one mean message per incoming edge's relation, each 8 inputs long;
    # k = 8 x (most incoming edges + 1). The terms have both signs: scale = the layer on magnitudes.
    k = 8 * (int(torch.bincount(g.edge_index[1], minlength=g.num_nodes).max()) + 1)
    mag = abs_copy(layer)
    assert_close(layer(x, prepare_graph(g)), layer(x, g.edge_index, g.edge_type), torch.float32, k,
                 scale=magnitude(lambda a: mag(a, g.edge_index, g.edge_type), x), what="prepared vs edge list")
    with pytest.raises(AttributeError, match="prepare_graph"):  # the data layer no longer prepares graphs
        g.relational()
    assert g.to("cpu").edge_index.shape == g.edge_index.shape
    # the collate's Segments give the same presence as the offsets
    segs = {m: Segments.from_cu_seqlens(c, int(c[-1])) for m, c in cu.items()}
    g2 = fn(SimpleNamespace(dialogue=dialogue, speaker=speaker, cu_seqlens=cu, segments=segs))
    assert edge_set(g2.edge_index, g2.edge_type) == edge_set(g.edge_index, g.edge_type)


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


# ----------------------------------------------------------------------------- CORECT / COGMEN

def ragged_batch(device, lengths=(1, 5, 3, 1, 12, 2, 7), speakers=2, seed=0):
    """Ragged dialogues, one-utterance ones included; dialogue-local speaker ids."""
    g = torch.Generator().manual_seed(seed_for(seed))
    lengths = torch.tensor(lengths)
    dialogue = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    speaker = torch.randint(0, speakers, dialogue.shape, generator=g)
    return dialogue.to(device), speaker.to(device)


def keyed_edges(g, keys):
    return {(int(s), int(d), keys[t]) for (s, d), t in zip(g.edge_index.t().tolist(), g.edge_type.tolist())}


WINDOWS = [(11, 9), (0, 0), (0, 1), (1, 0), (-1, -1), (-1, 0), (0, -1), (-1, 3), (2, -1), (3, 2), (30, 30)]


@pytest.mark.parametrize("wp,wf", WINDOWS)
@pytest.mark.parametrize("m", [1, 2, 3])
def test_corect_scheme_is_corects_graph(device, wp, wf, m):
    mods = ("t", "a", "v")[:m]
    dialogue, speaker = ragged_batch(device)
    keys = baseline_relation_keys(mods, "corect")
    for temporal, multi in [(True, True), (True, False), (False, True)]:
        g = build_conversation_graph(dialogue, speaker, modalities=mods, window_past=wp, window_future=wf,
                                     scheme="corect", temporal=temporal, cross_modal=multi)
        expected = corect_graph_loop(dialogue.cpu(), m, wp, wf, temporal=temporal, multi=multi)
        got = keyed_edges(g, keys)
        assert got == expected, (temporal, multi, sorted(got ^ expected)[:5])
        assert g.edge_index.shape[1] == len(expected)  # no duplicates
        assert g.num_relations == 3 * m + m * (m - 1) == len(keys)


@pytest.mark.parametrize("wp,wf", WINDOWS)
@pytest.mark.parametrize("speakers", [1, 2, 3])
def test_cogmen_scheme_is_cogmens_graph(device, wp, wf, speakers):
    dialogue, speaker = ragged_batch(device, speakers=speakers, seed=speakers)
    g = build_conversation_graph(dialogue, speaker, modalities=node_modalities("tav", "cogmen"), window_past=wp,
                                 window_future=wf, scheme="cogmen", num_speakers=speakers)
    keys = baseline_relation_keys(scheme="cogmen", num_speakers=speakers)
    expected = cogmen_graph_loop(dialogue.cpu(), speaker.cpu(), wp, wf)
    assert keyed_edges(g, keys) == expected
    assert g.edge_index.shape[1] == len(expected)
    assert g.num_nodes == dialogue.numel() and g.num_relations == 2 * speakers * speakers


def test_baseline_relation_order():
    # CORECT: temporal codes -1, 1, 0 over modalities, then ordered cross-modal pairs
    assert baseline_relation_keys(("t", "a"), "corect") == ("-100", "-111", "100", "111", "000", "011", "001", "010")
    assert relation_names(("t", "a"), "corect") == ("t:past", "a:past", "t:future", "a:future", "t:self", "a:self",
                                                    "t->a", "a->t")
    # COGMEN: for j, for k: jk0, jk1
    assert baseline_relation_keys(scheme="cogmen", num_speakers=2) == ("000", "001", "010", "011", "100", "101",
                                                                       "110", "111")
    assert relation_names(("u",), "cogmen", 2)[:2] == ("s0->s0:past", "s0->s0:future")
    assert num_relations("tav", "cogmen", 3) == 18 and num_relations("tav", "corect") == 15


def test_corect_direction_and_presence():
    # one dialogue of 3 utterances, text only, wp=1 wf=1: j -> i for i in [j-1, j+1) (self + one back)
    dialogue, speaker = torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)
    g = build_conversation_graph(dialogue, speaker, modalities=("t",), window_past=1, window_future=1, scheme="corect")
    got = {(int(s), int(d), g.relation_names[t]) for (s, d), t in zip(g.edge_index.t(), g.edge_type)}
    # source j later than destination i: CORECT code 1 ("future": the source is in the future)
    assert got == {(0, 0, "t:self"), (1, 1, "t:self"), (2, 2, "t:self"), (1, 0, "t:future"), (2, 1, "t:future")}
    present = torch.tensor([[True, False, True], [True, True, True]])
    g = build_conversation_graph(dialogue, speaker, modalities=("t", "a"), window_past=-1, window_future=-1,
                                 scheme="corect", present=present)
    nodes = set(g.edge_index.view(-1).tolist())
    assert 1 not in nodes and {0, 2, 3, 4, 5} <= nodes


@pytest.mark.parametrize("scheme,bad", [("default", -1), ("speaker", -2), ("corect", -2), ("cogmen", 1.5)])
def test_window_errors(scheme, bad):
    dialogue = speaker = torch.zeros(2, dtype=torch.long)
    mods = node_modalities("ta", scheme)
    with pytest.raises(ValueError, match="window_past"):
        build_conversation_graph(dialogue, speaker, modalities=mods, window_past=bad, scheme=scheme)


def test_cogmen_errors():
    dialogue, speaker = torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="num_speakers=2"):
        build_conversation_graph(dialogue, speaker, modalities=("u",), scheme="cogmen", num_speakers=2)
    with pytest.raises(ValueError, match="one node per utterance"):
        build_conversation_graph(dialogue, speaker, modalities=("t", "a"), scheme="cogmen", num_speakers=3)
    with pytest.raises(ValueError, match="num_speakers"):
        relation_names(("u",), "cogmen", 0)
