"""The work each op must do: FLOPs and bytes from shapes (DESIGN §6).

Every function returns a :class:`Work` (FLOPs, bytes) for one call: the *floor*, what any
implementation has to compute and move (each input read once, each output written once, no
intermediate through memory), not what our kernels happen to do. A benchmark divides it by the
measured time to get the achieved TFLOP/s and GB/s, and by the device's peak (:data:`PEAKS`) to
get the share of peak; ``floor_ms`` = max(FLOPs / FLOP rate, bytes / bandwidth) is the time a
perfect kernel would take. ``b`` is the bytes per element (2 for bf16, 4 for float32). Index
tensors (``cu_seqlens``, expert ids, CSR pointers) are a few bytes per segment or edge and are
counted only where they are per-edge (relational aggregation).

Passes: ``"fwd"``, ``"bwd"`` (gradients for every floating input), ``"fwd+bwd"`` (their sum).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

PASSES = ("fwd", "bwd", "fwd+bwd")


@dataclasses.dataclass(frozen=True)
class Work:
    """FLOPs (multiply and add counted as 2) and bytes moved to/from device memory."""

    flops: float
    bytes: float

    def __add__(self, other: "Work") -> "Work":
        return Work(self.flops + other.flops, self.bytes + other.bytes)

    def __mul__(self, k: float) -> "Work":
        return Work(self.flops * k, self.bytes * k)

    __rmul__ = __mul__


ZERO = Work(0.0, 0.0)


def _passes(passes: str, fwd: Work, bwd: Work) -> Work:
    if passes not in PASSES:
        raise ValueError(f"passes must be one of {PASSES}, got {passes!r}")
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[passes]


# ----------------------------------------------------------------------------- the ops

def hotspot_gate(n: int, d: int, g: int, b: int, passes: str = "fwd") -> Work:
    """``hotspot_gate`` (DESIGN §3.1), N tokens, d features, gate width g (1 or d).

    Forward: ``z = [c; h] @ W + bias`` is a [N, 2d] x [2d, g] GEMM, 2·N·2d·g = **4·N·d·g FLOPs**
    (4·N·d² for the vector gate; the sigmoid and lerp are O(N·d)); **bytes b·(3·N·d + 2·d·g + g)**:
    read c and h, write out (3·N·d), read W and bias. Balanced at d ≈ 256 on an H100, compute-bound
    above; the scalar gate (g = 1) is a GEMV, purely memory-bound.

    Backward with α recomputed (the kernel saves only its inputs): recompute z (4·N·d·g),
    d[c; h] += dz @ Wᵀ (4·N·d·g), dW = [c; h]ᵀ @ dz (4·N·d·g): **12·N·d·g FLOPs**; **bytes
    b·(5·N·d + 4·d·g + 2·g)**: read c, h and dout, write dc and dh (5·N·d), read W and bias,
    write dW and dbias. (DESIGN §6 rounds the backward to ≈ 6·N·d·b; the kernel's own
    traffic is held to ≤ 9·N·d·b.)
    """
    fwd = Work(4.0 * n * d * g, b * (3.0 * n * d + 2.0 * d * g + g))
    bwd = Work(12.0 * n * d * g, b * (5.0 * n * d + 4.0 * d * g + 2.0 * g))
    return _passes(passes, fwd, bwd)


def grouped_expert_linear(n: int, d_in: int, d_out: int, k: int, experts_used: int, b: int,
                          passes: str = "fwd", bias: bool = True) -> Work:
    """``grouped_expert_linear`` (DESIGN §3.2): N tokens, each through k experts of [d_in, d_out];
    ``experts_used`` = distinct experts any segment picked (≤ E; each weight is read once).

    Forward: **2·N·k·d_in·d_out FLOPs**; **bytes b·(N·d_in + N·d_out + k_used·d_in·d_out)**
    (+ b·k_used·d_out for the bias): read x and the used weights, write y.

    Backward: dx = Σ_i gate_i · dy @ W_eᵀ and dW_e = xᵀ @ (gate · dy) are two GEMMs of the forward's
    size (**4·N·k·d_in·d_out FLOPs**; the gate gradient ⟨dy W_eᵀ, x⟩ adds 2·N·k·d_in); **bytes
    b·(2·N·d_in + N·d_out + 2·k_used·d_in·d_out)** (+ b·k_used·d_out): read x, dy and the weights,
    write dx and dW (and dbias).
    """
    wb = experts_used * d_out if bias else 0
    fwd = Work(2.0 * n * k * d_in * d_out, b * (n * d_in + n * d_out + experts_used * d_in * d_out + wb))
    bwd = Work(4.0 * n * k * d_in * d_out + 2.0 * n * k * d_in,
               b * (2.0 * n * d_in + n * d_out + 2.0 * experts_used * d_in * d_out + wb))
    return _passes(passes, fwd, bwd)


def varlen_cross_attention(lens_q: Iterable[int], lens_k: Iterable[int], heads: int, head_dim: int, b: int,
                           passes: str = "fwd") -> Work:
    """``varlen_cross_attention`` (DESIGN §3.3), segment s: Lq_s queries to Lk_s keys.

    Forward: QKᵀ and PV, **4·H·Dh·Σ_s Lq_s·Lk_s FLOPs** (softmax exponentials not counted);
    **bytes b·H·Dh·(2·Nq + 2·Nk) + 4·H·Nq**: read q, k, v, write o, and the float32 log-sum-exp
    kept for backward.

    Backward (FlashAttention's convention): recompute QKᵀ, then dV, dP, dQ, dK: **2.5× the
    forward's FLOPs**; **bytes b·H·Dh·(4·Nq + 4·Nk) + 8·H·Nq**: read q, k, v, o, do, write dq, dk, dv,
    read the LSE and the row sums ⟨do, o⟩.
    """
    lq, lk = list(lens_q), list(lens_k)
    pairs = float(sum(a * c for a, c in zip(lq, lk)))
    nq, nk = float(sum(lq)), float(sum(lk))
    hd = heads * head_dim
    fwd = Work(4.0 * hd * pairs, b * hd * (2 * nq + 2 * nk) + 4.0 * heads * nq)
    bwd = Work(10.0 * hd * pairs, b * hd * (4 * nq + 4 * nk) + 8.0 * heads * nq)
    return _passes(passes, fwd, bwd)


def relational_aggregate(num_nodes: int, num_edges: int, num_relations: int, d: int, b: int,
                         passes: str = "fwd", index_bytes: int = 8) -> Work:
    """``relational_aggregate`` with ``reduce="mean"`` (DESIGN §3.5): Z [N, R, d].

    Forward: **bytes b·E·d** gathered reads (one row of x per edge: random access, so the rate
    is the gather bandwidth, not streaming copy) **+ b·N·R·d** writes of Z, + the CSR (column index
    per edge, pointer per bucket); FLOPs E·d adds (negligible: memory-bound). Backward is the
    same gather on the transposed structure: b·N·R·d reads of dZ gathered per edge (b·E·d) and
    b·N·d writes of dx.
    """
    n, e, r = float(num_nodes), float(num_edges), float(num_relations)
    csr = index_bytes * (e + n * r + 1)
    fwd = Work(e * d, b * e * d + b * n * r * d + csr)
    bwd = Work(e * d, b * e * d + b * n * d + csr)
    return _passes(passes, fwd, bwd)


def rgcn_conv(num_nodes: int, num_edges: int, num_relations: int, d_in: int, d_out: int, b: int,
              passes: str = "fwd", nonempty_buckets: int | None = None, root: bool = True,
              index_bytes: int = 8) -> Work:
    """One ``RGCNConv`` layer (DESIGN §3.6) on a prepared graph, mean aggregation.

    The floor multiplies only the K non-empty (node, relation) buckets (a dense
    [N, R·d_in] @ [R·d_in, d_out] does 2·N·R·d_in·d_out, DESIGN §6, ~3× more on a conversation
    graph where ~1/3 of the buckets have edges); ``nonempty_buckets=None`` gives the dense count.
    Forward: **FLOPs 2·K·d_in·d_out** (+ **2·N·d_in·d_out** root GEMM) + E·d_in aggregation adds;
    **bytes**: gather b·E·d_in, read x once more for the root (b·N·d_in), the weights
    b·(R + 1)·d_in·d_out, write out b·N·d_out, + the CSR. Backward: the dX and dW GEMMs over the
    same buckets and the root's (**2× the forward's GEMM FLOPs**); bytes: read dout (b·N·d_out,
    gathered again per bucket: b·K·d_out), x (b·N·d_in), weights, write dx (b·N·d_in) and dW.
    """
    n, e, r = float(num_nodes), float(num_edges), float(num_relations)
    k = n * r if nonempty_buckets is None else float(nonempty_buckets)
    gemm = 2.0 * k * d_in * d_out + (2.0 * n * d_in * d_out if root else 0.0)
    w = b * (r + (1 if root else 0)) * d_in * d_out
    csr = index_bytes * (e + k + 1)
    fwd = Work(gemm + e * d_in, b * e * d_in + (b * n * d_in if root else 0) + w + b * n * d_out + csr)
    bwd = Work(2.0 * gemm + e * d_in, b * n * d_out + b * k * d_out + b * n * d_in + w + b * n * d_in + w + csr)
    return _passes(passes, fwd, bwd)


def graph_attention(num_dst: int, num_src: int, num_edges: int, heads: int, head_dim: int, b: int,
                    passes: str = "fwd", edge_features: bool = False, index_bytes: int = 8) -> Work:
    """``graph_attention`` (DESIGN §3.8): each destination over its E incoming edges in total.

    Forward: per edge and head a score q.k and a weighted value row, **4·E·H·D FLOPs**;
    **bytes**: q, out once (b·N_dst·H·D each), one key and one value row gathered per edge
    (b·2·E·H·D: random access, the floor of a gather), the float32 log-sum-exp (4·N_dst·H) and
    the CSR (source and edge id per edge, a pointer per node); with edge features their rows too
    (b·E·H·D). Backward: the scores again, dP, dq, dk, dv: **10·E·H·D FLOPs**; bytes: q, out, do,
    dq per destination, k, v gathered per edge for dq and q, do gathered per edge for dk, dv,
    dk and dv written once, the [E, H] terms written and read (8·E·H), both CSRs.
    """
    nd, ns, e, hd = float(num_dst), float(num_src), float(num_edges), float(heads * head_dim)
    csr = index_bytes * (2 * e + nd + 1)
    edge_rows = b * e * hd if edge_features else 0.0
    fwd = Work(4.0 * e * hd, b * hd * (2 * nd + 2 * e) + 4.0 * nd * heads + csr + edge_rows)
    bwd = Work(10.0 * e * hd, b * hd * (4 * nd + 4 * e + 2 * ns) + 4.0 * nd * heads + 8.0 * e * heads + 2 * csr
               + 2 * edge_rows)
    return _passes(passes, fwd, bwd)


def transformer_conv(num_nodes: int, num_edges: int, d_in: int, heads: int, head_dim: int, b: int,
                     passes: str = "fwd", concat: bool = True) -> Work:
    """One ``TransformerConv`` layer (query, key, value and skip projections + attention).

    The projections: **2·N·d_in·(3·H·D + skip) FLOPs** forward, twice that backward (dX and dW),
    skip = H·D with ``concat`` else D; plus :func:`graph_attention`. Bytes: x read, the four
    outputs written (forward) or read (backward), the weights, plus the attention's.
    """
    n, hd = float(num_nodes), float(heads * head_dim)
    width = 3 * hd + (hd if concat else head_dim)
    gemm = 2.0 * n * d_in * width
    fwd = Work(gemm, b * (n * d_in + n * width + d_in * width))
    bwd = Work(2.0 * gemm, b * (2 * n * d_in + n * width + 2 * d_in * width))
    return _passes(passes, fwd, bwd) + graph_attention(num_nodes, num_nodes, num_edges, heads, head_dim, b, passes)


def mixture_of_aligners(lens: dict[str, list[int]], dim: int, top_k: int, num_experts: int, b: int,
                        passes: str = "fwd", num_heads: int = 4) -> Work:
    """``MixtureOfAligners`` over every ordered modality pair s→t (DESIGN §3.4): per pair a query
    projection of t (2·N_t·d²), the routed key/value projection of s (a grouped linear d → 2d,
    k experts), cross-attention of t's segments to s's (H·Dh = d), and the output projection
    (2·N_t·d²); routers, pooling, layer norms and residuals are O(N·d) and left out. Backward:
    2× each projection's FLOPs, the ops' own backward. ``top_k = num_experts = 1`` models the
    plain cross-attention block (one key/value projection per pair).
    """
    mods = list(lens)
    total = ZERO
    for s in mods:
        for t in mods:
            if s == t:
                continue
            nt, ns = sum(lens[t]), sum(lens[s])
            lin_f = Work(2.0 * nt * dim * dim, b * (2.0 * nt * dim + dim * dim))
            lin_b = Work(4.0 * nt * dim * dim, b * (3.0 * nt * dim + 2.0 * dim * dim))
            proj = _passes(passes, lin_f, lin_b) * 2  # query and output projections
            used = min(num_experts, top_k * len(lens[s]))
            kv = grouped_expert_linear(ns, dim, 2 * dim, top_k, used, b, passes)
            attn = varlen_cross_attention(lens[t], lens[s], num_heads, dim // num_heads, b, passes)
            total = total + proj + kv + attn
    return total


# ----------------------------------------------------------------------------- device peaks

# Data-sheet peaks (dense, no sparsity) of the cards this project benchmarks on, first match of
# the substring in torch.cuda.get_device_name() wins (so "H100 PCIe" before "H100", "GH200"
# before "H200"); a device not listed gets no share of peak.
# "measured": what DESIGN §6 measured on this workplace's H100 (copy bandwidth, bf16 GEMM), used
# for floor_ms where present; the share of peak is always against the data sheet.
PEAKS: list[tuple[str, dict]] = [
    ("H100 PCIe", {"bytes_per_s": 2.0e12, "flops": {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12}}),
    ("H100 NVL", {"bytes_per_s": 3.9e12, "flops": {"bf16": 835e12, "fp16": 835e12, "fp32": 60e12}}),
    ("H100", {"bytes_per_s": 3.35e12, "flops": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
              "measured": {"bytes_per_s": 3.0e12, "flops": {"bf16": 800e12}}}),
    ("GH200", {"bytes_per_s": 4.0e12, "flops": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}}),
    ("H200 NVL", {"bytes_per_s": 4.8e12, "flops": {"bf16": 835e12, "fp16": 835e12, "fp32": 60e12}}),
    ("H200", {"bytes_per_s": 4.8e12, "flops": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}}),
    ("A100-SXM4-40GB", {"bytes_per_s": 1.555e12, "flops": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}}),
    ("A100-PCIE-40GB", {"bytes_per_s": 1.555e12, "flops": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}}),
    ("A100", {"bytes_per_s": 2.0e12, "flops": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}}),
]


def device_peaks(device_name: str) -> dict | None:
    """The :data:`PEAKS` entry for a device name, or None (unknown device, or a CPU)."""
    for key, peaks in PEAKS:
        if key.lower() in device_name.lower():
            return peaks
    return None


def _dtype_key(dtype) -> str:
    return {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32",
            "float": "fp32"}.get(str(dtype).replace("torch.", ""), str(dtype))


def floor_ms(work: Work, device_name: str, dtype) -> float | None:
    """max(FLOPs / rate, bytes / bandwidth) in ms on a known device (measured rates where
    DESIGN §6 has them, else the data sheet); None for an unknown device or dtype."""
    peaks = device_peaks(device_name)
    if peaks is None:
        return None
    measured = peaks.get("measured", {})
    key = _dtype_key(dtype)
    rate = measured.get("flops", {}).get(key) or peaks["flops"].get(key)
    bw = measured.get("bytes_per_s") or peaks["bytes_per_s"]
    if rate is None:
        return None
    return max(work.flops / rate, work.bytes / bw) * 1e3


def rates(work: Work, ms: float, device_name: str | None = None, dtype=None) -> dict:
    """The record fields for one measured call: the model's ``gflop`` and ``mbytes``, the
    achieved ``tflops`` and ``gbps``; on a known device ``bw_share`` / ``flops_share`` (of the
    data-sheet peaks) and ``floor_ms`` / ``floor_ratio`` (time over the floor)."""
    sec = ms * 1e-3
    out = {"gflop": work.flops / 1e9, "mbytes": work.bytes / 1e6,
           "tflops": work.flops / sec / 1e12 if sec > 0 else None,
           "gbps": work.bytes / sec / 1e9 if sec > 0 else None}
    peaks = device_peaks(device_name) if device_name else None
    if peaks is not None and sec > 0:
        out["bw_share"] = work.bytes / sec / peaks["bytes_per_s"]
        rate = peaks["flops"].get(_dtype_key(dtype))
        out["flops_share"] = work.flops / sec / rate if rate else None
        fl = floor_ms(work, device_name, dtype)
        out["floor_ms"] = fl
        out["floor_ratio"] = ms / fl if fl else None
    return out
