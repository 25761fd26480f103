"""Benchmark hotspot_gate (DESIGN §3.1, §6) against the eager reference and torch.compile(reference).

    python -m benchmarks.bench_hotspot_gate [--quick]

Forward and forward+backward, both gate kinds, N tokens x d features. GPU: bfloat16, N in
{4k, 64k, 1M}, d in {128, 256, 1024}, the op's Triton kernels; reports time, peak memory, the
bytes the op must move (DESIGN §6), achieved bandwidth and its fraction of the card's measured
copy bandwidth, TFLOP/s, the shares of the card's data-sheet peaks (benchmarks/perf_model.py),
launches per call, and speed-ups over eager and compiled references. CPU: float32, a subset
of shapes, the op's CPU backend; the speed-up over eager is the number that matters there
(the compiled reference is timed too unless --quick).
"""
from __future__ import annotations

import math

import torch

from benchmarks import harness, perf_model
from hotspot_erc.ops.hotspot_gate import hotspot_gate
from hotspot_erc.reference.hotspot_gate import hotspot_gate_reference


def copy_bandwidth_gbps(device: torch.device) -> float | None:
    """Device-to-device copy bandwidth (read + write) on this card, measured now."""
    if device.type != "cuda":
        return None
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = harness.time_ms(lambda: dst.copy_(src), device)
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def bytes_and_flops(n: int, d: int, g: int, elem: int, passes: str) -> tuple[float, float]:
    """Bytes the op must move and FLOPs it must do (DESIGN §6's floors: ``perf_model.hotspot_gate``)."""
    work = perf_model.hotspot_gate(n, d, g, elem, passes)
    return work.bytes, work.flops


def make_case(n, d, g, dtype, device):
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    # nn.Linear-scale weights: an unsaturated gate (saturated gates make CPU math denormal-slow).
    inputs = [rnd(n, d), rnd(n, d), rnd(2 * d, g, scale=1 / math.sqrt(2 * d)), rnd(g, scale=0.1)]
    return inputs, rnd(n, d)


def runner(impl, inputs, grad_out, passes):
    if passes == "fwd":
        def fwd():
            with torch.no_grad():
                return impl(*inputs)
        return fwd
    params = [t.detach().requires_grad_() for t in inputs]

    def fwd_bwd():
        out = impl(*params)
        return torch.autograd.grad(out, params, grad_out)
    return fwd_bwd


def main(argv=None) -> int:
    ap = harness.bench_parser(__doc__, "fewer shapes (CPU: no torch.compile baseline)",
                              threads_help="CPU threads (default 1: stable numbers on a shared machine, same for every impl)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved timing rounds per case, best kept (default: 3 on CPU, 1 on GPU)")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    elem = torch.finfo(dtype).bits // 8
    if on_gpu:
        ns = [4096, 65536] if args.quick else [4096, 65536, 1 << 20]
        ds = [128, 256, 1024]
    else:
        ns = [4096] if args.quick else [4096, 65536]
        ds = [128, 256] if args.quick else [128, 256, 1024]
    with_compiled = on_gpu or not args.quick
    if not on_gpu:
        torch.set_num_threads(args.threads or 1)
    rounds = args.rounds or (1 if on_gpu else 3)
    copy_bw = copy_bandwidth_gbps(device)

    records = []
    for n in ns:
        for d in ds:
            for gate in ("vector", "scalar"):
                g = d if gate == "vector" else 1
                inputs, grad_out = make_case(n, d, g, dtype, device)
                impls = {"op": lambda c, h, w, b: hotspot_gate(c, h, w, b), "eager": hotspot_gate_reference}
                if with_compiled:
                    # A fresh compile per shape: one shared wrapper would hit Dynamo's recompile
                    # limit after a few shapes and silently run eager from then on.
                    torch._dynamo.reset()
                    impls["compiled"] = torch.compile(hotspot_gate_reference, dynamic=False)
                for passes in ("fwd", "fwd+bwd"):
                    nbytes, flops = bytes_and_flops(n, d, g, elem, passes)
                    case = {}
                    fns = {name: runner(impl, inputs, grad_out, passes) for name, impl in impls.items()}
                    # Interleaved rounds, best kept: other load on a shared CPU only ever adds time.
                    best = {name: harness.time_ms(fns[name], device) for name in fns}
                    for _ in range(rounds - 1):
                        for name in fns:
                            best[name] = min(best[name], harness.time_ms(fns[name], device))
                    for name, fn in fns.items():
                        rec = {"name": f"{name}/{passes}", "ms": best[name],
                               "peak_mb": harness.peak_memory_mb(fn, device), "impl": name, "pass": passes,
                               "gate": gate, "N": n, "d": d, "dtype": str(dtype).replace("torch.", "")}
                        # torch.compile'd code launches through Inductor's own launcher, which the
                        # counter does not see (and an active dispatch mode changes what Dynamo runs).
                        rec["launches"] = harness.launches(fn) if name != "compiled" else None
                        rec.update(harness.perf_fields(perf_model.Work(flops, nbytes), rec["ms"], device, dtype))
                        if copy_bw:
                            rec["bw_frac"] = rec["gbps"] / copy_bw
                        case[name] = rec
                    op = case["op"]
                    op["speedup_vs_eager"] = case["eager"]["ms"] / op["ms"]
                    if "compiled" in case:
                        op["speedup_vs_compiled"] = case["compiled"]["ms"] / op["ms"]
                    records.extend(case.values())
                    print(f"N={n:<8d} d={d:<5d} {gate:6s} {passes:8s} op {op['ms']:.3f} ms "
                          f"({op['launches']} launches, {op['gbps']:.4g} GB/s, {op['tflops']:.3g} TFLOP/s)  "
                          f"eager {case['eager']['ms']:.3f} ms  x{op['speedup_vs_eager']:.2f}"
                          + (f"  compiled {case['compiled']['ms']:.3f} ms  x{op['speedup_vs_compiled']:.2f}"
                             if "compiled" in case else ""), flush=True)
                del inputs, grad_out
                if on_gpu:
                    torch.cuda.empty_cache()

    extra = {"quick": args.quick, "copy_bandwidth_gbps": copy_bw, "rounds": rounds,
             "bytes_model": "fwd: b(3Nd + 2dg + g); fwd+bwd adds b(5Nd + 4dg + 2g) (DESIGN §6)",
             "flops_model": "fwd: 4Ndg; fwd+bwd adds 12Ndg (benchmarks/perf_model.py)"}
    path = harness.write_results("hotspot_gate", device, records, extra)
    harness.print_table([r for r in records if r["impl"] == "op"],
                        ["pass", "gate", "N", "d", "ms", "launches", "peak_mb", "gbps", "tflops", "bw_share",
                         "flops_share", "speedup_vs_eager", "speedup_vs_compiled"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
