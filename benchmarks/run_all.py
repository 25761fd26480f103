"""Run every benchmark in this folder on the present device and collect one report.

    python -m benchmarks.run_all [--quick] [--only NAME ...] [--no-readme] [--budget SECONDS]
    hotspot-erc bench [--quick] ...

Each ``benchmarks/bench_<name>.py`` runs in its own process (so one failure or a hung kernel does
not take the rest down) and writes its JSON; this script merges them into
``benchmarks/results/<device>-<date>.json``, draws ``<device>-<date>.png`` (speed-ups over each
baseline), prints one table, and regenerates README.md's performance section from the latest
merged results of every device (``benchmarks/readme.py``).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

import torch

from benchmarks import harness, readme
from benchmarks.records import achieved_text, case_text, label, speedups

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def discover() -> list[str]:
    return sorted(os.path.basename(p)[len("bench_"):-3] for p in glob.glob(os.path.join(HERE, "bench_*.py")))


def run_one(name: str, quick: bool, timeout: float) -> tuple[dict | None, str]:
    """Run benchmarks.bench_<name>; returns (its JSON payload or None, status text)."""
    started = time.time()
    cmd = [sys.executable, "-m", f"benchmarks.bench_{name}"] + (["--quick"] if quick else [])
    try:
        env = dict(os.environ)
        if not torch.cuda.is_available():
            # One thread per benchmark: with 2+ OpenMP threads on a small shared CPU, timings
            # swing by up to 10x; an explicitly set OMP_NUM_THREADS is respected.
            env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    if proc.returncode != 0:
        return None, f"failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:] }"
    fresh = sorted((p for p in glob.glob(os.path.join(harness.RESULTS_DIR, "*.json"))
                    if os.path.getmtime(p) >= started - 1), key=os.path.getmtime, reverse=True)
    for path in fresh:  # newest first; merged "all" files from earlier runs are not its output
        payload = _load(path)
        if payload is not None and payload.get("benchmark") not in (None, "all"):
            return payload, f"ok ({time.time() - started:.0f} s)"
    return None, "wrote no results JSON"


def _load(path: str) -> dict | None:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def plot(merged: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for bench, payload in merged["benchmarks"].items():
        for rec in payload.get("results", []):
            for k, v in speedups(rec).items():
                if abs(v - 1.0) > 1e-12:  # a baseline measured against itself says nothing
                    rows.append((f"{bench}: {label(rec)} {case_text(rec)[:48]}", k, v))
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(14, 0.28 * len(rows) + 1.5))
    ax.barh(range(len(rows)), [r[2] for r in rows], color="tab:blue")
    ax.set_yticks(range(len(rows)), [f"{r[0]} [{r[1]}]" for r in rows], fontsize=6)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speed-up (baseline time / ours), log scale")
    ax.set_title(f"hotspot-erc benchmarks on {merged['environment']['device']}")
    ax.invert_yaxis()
    fig.subplots_adjust(left=0.55, right=0.98, top=1 - 0.6 / (0.28 * len(rows) + 1.5),
                        bottom=0.8 / (0.28 * len(rows) + 1.5))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Run all hotspot-erc benchmarks and merge the results.")
    p.add_argument("--quick", action="store_true", help="small cases only (a few minutes on a 2-core CPU)")
    p.add_argument("--only", nargs="*", default=None, help=f"benchmarks to run (default all: {' '.join(discover())})")
    p.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default 170 quick, 300 full)")
    p.add_argument("--no-readme", action="store_true", help="don't regenerate README.md's performance section")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole run: each benchmark gets at most what is left, and the ones "
                        "that no longer fit are skipped with a message (the merged JSON is still written)")
    args = p.parse_args(argv)
    names = args.only or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; available: {discover()}")
    timeout = args.timeout or (170.0 if args.quick else 300.0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    merged = {"benchmark": "all", "quick": args.quick, "environment": harness.environment(device),
              "benchmarks": {}, "status": {}}
    deadline = time.time() + args.budget if args.budget else None
    for name in names:
        this_timeout = timeout
        if deadline is not None:
            left = deadline - time.time()
            if left < 10:
                merged["status"][name] = f"skipped: the {args.budget:.0f} s budget is spent"
                print(f"== bench_{name}: {merged['status'][name]}", flush=True)
                continue
            this_timeout = min(timeout, left)
        print(f"== bench_{name} ...", flush=True)
        payload, status = run_one(name, args.quick, this_timeout)
        merged["status"][name] = status
        print(f"   {status}", flush=True)
        if payload is not None:
            merged["benchmarks"][name] = payload
    base = os.path.join(harness.RESULTS_DIR, harness.result_stem(merged["environment"]))
    with open(base + ".json", "w") as fh:
        json.dump(merged, fh, indent=1)
    plot(merged, base + ".png")
    table = []
    for bench, payload in merged["benchmarks"].items():
        for rec in payload.get("results", []):
            row = {"bench": bench, "name": label(rec), "case": case_text(rec)[:70],
                   "ms": rec.get("ms"), "launches": rec.get("launches"), "achieved": achieved_text(rec),
                   "peak_mb": rec.get("peak_mb")}
            sp = speedups(rec)
            row["speedup"] = " ".join(f"{k.replace('speedup', '').strip('_') or 'x'}={v:.2f}" for k, v in sp.items()) or None
            table.append(row)
    if table:
        harness.print_table(table, ["bench", "name", "case", "ms", "launches", "achieved", "peak_mb", "speedup"])
    print(f"wrote {base}.json and {base}.png")
    if not args.no_readme:
        readme.update(os.path.join(ROOT, "README.md"))
    failed = [n for n, s in merged["status"].items() if not s.startswith("ok")]
    if failed:
        print(f"benchmarks that did not finish: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
