"""One-command GPU check: build for this GPU, run the GPU tests, run the benchmarks.

    make gpu-check                         # = python -m benchmarks.gpu_check
    python -m benchmarks.gpu_check --dry-run
    python -m benchmarks.gpu_check --skip-build --stages tests

From a fresh checkout on one H100/H200 (no network), in this order, each stage with a time
budget (8 minutes in all by default):

1. ``build``  (140 s, then 20 s to check): ``pip install --no-build-isolation --no-deps -e .`` with
   ``TORCH_CUDA_ARCH_LIST`` set to the present GPU's compute capability only (one arch compiles
   in a fraction of the default list's time), then a fresh interpreter checks that the compiled
   ops have CUDA kernels (``hotspot_erc._ext``).
2. ``tests``  (160 s): ``pytest -m gpu tests/``: every GPU-marked test (kernels at conversation
   scale, no host sync, bitwise-identical results across two processes, no recompiles per batch
   size).
3. ``bench``  (160 s): ``python -m benchmarks.run_all --budget <what is left>``: every benchmark
   with its bytes, FLOPs and share of the device's peak, merged into
   ``benchmarks/results/<device>-<date>.json`` (with this check's stage report under
   ``"gpu_check"``) and the README performance section (``--no-readme`` leaves README.md alone).

A stage that overruns its budget is stopped (its process group killed) and reported as cut
short, with the command to rerun it alone; a failed build stops the check (the tests would only
report the missing kernels). Budgets: ``--budget-build`` / ``--budget-tests`` /
``--budget-bench`` (seconds). The exit status is 0 only when every stage that ran passed.
``--dry-run`` prints the plan (commands, environment, budgets) and runs nothing: it works on a
machine without a GPU, which is how CI tests this script.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
TOTAL_BUDGET_S = 480
DEFAULT_BUDGETS = {"build": 140, "tests": 160, "bench": 160}
BUILD_CHECK_S = 20
STAGES = ("build", "tests", "bench")


@dataclass
class Stage:
    name: str
    cmd: list
    budget_s: float
    env: dict = field(default_factory=dict)
    why: str = ""


@dataclass
class StageResult:
    name: str
    status: str  # "passed", "failed", "cut short", "skipped"
    seconds: float
    budget_s: float
    detail: str = ""

    def as_dict(self) -> dict:
        return {"status": self.status, "seconds": round(self.seconds, 1), "budget_s": self.budget_s,
                "detail": self.detail}


def arch_list(capability: tuple[int, int]) -> str:
    """``TORCH_CUDA_ARCH_LIST`` for one GPU: "9.0" for an H100/H200 (sm_90)."""
    major, minor = capability
    return f"{major}.{minor}"


def detect_gpu() -> dict | None:
    """Name and compute capability of GPU 0, or None without one (host-side queries only)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return {"name": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
            "torch": torch.__version__, "cuda": torch.version.cuda}


_BUILD_PROBE = (
    "from hotspot_erc import _ext; import sys; "
    "why = _ext.cuda_unavailable_reason(); ok = not why and _ext.has_kernel('relational_aggregate', 'CUDA'); "
    "print('compiled ops: CUDA kernels present' if ok else 'compiled ops: no CUDA kernels: ' + str(why)); "
    "sys.exit(0 if ok else 1)"
)


