"""Benchmark: grouped_expert_linear (DESIGN §3.2) against the loop-over-experts reference.

    python -m benchmarks.bench_grouped_linear [--quick]

Conversation shapes (utterances of 20–400 frames, d = 128/256, E ∈ {4, 8, 16}, k ∈ {1, 2}) and
long segments; forward and forward+backward. On CUDA the op runs its Triton kernels in bfloat16
and each record carries launches per call, the DESIGN §6 model (FLOPs 2·N·k·d_in·d_out, bytes
b·(N·d_in + N·d_out + k_used·d_in·d_out); backward ``benchmarks/perf_model.py``), the achieved
rates and, on a known GPU, the shares of its peak and the floor time; on CPU it runs the ATen path
in float32. Target (H100): ≥ 3× the loop.
"""
from __future__ import annotations


import torch

from benchmarks import perf_model
from benchmarks.harness import bench_parser, measure, parse_bench_args, print_table, write_results
from hotspot_erc.ops.grouped_linear import grouped_expert_linear
from hotspot_erc.reference.grouped_linear import grouped_expert_linear_reference

def conversation_lengths(num_segments: int, lo: int, hi: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi + 1, (num_segments,), generator=g).tolist()


def make_case(lengths, d, num_experts, k, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, s = sum(lengths), len(lengths)
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), device=device)
    x = torch.randn(n, d, generator=g).to(device, dtype)
    w = (torch.randn(num_experts, d, d, generator=g) / d ** 0.5).to(device, dtype)
    b = torch.randn(num_experts, d, generator=g).to(device, dtype)
    experts = torch.stack([torch.randperm(num_experts, generator=g)[:k] for _ in range(s)]).to(device)
    gates = torch.softmax(torch.randn(s, k, generator=g), -1).to(device, dtype)
    return x, cu, experts, gates, w, b


def work(n, d, experts, k, dtype_bytes, passes):
    """FLOPs and bytes the call must do (``perf_model.grouped_expert_linear``, d_in = d_out = d)."""
    used = int(torch.unique(experts).numel())
    return perf_model.grouped_expert_linear(n, d, d, k, used, dtype_bytes, passes)


def run(quick: bool) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if quick:
        cases = [("conv", 16, 20, 400, 128, 4, 2), ("conv", 16, 20, 400, 128, 16, 1)]
    else:
        cases = [("conv", 64, 20, 400, d, e, k) for d in (128, 256) for e in (4, 8, 16) for k in (1, 2)]
        cases += [("long", 8, 4096, 4096, d, 8, 2) for d in (128, 256)]
    records = []
    for kind, segs, lo, hi, d, num_experts, k in cases:
        lengths = conversation_lengths(segs, lo, hi, seed=len(records))
        x, cu, experts, gates, w, b = make_case(lengths, d, num_experts, k, dtype, device)
        n = x.shape[0]
        meta = dict(kind=kind, segments=segs, tokens=n, d=d, E=num_experts, k=k,
                    dtype=str(dtype).replace("torch.", ""))
        leaves = [t.requires_grad_() for t in (x, gates, w, b)]
        dy = torch.randn(n, d, device=device, dtype=dtype)
        impls = {
            "op": lambda *a: grouped_expert_linear(a[0], cu, experts, a[1], a[2], a[3]),
            "reference_loop": lambda *a: grouped_expert_linear_reference(a[0], cu, experts, a[1], a[2], a[3]),
        }
        row = {}
        elem = x.element_size()
        for impl, fn in impls.items():
            with torch.no_grad():
                fwd = measure(f"{impl}/fwd", lambda: fn(*leaves), device, work=work(n, d, experts, k, elem, "fwd"),
                              impl=impl, **{"pass": "fwd"}, **meta)
            fb = measure(f"{impl}/fwd+bwd", lambda: torch.autograd.grad(fn(*leaves), leaves, dy), device,
                         work=work(n, d, experts, k, elem, "fwd+bwd"),
                         impl=impl, **{"pass": "fwd+bwd"}, **meta)
            records += [fwd, fb]
            row[impl] = (fwd, fb)
        for i in (0, 1):
            row["op"][i]["speedup_vs_loop"] = row["reference_loop"][i]["ms"] / row["op"][i]["ms"]
    return records, device


def main(argv=None) -> int:
    p = bench_parser(__doc__, "two small cases (CPU smoke run)")
    args = parse_bench_args(p, argv)
    records, device = run(args.quick)
    print_table(records, ["name", "kind", "tokens", "d", "E", "k", "ms", "launches", "peak_mb", "gbps", "tflops",
                          "flops_share", "floor_ratio", "speedup_vs_loop"])
    path = write_results("grouped_linear", device, records, extra={"quick": args.quick})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
