"""graph_conv="rgcn_transformer": the baselines' GNN stack inside HotspotERC."""
import pytest
import torch
from conftest import seed_for
from test_model import SMALL, K_LOGITS, batch, corpus  # noqa: F401  (fixtures)
from tolerance import assert_close

from hotspot_erc.data.dataset import DialogueDataset, collate_dialogues
from hotspot_erc.nn.config import ModelConfig, with_legacy_fields
from hotspot_erc.nn.graph import CrossModalGraph
from hotspot_erc.nn.model import HotspotERC


def _model(corpus, **kw):
    torch.manual_seed(seed_for(0))
    return HotspotERC(corpus.dims, len(corpus.label_names), **{**SMALL, "graph_conv": "rgcn_transformer", **kw})


def test_forward_backward_reaches_every_graph_parameter(corpus, batch):
    model = _model(corpus)
    graph = model.graph
    assert graph.conv == "rgcn_transformer" and not hasattr(graph, "gnn")
    assert graph.transformer.heads == SMALL["num_heads"] and graph.transformer.out_channels * graph.transformer.heads == 16
    out = model(batch)
    assert torch.isfinite(out.logits).all() and 0 < float(out.graph_update) < float("inf")
    torch.nn.functional.cross_entropy(out.logits, batch.labels.clamp(min=0)).backward()
    for name, p in list(graph.rgcn.named_parameters()) + list(graph.transformer.named_parameters()):
        if name == "lin_key.bias":  # shifts every score of a destination alike: its gradient is zero
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_dialogues_stay_independent(corpus):
    ds = DialogueDataset(corpus, "train")
    model = _model(corpus).eval()
    a, b = ds[0], ds[1]
    both = model(collate_dialogues([a, b])).logits
    alone = torch.cat([model(collate_dialogues([a])).logits, model(collate_dialogues([b])).logits])
    assert_close(both, alone, torch.float32, K_LOGITS + 64, what="batched vs one dialogue at a time")


def test_config_choices_and_legacy_default(corpus):
    assert ModelConfig().graph_conv == "rgcn"
    assert with_legacy_fields({})["graph_conv"] == "rgcn"
    with pytest.raises(ValueError, match="conv must be one of"):
        CrossModalGraph(16, conv="gat")
    with pytest.raises(ValueError, match="heads must be a positive divisor of dim=16"):
        CrossModalGraph(16, conv="rgcn_transformer", heads=3)


def test_state_dict_round_trip(corpus, batch):
    """The model writes the graph branch's keys without the submodule prefix (the layout of
    earlier checkpoints) and must read its own state back, this stack's keys included."""
    model, twin = _model(corpus).eval(), _model(corpus, dropout=0.0).eval()
    state = model.state_dict()
    assert "bn.running_mean" in state and "transformer.lin_query.weight" in state
    twin.load_state_dict(state)  # strict
    assert torch.equal(twin(batch).logits, model(batch).logits)