def plan(capability: tuple[int, int] | None, budgets: dict, stages=STAGES, readme: bool = True) -> list[Stage]:
    """The stages to run, in order (``capability`` None: no GPU, as in a dry run on CPU)."""
    py = sys.executable
    arch = arch_list(capability) if capability else "<present GPU's capability, e.g. 9.0>"
    env_gpu = {"TRITON_INTERPRET": None, "HOTSPOT_ERC_AUTOTUNE": None}  # None: removed from the environment
    out = []
    if "build" in stages:
        out.append(Stage("build", [py, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "-e", "."],
                         budgets["build"], {"TORCH_CUDA_ARCH_LIST": arch, "MAX_JOBS": str(os.cpu_count() or 4),
                                            "HOTSPOT_ERC_FORCE_CPU": None, **env_gpu},
                         "compile the C++/CUDA ops for this GPU only"))
        out.append(Stage("build-check", [py, "-c", _BUILD_PROBE], BUILD_CHECK_S, env_gpu, "the CUDA kernels are registered"))
    if "tests" in stages:
        out.append(Stage("tests", [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
                         budgets["tests"], env_gpu, "every GPU-marked test"))
    if "bench" in stages:
        cmd = [py, "-m", "benchmarks.run_all", "--budget", str(max(10, budgets["bench"] - 15))]
        if not readme:
            cmd.append("--no-readme")
        out.append(Stage("bench", cmd, budgets["bench"], env_gpu, "every benchmark, share of peak"))
    return out


def _environment(stage: Stage) -> dict:
    env = dict(os.environ)
    for k, v in stage.env.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run_stage(stage: Stage, log=print) -> StageResult:
    """Run one stage in its own process group; past its budget the whole group is killed and the
    stage reported as cut short (never an overrun)."""
    log(f"== {stage.name} (budget {stage.budget_s:.0f} s): {stage.why}", flush=True)
    started = time.time()
    proc = subprocess.Popen(stage.cmd, cwd=ROOT, env=_environment(stage), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=stage.budget_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        output, _ = proc.communicate()
        secs = time.time() - started
        detail = (f"cut short after {secs:.0f} s (budget {stage.budget_s:.0f} s); rerun alone with: "
                  f"{' '.join(stage.cmd)}")
        log(_tail(output), flush=True)
        log(f"   {stage.name}: {detail}", flush=True)
        return StageResult(stage.name, "cut short", secs, stage.budget_s, detail)
    secs = time.time() - started
    log(_tail(output), flush=True)
    status = "passed" if proc.returncode == 0 else "failed"
    detail = _summary(stage.name, output) or f"exit {proc.returncode}"
    log(f"   {stage.name}: {status} in {secs:.0f} s ({detail})", flush=True)
    return StageResult(stage.name, status, secs, stage.budget_s, detail)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


def _summary(name: str, output: str) -> str:
    """pytest's final counts line, or the last line of other stages' output."""
    lines = [ln.strip() for ln in (output or "").splitlines() if ln.strip()]
    if name == "tests":
        for ln in reversed(lines):
            if re.search(r"\d+ (passed|failed|error|skipped)", ln):
                return ln.strip("= ")
    return lines[-1][:200] if lines else ""


def _record(results: list[StageResult], gpu: dict | None) -> str | None:
    """Add the stage report to the benchmarks' merged JSON of today (or write its own file)."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    report = {"gpu": gpu, "date": _dt.datetime.now().isoformat(timespec="seconds"),
              "stages": {r.name: r.as_dict() for r in results}}
    slug = re.sub(r"[^A-Za-z0-9]+", "-", (gpu or {}).get("name", "no-gpu")).strip("-").lower()
    path = os.path.join(RESULTS_DIR, f"{slug}-{_dt.date.today().isoformat()}.json")
    merged = {}
    if os.path.exists(path):
        try:
            with open(path) as fh:
                merged = json.load(fh)
        except (OSError, ValueError):
            merged = {}
    merged["gpu_check"] = report
    with open(path, "w") as fh:
        json.dump(merged, fh, indent=1)
    return path


def main(argv=None, log=print) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing (works without a GPU)")
    p.add_argument("--stages", nargs="*", choices=STAGES, default=list(STAGES), help="stages to run, in order")
    p.add_argument("--skip-build", action="store_true", help="the package is already built for this GPU")
    p.add_argument("--no-readme", action="store_true", help="don't regenerate README.md's performance section")
    for s in STAGES:
        p.add_argument(f"--budget-{s}", type=float, default=DEFAULT_BUDGETS[s], help=f"seconds (default {DEFAULT_BUDGETS[s]})")
    args = p.parse_args(argv)
    budgets = {s: getattr(args, f"budget_{s}") for s in STAGES}
    stages = [s for s in args.stages if not (s == "build" and args.skip_build)]
    gpu = detect_gpu()
    steps = plan(tuple(gpu["capability"]) if gpu else None, budgets, stages, readme=not args.no_readme)
    total = sum(s.budget_s for s in steps)
    if args.dry_run:
        log(f"gpu-check plan ({'GPU: ' + gpu['name'] if gpu else 'no GPU here: dry run only'}), "
            f"{total:.0f} s of budgets (limit {TOTAL_BUDGET_S} s):")
        for s in steps:
            env = " ".join(f"{k}={v}" if v is not None else f"-u {k}" for k, v in s.env.items())
            log(f"  {s.name:12s} {s.budget_s:5.0f} s  [{env}] {' '.join(s.cmd)}")
        return 0 if total <= TOTAL_BUDGET_S else 2
    if gpu is None:
        log("gpu-check needs a CUDA GPU (torch.cuda.is_available() is False); use --dry-run to see the plan",
            file=sys.stderr)
        return 2
    if total > TOTAL_BUDGET_S:
        log(f"stage budgets add up to {total:.0f} s, over the check's {TOTAL_BUDGET_S} s", file=sys.stderr)
        return 2
    log(f"gpu-check on {gpu['name']} (sm_{gpu['capability'][0]}{gpu['capability'][1]}, torch {gpu['torch']}, "
        f"CUDA {gpu['cuda']})", flush=True)
    results: list[StageResult] = []
    for step in steps:
        r = run_stage(step, log)
        results.append(r)
        if step.name in ("build", "build-check") and r.status != "passed":
            log(f"build did not pass ({r.detail}): stopping; the tests would only report missing kernels",
                flush=True)
            break
    ran = {r.name for r in results}
    results += [StageResult(s.name, "skipped", 0.0, s.budget_s, "an earlier stage stopped the check")
                for s in steps if s.name not in ran]
    path = _record(results, gpu)
    log("gpu-check summary:")
    for r in results:
        log(f"  {r.name:12s} {r.status:9s} {r.seconds:6.0f} s / {r.budget_s:.0f} s  {r.detail}")
    log(f"stage report in {path}")
    return 0 if all(r.status == "passed" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
