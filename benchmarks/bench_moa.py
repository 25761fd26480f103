"""Benchmark: the MixtureOfAligners module, and its overhead over plain cross-attention.

    python -m benchmarks.bench_moa [--quick]

Three modalities per conversation batch with frame counts typical of ERC features (text 10–60
tokens, audio 50–400 frames, video 20–150 frames per utterance), forward and forward+backward of

* ``moa``: :class:`~hotspot_erc.nn.moa.MixtureOfAligners` with automatic backends (Triton on CUDA,
  ATen on CPU);
* ``moa_reference``: the same module and weights with ``backend="reference"`` (loop over experts,
  per-segment attention): the eager baseline;
* ``plain``: :class:`~hotspot_erc.nn.moa.PlainCrossModalAttention`, the same block without
  router and experts (one key/value projection per pair). ``moa_overhead`` = moa / plain is the
  cost MoA adds, which the paper leaves open.

Every row also has launches per call and the FLOPs/bytes model of ``perf_model.mixture_of_aligners``
(projections, routed key/value projection, cross-attention per pair) with the achieved rates.
"""
from __future__ import annotations


import torch

from benchmarks import perf_model
from benchmarks.harness import bench_parser, measure, parse_bench_args, print_table, write_results
from hotspot_erc.nn.moa import MixtureOfAligners, PlainCrossModalAttention

FRAMES = {"t": (10, 60), "a": (50, 400), "v": (20, 150)}


def make_batch(num_utterances: int, dim: int, dtype, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats, cu = {}, {}
    for m, (lo, hi) in FRAMES.items():
        lens = torch.randint(lo, hi + 1, (num_utterances,), generator=g)
        cu[m] = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)]).to(device)
        feats[m] = torch.randn(int(lens.sum()), dim, generator=g).to(device, dtype).requires_grad_()
    return feats, cu


def _fwd_bwd(module, feats, cu):
    out = module(feats, cu)
    loss = sum(o.float().square().mean() for o in out.outputs.values()) + out.lb_loss.float()
    params = [p for p in module.parameters()] + list(feats.values())
    return torch.autograd.grad(loss, params)


def run(quick: bool):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if quick:
        cases = [(16, 128, 4, 2)]
    else:
        cases = [(s, d, e, k) for s in (64, 256) for d in (128, 256) for e in (4, 8, 16) for k in (1, 2)]
    records = []
    for s, d, e, k in cases:
        torch.manual_seed(0)
        feats, cu = make_batch(s, d, dtype, device)
        moa = MixtureOfAligners(d, num_experts=e, top_k=k, num_heads=4).to(device, dtype)
        ref = MixtureOfAligners(d, num_experts=e, top_k=k, num_heads=4, backend="reference").to(device, dtype)
        ref.load_state_dict(moa.state_dict())
        plain = PlainCrossModalAttention(d, num_heads=4).to(device, dtype)
        meta = dict(utterances=s, frames=sum(int(c[-1]) for c in cu.values()), d=d, E=e, k=k,
                    dtype=str(dtype).replace("torch.", ""))
        impls = {"moa": moa, "plain": plain}
        # The per-segment reference is slow; time it only where it finishes in reasonable time.
        if s <= 64:
            impls["moa_reference"] = ref
        got = {}
        lens = {m: (c[1:] - c[:-1]).tolist() for m, c in cu.items()}
        elem = torch.finfo(dtype).bits // 8
        for name, module in impls.items():
            routed = (k, e) if name != "plain" else (1, 1)  # plain: one key/value projection per pair
            work = {p: perf_model.mixture_of_aligners(lens, d, *routed, elem, p, num_heads=4)
                    for p in ("fwd", "fwd+bwd")}
            with torch.no_grad():
                fwd = measure(f"{name}/fwd", lambda: module(feats, cu), device, work=work["fwd"],
                              impl=name, **{"pass": "fwd"}, **meta)
            fb = measure(f"{name}/fwd+bwd", lambda: _fwd_bwd(module, feats, cu), device, work=work["fwd+bwd"],
                         impl=name, **{"pass": "fwd+bwd"}, **meta)
            got[name] = (fwd, fb)
            records += [fwd, fb]
        for i in (0, 1):
            got["moa"][i]["moa_overhead"] = got["moa"][i]["ms"] / got["plain"][i]["ms"]
            if "moa_reference" in got:
                got["moa"][i]["speedup_vs_reference"] = got["moa_reference"][i]["ms"] / got["moa"][i]["ms"]
    return records, device


def main(argv=None) -> int:
    p = bench_parser(__doc__, "one small case (CPU smoke run)")
    args = parse_bench_args(p, argv)
    records, device = run(args.quick)
    print_table(records, ["name", "utterances", "frames", "d", "E", "k", "ms", "launches", "tflops", "gbps",
                          "flops_share", "peak_mb", "moa_overhead", "speedup_vs_reference"])
    path = write_results("moa", device, records, extra={"quick": args.quick})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
