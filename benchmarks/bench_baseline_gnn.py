"""The baselines' whole GNN step, forward + backward: graph build -> RGCNConv -> TransformerConv ->
BatchNorm1d -> leaky ReLU, with PyG's parts (and the baselines' Python-loop graph builders) and
with ours (``build_conversation_graph`` with the baseline's scheme, ``hotspot_erc.nn.RGCNConv``,
``hotspot_erc.nn.TransformerConv``, each graph prepared once and shared by both layers).

Settings, from the baselines' published IEMOCAP recipes: CORECT (3 nodes per utterance, windows
wp=11 wf=5, batches of 10 dialogues, RGCNConv 100->100 over its 15 relations, TransformerConv
100->100 with 7 heads) and COGMEN (one node per utterance, 2·P² speaker-pair relations, windows
wp=wf=10, batches of 32 dialogues, 7 heads). Dialogues are IEMOCAP-shaped: 20-110 utterances
from a seeded generator, two speakers. Both stacks hold the same parameters (ours load PyG's
state dicts); the record's ``max_abs_diff_vs_pyg`` is their output difference on the batch.
Rows: ms per step (best of interleaved rounds), peak memory, launches, speedup over PyG's stack,
and the same for the two convolutions alone. Run: ``python -m benchmarks.bench_baseline_gnn [--quick]``.
"""
from __future__ import annotations

import torch
from torch import nn

from benchmarks.harness import (bench_parser, cpu_peak_mb, launches, parse_bench_args, peak_memory_mb, print_table,
                                time_ms, write_results)
from hotspot_erc.data.graph import baseline_relation_keys, build_conversation_graph, node_modalities
from hotspot_erc.nn.graph import prepare_graph
from hotspot_erc.nn.rgcn import RGCNConv
from hotspot_erc.nn.transformer_conv import TransformerConv
from hotspot_erc.ops.graph_attention import AttentionGraph
from hotspot_erc.reference.baseline_graphs import cogmen_graph_loop, corect_graph_loop

SETTINGS = {
    "CORECT": dict(scheme="corect", dialogues=10, window=(11, 5), heads=7, hidden=100),
    "COGMEN": dict(scheme="cogmen", dialogues=32, window=(10, 10), heads=7, hidden=100),
}


