"""TransformerConv forward + backward: hotspot_erc (fused ``graph_attention``) vs
torch_geometric's TransformerConv, the plain-PyTorch reference, and the floor.

Cases: a CORECT-shaped batch (10 IEMOCAP-shaped dialogues, 3 nodes per utterance, CORECT's
graph with windows wp=11 wf=5: about 1,700 nodes and 29k edges; 100 -> 7 heads x 100) and a
COGMEN-shaped one (32 dialogues, one node per utterance, wp=wf=10). Ours is timed with the graph
prepared once (as a model shares it between layers) and from ``edge_index`` (the drop-in cost).
The floor is the four projection GEMMs a layer cannot avoid (query, key, value, skip: forward,
dX and dW) timed bare in the same round; ``vs_floor`` is the median over rounds of the time
against it, and ``attention_ms`` the op alone (fwd+bwd) on the projected rows. Peak memory: CUDA's
allocator on a GPU, the profiler's allocation events on the CPU. Run:
``python -m benchmarks.bench_transformer_conv [--quick]``.
"""
from __future__ import annotations

import statistics

import torch

from benchmarks import perf_model
from benchmarks.bench_baseline_gnn import SETTINGS, iemocap_batch, our_graph
from benchmarks.harness import (bench_parser, cpu_peak_mb, launches, parse_bench_args, peak_memory_mb, perf_fields,
                                print_table, time_ms, write_results)
from hotspot_erc.nn.transformer_conv import TransformerConv
from hotspot_erc.ops.graph_attention import AttentionGraph, graph_attention


def layer_step(layer, x, graph, go):
    params = list(layer.parameters())

    def step():
        out = layer(x, graph)
        torch.autograd.grad(out, [x, *params], go)

    return step


def floor_fn(n, d_in, width, device):
    """Forward, dX and dW of the four projections as one [N, d_in] @ [d_in, 4·H·D] GEMM each."""
    x = torch.randn(n, d_in, device=device)
    w = torch.randn(d_in, width, device=device)
    g = torch.randn(n, width, device=device)

    def step():
        x @ w, g @ w.T, x.T @ g

    return step


def attention_fn(n, heads, dim, graph, device):
    q, k, v = (torch.randn(n, heads, dim, device=device, requires_grad=True) for _ in range(3))
    go = torch.randn(n, heads, dim, device=device)

    def step():
        out = graph_attention(q, k, v, graph)
        torch.autograd.grad(out, [q, k, v], go)

    return step


def run_case(name, setting, device, min_run_time, rounds):
    from torch_geometric.nn import TransformerConv as PygTC

    dialogue, speaker = iemocap_batch(setting["dialogues"])
    g = our_graph(setting, dialogue, speaker).to(device)
    n, e, d, heads = g.num_nodes, int(g.edge_index.shape[1]), setting["hidden"], setting["heads"]
    theirs = PygTC(d, d, heads=heads).to(device)
    ours = TransformerConv(d, d, heads=heads).to(device)
    ours.load_state_dict(theirs.state_dict())
    reference = TransformerConv(d, d, heads=heads, backend="reference").to(device)
    reference.load_state_dict(theirs.state_dict())
    x = torch.randn(n, d, device=device, requires_grad=True)
    go = torch.randn(n, heads * d, device=device)
    graph = AttentionGraph(g.edge_index, n)
    with torch.no_grad():
        diff = (ours(x, graph) - theirs(x, g.edge_index)).abs().max().item()
    variants = [("hotspot_erc TransformerConv (prepared graph)", layer_step(ours, x, graph, go)),
                ("hotspot_erc TransformerConv (edge_index)", layer_step(ours, x, g.edge_index, go)),
                ("PyG TransformerConv", layer_step(theirs, x, g.edge_index, go)),
                ("reference (plain PyTorch)", layer_step(reference, x, g.edge_index, go)),
                ("graph_attention op alone", attention_fn(n, heads, d, graph, device)),
                ("floor: bare projection GEMMs", floor_fn(n, d, 4 * heads * d, device))]
    times = {v: [] for v, _ in variants}
    for _ in range(rounds):
        for v, fn in variants:
            times[v].append(time_ms(fn, device, min_run_time=min_run_time))
    floor = "floor: bare projection GEMMs"
    work = perf_model.transformer_conv(n, e, d, heads, d, x.element_size(), "fwd+bwd")
    records = []
    for v, fn in variants:
        ms = min(times[v])
        records.append({"case": f"{name} N={n} E={e} {d}->{heads}x{d}", "impl": v, "ms": ms, "ms_rounds": times[v],
                        "vs_floor": statistics.median(a / b for a, b in zip(times[v], times[floor])),
                        "peak_mb": peak_memory_mb(fn, device) if device.type == "cuda" else cpu_peak_mb(fn),
                        "launches": launches(fn), **perf_fields(work, ms, device, x.dtype), "nodes": n, "edges": e,
                        "max_abs_diff_vs_pyg": diff})
    base = min(times["PyG TransformerConv"])
    pyg_peak = next(r["peak_mb"] for r in records if r["impl"] == "PyG TransformerConv")
    for rec in records:
        rec["speedup_vs_pyg"] = base / rec["ms"]
        rec["peak_vs_pyg"] = None if not pyg_peak or rec["peak_mb"] is None else rec["peak_mb"] / pyg_peak
    return records


def main(argv=None) -> None:
    parser = bench_parser(__doc__, "shorter timing runs (same sizes)")
    args = parse_bench_args(parser, argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    min_run_time = 0.2 if args.quick else 1.0
    rounds = 1 if args.quick else 5
    records = []
    for name, setting in SETTINGS.items():
        records += run_case(name, setting, device, min_run_time, rounds)
    print_table(records, ["case", "impl", "ms", "vs_floor", "speedup_vs_pyg", "peak_mb", "peak_vs_pyg", "launches"])
    path = write_results("bench_transformer_conv", device, records, extra={
        "what": "TransformerConv forward + backward (grads of x and all parameters), heads concatenated",
        "quick": args.quick})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
