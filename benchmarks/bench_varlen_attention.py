"""Benchmark: varlen_cross_attention vs padded baselines on conversation-shaped data.

    python -m benchmarks.bench_varlen_attention [--quick] [--threads N] [--rounds R]

Methods (forward, and forward+backward):
  varlen        hotspot_erc's op, automatic backend (Triton on CUDA, ATen on CPU)
  padded_eager  hotspot_erc.reference padded masked attention (dense score tensor)
  padded_sdpa   torch scaled_dot_product_attention on padded batches with a key-padding mask
  nested_sdpa   SDPA on jagged nested tensors (on CUDA, FlashAttention's varlen kernel inside torch)
  flash_varlen  flash_attn.flash_attn_varlen_func, when installed (CUDA only)
Padding and unpadding are part of the padded baselines' time: the data arrives packed.

Cases: utterances of 20-400 frames (ragged, the MoA cross-attention shape, query and key
lengths drawn independently), the same with equal lengths (no padding waste, so padded SDPA runs
its flash kernel without a mask: "SDPA-flash on the same tokens"), and a few long segments.
TFLOP/s counts useful work only: 4·H·Dh·Σ Lq·Lk forward, 2.5× that more for backward; GB/s the
bytes the call must move (``benchmarks/perf_model.py``); every row also has launches per call and,
on a known GPU, the shares of its peak and the floor time.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from benchmarks import perf_model
from benchmarks.harness import bench_parser, measure, parse_bench_args, print_table, write_results
from hotspot_erc.ops.varlen_attention import varlen_cross_attention
from hotspot_erc.reference.varlen_attention import padded_attention_reference, padded_sdpa_attention


def make_case(name, lens_q, lens_k, heads, head_dim, dtype, device):
    def cu(lens):
        return torch.tensor([0] + lens, device=device).cumsum(0)

    gen = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(sum(lens_q), heads, head_dim, generator=gen).to(device=device, dtype=dtype)
    k = torch.randn(sum(lens_k), heads, head_dim, generator=gen).to(device=device, dtype=dtype)
    v = torch.randn(sum(lens_k), heads, head_dim, generator=gen).to(device=device, dtype=dtype)
    pairs = sum(a * b for a, b in zip(lens_q, lens_k))
    return {
        "case": name, "q": q, "k": k, "v": v, "cu_q": cu(lens_q), "cu_k": cu(lens_k),
        "max_q": max(lens_q), "max_k": max(lens_k), "segments": len(lens_q),
        "tokens_q": sum(lens_q), "tokens_k": sum(lens_k), "heads": heads, "head_dim": head_dim,
        "dtype": str(dtype).replace("torch.", ""), "fwd_flop": 4.0 * heads * head_dim * pairs,
        "work": {p: perf_model.varlen_cross_attention(lens_q, lens_k, heads, head_dim, q.element_size(), p)
                 for p in ("fwd", "fwd+bwd")},
    }


def cases(device, quick: bool):
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(1)

    def lengths(n, lo, hi):
        return torch.randint(lo, hi + 1, (n,), generator=gen).tolist()

    if quick:
        s = 16
        yield make_case("conv_ragged_d128", lengths(s, 20, 400), lengths(s, 20, 400), 4, 32, dtype, device)
        yield make_case("conv_equal_d128", [200] * s, [200] * s, 4, 32, dtype, device)
        return
    for dim in (128, 256):
        s = 256
        yield make_case(f"conv_ragged_d{dim}", lengths(s, 20, 400), lengths(s, 20, 400), 4, dim // 4, dtype, device)
        yield make_case(f"conv_equal_d{dim}", [210] * s, [210] * s, 4, dim // 4, dtype, device)
    yield make_case("long_ragged_d256", lengths(16, 1000, 4000), lengths(16, 1000, 4000), 4, 64, dtype, device)
    yield make_case("long_equal_d256", [2048] * 16, [2048] * 16, 4, 64, dtype, device)


def methods(c, device):
    cu_q, cu_k = c["cu_q"], c["cu_k"]
    mq, mk = c["max_q"], c["max_k"]
    yield "varlen", lambda q, k, v: varlen_cross_attention(q, k, v, cu_q, cu_k)
    if c["segments"] * c["heads"] * mq * mk * 4 < 8 * 2**30:  # dense scores must fit in memory
        yield "padded_eager", lambda q, k, v: padded_attention_reference(q, k, v, cu_q, cu_k, None, mq, mk)
    if c["max_q"] * c["segments"] == c["tokens_q"] and c["max_k"] * c["segments"] == c["tokens_k"]:
        # Equal lengths: no mask needed, so SDPA may pick its flash kernel.
        def dense_sdpa(q, k, v):
            s, h, d = c["segments"], c["heads"], c["head_dim"]
            out = F.scaled_dot_product_attention(
                q.view(s, mq, h, d).transpose(1, 2), k.view(s, mk, h, d).transpose(1, 2),
                v.view(s, mk, h, d).transpose(1, 2))
            return out.transpose(1, 2).reshape(q.shape)
        yield "dense_sdpa", dense_sdpa
    yield "padded_sdpa", lambda q, k, v: padded_sdpa_attention(q, k, v, cu_q, cu_k, None, mq, mk)

    def nested_sdpa(q, k, v):
        nq = torch.nested.nested_tensor_from_jagged(q, cu_q).transpose(1, 2)
        nk = torch.nested.nested_tensor_from_jagged(k, cu_k).transpose(1, 2)
        nv = torch.nested.nested_tensor_from_jagged(v, cu_k).transpose(1, 2)
        return F.scaled_dot_product_attention(nq, nk, nv).transpose(1, 2).values()
    yield "nested_sdpa", nested_sdpa
    if device.type == "cuda":
        try:
            from flash_attn import flash_attn_varlen_func
        except Exception:
            flash_attn_varlen_func = None
        if flash_attn_varlen_func is not None:
            cq32, ck32 = cu_q.int(), cu_k.int()
            yield "flash_varlen", lambda q, k, v: flash_attn_varlen_func(q, k, v, cq32, ck32, mq, mk)


def run(device: torch.device, quick: bool, rounds: int = 1) -> list[dict]:
    jobs = []
    for c in cases(device, quick):
        meta = {k: c[k] for k in ("case", "segments", "tokens_q", "tokens_k", "heads", "head_dim", "dtype")}
        for name, fn in methods(c, device):
            leaves = [t.detach().clone().requires_grad_(True) for t in (c["q"], c["k"], c["v"])]
            grad = torch.randn_like(c["q"])

            def fwd(fn=fn, leaves=leaves):
                with torch.no_grad():
                    return fn(*leaves)

            def fwd_bwd(fn=fn, leaves=leaves, grad=grad):
                return torch.autograd.grad(fn(*leaves), leaves, grad)

            jobs.append((name, "fwd", fwd, c["work"]["fwd"], meta))
            jobs.append((name, "fwd+bwd", fwd_bwd, c["work"]["fwd+bwd"], meta))
    # Rounds go over all jobs in turn and each job keeps its fastest time, so a burst of load
    # from other jobs on a shared machine does not land on one method only.
    best: dict[int, dict] = {}
    for _ in range(rounds):
        for i, (name, mode, call, work, meta) in enumerate(jobs):
            if "error" in best.get(i, {}):
                continue
            try:
                rec = measure(name, call, device, work=work, mode=mode, **meta)
            except Exception as exc:  # a baseline that cannot run this case says why
                best[i] = {"name": name, "mode": mode, "error": f"{type(exc).__name__}: {exc}"[:300], **meta}
                continue
            if i not in best or rec["ms"] < best[i]["ms"]:
                best[i] = rec
    records = [best[i] for i in range(len(jobs))]
    ours = {(r["case"], r["mode"]): r["ms"] for r in records if r["name"] == "varlen" and "ms" in r}
    for r in records:
        if "ms" in r and (r["case"], r["mode"]) in ours:
            r["varlen_speedup"] = r["ms"] / ours[(r["case"], r["mode"])]
    return records


def plot(records: list[dict], path: str) -> None:
    """Bar chart of time per method, one panel per (case, mode), next to the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if "ms" in r]
    panels = sorted({(r["case"], r["mode"]) for r in ok})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, (case, mode) in zip(axes[0], panels):
        rows = [r for r in ok if r["case"] == case and r["mode"] == mode]
        ax.bar([r["name"] for r in rows], [r["ms"] for r in rows],
               color=["tab:red" if r["name"] == "varlen" else "tab:gray" for r in rows])
        ax.set_title(f"{case}\n{mode}", fontsize=8)
        ax.set_ylabel("ms")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> None:
    parser = bench_parser(__doc__, "small shapes (CPU smoke run)")
    parser.add_argument("--rounds", type=int, default=1, help="keep the fastest of this many measurements")
    args = parse_bench_args(parser, argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    records = run(device, args.quick, args.rounds)
    print_table(records, ["case", "mode", "name", "ms", "launches", "tflops", "gbps", "flops_share", "floor_ratio",
                          "peak_mb", "varlen_speedup", "error"])
    path = write_results("varlen_attention", device, records, extra={"quick": args.quick, "rounds": args.rounds})
    plot(records, path[:-len(".json")] + ".png")
    print(f"wrote {path} and its .png")


if __name__ == "__main__":
    main()