def iemocap_batch(dialogues: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(20, 111, (dialogues,), generator=gen)
    dialogue = torch.repeat_interleave(torch.arange(dialogues), lengths)
    speaker = torch.randint(0, 2, dialogue.shape, generator=gen)
    return dialogue, speaker


class GNNStack(nn.Module):
    """The baselines' GNN: RGCNConv, TransformerConv (concat heads), BatchNorm1d, leaky ReLU."""

    def __init__(self, rgcn, conv):
        super().__init__()
        self.conv1, self.conv2 = rgcn, conv
        self.bn = nn.BatchNorm1d(conv.heads * conv.out_channels)

    def forward(self, x, edge_index, edge_type, attention_graph=None):
        h = self.conv1(x, edge_index, edge_type)
        h = self.conv2(h, edge_index if attention_graph is None else attention_graph)
        return nn.functional.leaky_relu(self.bn(h))


def stacks(setting: dict, num_relations: int):
    from torch_geometric.nn import RGCNConv as PygRGCN, TransformerConv as PygTC

    d, heads = setting["hidden"], setting["heads"]
    theirs = GNNStack(PygRGCN(d, d, num_relations), PygTC(d, d, heads=heads, concat=True))
    ours = GNNStack(RGCNConv(d, d, num_relations), TransformerConv(d, d, heads=heads, concat=True))
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def loop_graph(setting: dict, dialogue, speaker, keys: dict):
    """The baseline's builder: its per-dialogue Python loop, then the edge list as tensors."""
    wp, wf = setting["window"]
    if setting["scheme"] == "corect":
        edges = corect_graph_loop(dialogue.tolist(), 3, wp, wf)
    else:
        edges = cogmen_graph_loop(dialogue.tolist(), speaker.tolist(), wp, wf)
    edges = sorted(edges)
    ei = torch.tensor([[s for s, _, _ in edges], [t for _, t, _ in edges]], dtype=torch.long)
    et = torch.tensor([keys[k] for _, _, k in edges], dtype=torch.long)
    return ei, et


def our_graph(setting: dict, dialogue, speaker):
    wp, wf = setting["window"]
    return build_conversation_graph(dialogue, speaker, modalities=node_modalities("tav", setting["scheme"]),
                                    window_past=wp, window_future=wf, scheme=setting["scheme"], num_speakers=2)


def run_setting(name: str, setting: dict, device, min_run_time: float, rounds: int) -> list[dict]:
    dialogue, speaker = iemocap_batch(setting["dialogues"])
    g = our_graph(setting, dialogue, speaker)
    names = baseline_relation_keys(("t", "a", "v"), setting["scheme"], num_speakers=2)
    keys = {k: i for i, k in enumerate(names)}
    theirs, ours = stacks(setting, g.num_relations)
    theirs.to(device), ours.to(device)
    x = torch.randn(g.num_nodes, setting["hidden"], device=device, requires_grad=True)
    ei_loop, et_loop = loop_graph(setting, dialogue, speaker, keys)
    go = torch.randn(g.num_nodes, setting["heads"] * setting["hidden"], device=device)
    with torch.no_grad():
        gd = g.to(device)
        diff = (ours(x, gd.edge_index, gd.edge_type) - theirs(x, ei_loop.to(device), et_loop.to(device))).abs().max()

    def pyg_step(build=True):
        params = list(theirs.parameters())

        def step():
            ei, et = loop_graph(setting, dialogue, speaker, keys) if build else (ei_loop, et_loop)
            out = theirs(x, ei.to(device), et.to(device))
            torch.autograd.grad(out, [x, *params], go)
        return step

    def our_step(build=True):
        params = list(ours.parameters())
        fixed = g.to(device)
        fixed_rel, fixed_att = prepare_graph(fixed), AttentionGraph(fixed.edge_index, fixed.num_nodes)

        def step():
            if build:
                cg = our_graph(setting, dialogue.to(device), speaker.to(device))
                rel, att = prepare_graph(cg), AttentionGraph(cg.edge_index, cg.num_nodes, validate=False)
            else:
                rel, att = fixed_rel, fixed_att
            out = ours(x, rel, None, att)
            torch.autograd.grad(out, [x, *params], go)
        return step

    variants = [("PyG stack + loop graph", pyg_step(True)), ("hotspot_erc stack + graph build", our_step(True)),
                ("PyG convs (graph given)", pyg_step(False)), ("hotspot_erc convs (graph given)", our_step(False))]
    times = {v: [] for v, _ in variants}
    for _ in range(rounds):
        for v, fn in variants:
            times[v].append(time_ms(fn, device, min_run_time=min_run_time))
    records = []
    for v, fn in variants:
        records.append({"setting": name, "impl": v, "ms": min(times[v]), "ms_rounds": times[v],
                        "peak_mb": peak_memory_mb(fn, device) if device.type == "cuda" else cpu_peak_mb(fn),
                        "launches": launches(fn), "nodes": g.num_nodes, "edges": int(g.edge_index.shape[1]),
                        "relations": g.num_relations, "dialogues": setting["dialogues"],
                        "utterances": int(dialogue.numel()), "max_abs_diff_vs_pyg": float(diff)})
    for rec in records:
        base = "PyG stack + loop graph" if "build" in rec["impl"] or "loop" in rec["impl"] else "PyG convs (graph given)"
        rec["speedup_vs_pyg"] = min(times[base]) / rec["ms"]
    return records


def main(argv=None) -> None:
    parser = bench_parser(__doc__, "shorter timing runs (same sizes)")
    args = parse_bench_args(parser, argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    min_run_time = 0.2 if args.quick else 1.0
    rounds = 1 if args.quick else 3
    records = []
    for name, setting in SETTINGS.items():
        records += run_setting(name, setting, device, min_run_time, rounds)
    print_table(records, ["setting", "nodes", "edges", "impl", "ms", "peak_mb", "launches", "speedup_vs_pyg",
                          "max_abs_diff_vs_pyg"])
    path = write_results("bench_baseline_gnn", device, records, extra={
        "what": "graph build + RGCNConv + TransformerConv + BatchNorm1d + leaky ReLU, forward + backward "
                "(grads of x and every parameter)", "quick": args.quick})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
