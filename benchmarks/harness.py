"""Shared timing, memory and result-writing helpers for every benchmark in this folder.

GPU: `triton.testing.do_bench` (median over repeats, after warm-up). CPU:
`torch.utils.benchmark.Timer.blocked_autorange` (median). Results are JSON records written to
``benchmarks/results/<name>-<device>-<date>.json`` with device, versions and date.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
from typing import Callable

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def bench_parser(doc: str, quick_help: str,
                 threads_help: str = "CPU threads (default: torch's); 1 gives stable numbers on a shared machine",
                 ) -> argparse.ArgumentParser:
    """The command line every ``bench_*.py`` shares: ``--quick`` and ``--threads``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--threads", type=int, default=None, help=threads_help)
    return parser


def parse_bench_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, and apply ``--threads`` when given."""
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU x{os.cpu_count()}"


def time_ms(fn: Callable[[], object], device: torch.device | str, min_run_time: float = 0.5) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    device = torch.device(device)
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    from torch.utils import benchmark

    fn()  # warm-up (first-call allocations, lazy init)
    m = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return float(m.blocked_autorange(min_run_time=min_run_time).median * 1e3)


def peak_memory_mb(fn: Callable[[], object], device: torch.device | str) -> float | None:
    """Peak CUDA memory allocated during ``fn()`` above what was live before (None on CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def cpu_peak_mb(fn: Callable[[], object]) -> float | None:
    """Peak CPU tensor memory during ``fn()`` above what was live when it started, in MiB: the
    profiler's memory timeline (every allocation and free of a tensor, in order; torch's own,
    private, ``_memory_profiler``). Where that fails, the process's resident high-water mark
    above its resident size before (Linux; pages, not tensors); None where neither works."""
    fn()  # warm-up: first-call caches are not the call's own memory
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            fn()
        _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
        if sizes:
            return (max(sum(s) for s in sizes) - sum(sizes[0])) / 2**20
    except Exception:  # a private API: fall back to what the kernel reports
        pass
    _fixed_mmap_threshold()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current resident size
        before = _status_kb("VmRSS")
        fn()
        peak = _status_kb("VmHWM")
    except OSError:
        return None
    return max(peak - before, 0) / 1024


def _fixed_mmap_threshold() -> None:
    """glibc serves blocks above a threshold with mmap and unmaps them when freed, but raises
    that threshold to the largest block freed so far, after which big tensors stay resident once
    freed and the high-water mark forgets them. Pinning it makes every tensor of 128 KiB or more
    come and go with its pages."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def launches(fn: Callable[[], object]) -> int | None:
    """Kernel launches of one (already warmed-up) call of ``fn()``: Triton launches plus leaf
    ATen/custom ops, views and allocations excluded (``hotspot_erc.testing.count_launches``;
    value checks that CPU tensors always run and CUDA tensors only with HOTSPOT_ERC_VALIDATE=1
    are left out). None if the call cannot be counted (a baseline the dispatch mode cannot see).
    Not meaningful for ``torch.compile``'d callables: Inductor launches its kernels through its own
    launcher, not ``kernel[grid]``, and a dispatch mode changes what Dynamo runs."""
    try:
        from hotspot_erc.testing import count_launches

        return count_launches(fn, warmup=0).total
    except Exception:
        return None


def measure(name: str, fn: Callable[[], object], device, work=None, **meta) -> dict:
    """One result record: time, peak memory, launches per call and whatever describes the case.
    ``work``: the call's :class:`benchmarks.perf_model.Work` (FLOPs and bytes it must do) adds
    the model and the achieved rates (and shares of the device's peak for ``meta["dtype"]``) to
    the record."""
    rec = {"name": name, "ms": time_ms(fn, device), "peak_mb": peak_memory_mb(fn, device),
           "launches": launches(fn)}
    if work is not None:
        rec.update(perf_fields(work, rec["ms"], device, meta.get("dtype")))
    rec.update(meta)
    return rec


def perf_fields(work, ms: float, device, dtype=None) -> dict:
    """``benchmarks.perf_model.rates`` for this device: model FLOPs/bytes, achieved TFLOP/s and
    GB/s, and on a GPU in ``perf_model.PEAKS`` the shares of its peak and the floor time."""
    from benchmarks import perf_model

    device = torch.device(device)
    name = device_name(device) if device.type == "cuda" else None
    return perf_model.rates(work, ms, name, dtype)


def environment(device) -> dict:
    device = torch.device(device)
    env = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "threads": torch.get_num_threads(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception:
        env["triton"] = None
    return env


def result_stem(env: dict) -> str:
    """``<device>-<date>`` part of a results file name, from :func:`environment`'s record."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", env["device"]).strip("-").lower()
    return f"{slug}-{env['date'][:10]}"


def write_results(bench: str, device, records: list[dict], extra: dict | None = None) -> str:
    """Write ``records`` to benchmarks/results/<bench>-<device>-<date>.json; returns the path."""
    env = environment(device)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{bench}-{result_stem(env)}.json")
    with open(path, "w") as fh:
        json.dump({"benchmark": bench, "environment": env, **(extra or {}), "results": records}, fh, indent=1)
    return path


def print_table(records: list[dict], keys: list[str]) -> None:
    widths = {k: max(len(k), *(len(_fmt(r.get(k))) for r in records)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in records:
        print("  ".join(_fmt(r.get(k)).ljust(widths[k]) for k in keys))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)
