"""How a benchmark record reads in tables, plots and the README (shared by ``run_all`` and
``readme``, which otherwise need nothing of each other)."""
from __future__ import annotations


# Keys that describe a record rather than the case it measured.
RESULT_KEYS = {"name", "ms", "peak_mb", "impl", "pass", "tflops", "gbps", "bw_frac", "launches", "gflop", "mbytes",
               "bw_share", "flops_share"}


def label(rec: dict) -> str:
    """What was measured: the record's name, else its implementation."""
    return str(rec.get("name") or rec.get("impl") or "")


def speedups(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if "speedup" in k and isinstance(v, (int, float))}


def case_text(rec: dict) -> str:
    parts = []
    for k, v in rec.items():
        if (k in RESULT_KEYS or "speedup" in k or k.startswith(("h100_", "floor", "max_abs_diff", "note"))
                or isinstance(v, (dict, list))):
            continue
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def achieved_text(rec: dict) -> str | None:
    """Achieved rates of a record against its FLOP/byte model (``perf_model.rates``) and, on a
    known GPU, the share of the device's peak: "1.2 TFLOP/s (14% peak), 800 GB/s (24%)"."""
    parts = []
    for key, unit, share in (("tflops", "TFLOP/s", "flops_share"), ("gbps", "GB/s", "bw_share")):
        v = rec.get(key)
        if isinstance(v, (int, float)):
            s = rec.get(share)
            parts.append(f"{v:.3g} {unit}" + (f" ({100 * s:.0f}% of peak)" if isinstance(s, (int, float)) else ""))
    return ", ".join(parts) or None
