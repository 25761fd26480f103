"""Test setup: Triton runs through its interpreter when there is no GPU; every draw is seeded.

TRITON_INTERPRET is read when a @triton.jit function is defined, so it is set here, before any
kernel module is imported (op modules import their kernels lazily).

Seeds: every test starts with torch, NumPy and ``random`` seeded from ``HOTSPOT_ERC_TEST_SEED``
(default 0), and every generator a test makes itself takes its seed through :func:`seed_for`, so
``HOTSPOT_ERC_TEST_SEED=N`` reruns the whole suite with other draws and a failure replays with
the same N.
"""
import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

BASE_SEED = int(os.environ.get("HOTSPOT_ERC_TEST_SEED", "0") or 0)


def seed_for(offset: int = 0) -> int:
    """The seed a test uses for its draw number ``offset``: ``offset`` itself under the default
    base seed 0, other values under another HOTSPOT_ERC_TEST_SEED."""
    return int(offset) + 1_000_003 * BASE_SEED


def pytest_report_header(config):
    return f"HOTSPOT_ERC_TEST_SEED={BASE_SEED} (rerun with the same value to replay a failure)"


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request):
    """Every test that takes `device` runs on CPU and, where present, CUDA."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    import numpy as np

    torch.manual_seed(seed_for(0))
    np.random.seed(seed_for(0) % 2 ** 32)
    random.seed(seed_for(0))
    yield


def run_offline_compile(script: str, timeout: float = 600):
    """Run ``script`` (Python source that compiles Triton kernels for a GPU target ahead of time)
    in a fresh interpreter without TRITON_INTERPRET, so the real GPU compiler sees the kernels
    even on a machine without a GPU. Returns the CompletedProcess."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, not interpret
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=timeout)


# The head of an offline-compile script for kernels whose pointer arguments are named in ``ptrs``:
# ``build(fn, ptrs, consts, warps, stages)`` compiles one kernel for sm_90; every other parameter
# that is not a constexpr is an i32 scalar.
OFFLINE_SM90_BUILD = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

def build(fn, ptrs, consts, warps, stages):
    sig = {p.name: ("constexpr" if p.is_constexpr else ptrs.get(p.name, "i32")) for p in fn.params}
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 64),
                   options={"num_warps": warps, "num_stages": stages})
"""


def assert_compiles_offline(script: str, timeout: float = 300):
    """Run an offline-compile ``script`` (:func:`run_offline_compile`) and require it to succeed
    and print "compiled". Skipped where a GPU is present (the GPU tests compile and run the
    kernels for the real device) or Triton is missing."""
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("the GPU tests compile and run the kernels for the real device")
    pytest.importorskip("triton")
    out = run_offline_compile(script, timeout=timeout)
    assert out.returncode == 0 and "compiled" in out.stdout, out.stderr[-3000:]


def previous_same_speaker_label(corpus):
    """Per utterance of ``corpus``, the label of the same speaker's previous utterance in its
    dialogue (-1 for a speaker's first utterance)."""
    import numpy as np

    prev = np.full(corpus.num_utterances, -1)
    for d in range(corpus.num_dialogues):
        lo, hi = corpus.dialogue_utterances(d)
        last = {}
        for u in range(lo, hi):
            s = int(corpus.speaker[u])
            if s in last:
                prev[u] = corpus.label[last[s]]
            last[s] = u
    return prev

