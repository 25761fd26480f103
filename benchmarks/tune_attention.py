"""Regenerate the launch-config table of the attention kernels (``kernels/tile_configs.py``).

Two ways, both writing the entries of one arch family (the others are kept):

* ``python -m benchmarks.tune_attention --offline --arch 90`` (no GPU needed): every candidate
  config of every key is compiled for ``sm_<arch>`` with Triton's bundled ptxas; the first one
  in a fixed order of preference (larger free tile, then more pipeline stages) that neither
  spills registers (``ptxas -v``) nor overflows the arch's shared memory is kept. This is how the
  checked-in table was made; it picks *safe* configs, not measured-fastest ones.
* ``python -m benchmarks.tune_attention`` on a GPU: every candidate is timed with
  ``triton.testing.do_bench`` on a conversation-shaped batch (40 segments of 20-300 frames, 4
  heads) at each key's table tile, and the fastest is kept for the present GPU's arch family.

``--dry-run`` prints the table instead of rewriting the file; ``--check`` exits 1 listing every
entry that differs from the generator's (offline: deterministic for one Triton version, which the
file records as ``GENERATED_WITH``); ``--only a,b`` restricts either to entries whose name contains
one of the texts (``--only /fp32/``). The "default" family (GPUs that
are neither sm_90 nor sm_80-89) takes the sm_80 entries when ``--arch 80`` is generated.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HEAD_TILES = (16, 32, 64, 128)
# Shared memory per block (bytes) that a config must fit: H100/H200 227 KB; the sm_80 family
# includes sm_86/89 (99 KB), so its entries must fit the smaller.
SHARED_LIMIT = {90: 227 * 1024, 80: 99 * 1024}
TABLE_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels", "tile_configs.py")


def keys():
    """(kernel, dtype class, head tile, table tile) for every launch the launchers can make
    (table tiles as ``kernels.varlen_attention._table_tile`` picks them: 32, 64 and the largest,
    which is smaller for float32 IEEE dots)."""
    for dclass in ("half", "tf32", "fp32"):
        fma = dclass == "fp32"
        for d in HEAD_TILES:
            for t in ((32, 64) if fma else (32, 64, 128)):
                yield "fwd", dclass, d, t
            for t in (32, 64):
                yield "dq", dclass, d, t
            for t in ((32,) if fma else (32, 64)):
                yield "dkdv", dclass, d, t


def candidates(table_tile: int, head_tile: int):
    """(free tile, warps, stages) in order of preference."""
    w0 = 8 if table_tile >= 128 or (table_tile >= 64 and head_tile >= 128) else 4
    w1 = 12 - w0
    return [(64, w0, 3), (64, w0, 2), (64, w1, 2), (32, w0, 3), (32, w0, 2), (32, w1, 2),
            (32, w1, 1), (16, 4, 1)]


def _constexprs(kernel, dclass, head_tile, table_tile, free):
    common = dict(BLOCK_D=head_tile, DOT_F32=dclass != "half", PRECISION="ieee" if dclass == "fp32" else "tf32")
    if kernel == "fwd":
        return dict(BLOCK_M=table_tile, BLOCK_N=free, **common)
    if kernel == "dq":
        return dict(BLOCK_M=table_tile, BLOCK_N=free, HAS_DLSE=True, **common)
    return dict(BLOCK_N=table_tile, BLOCK_M=free, **common)


def _offline_ok(K, kernel, dclass, head_tile, table_tile, cand, arch) -> bool:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = {"fwd": K._fwd_kernel, "dq": K._bwd_dq_kernel, "dkdv": K._bwd_dkdv_kernel}[kernel]
    sig = K.offline_signature(fn, "bf16" if dclass == "half" else "fp32")
    free, warps, stages = cand
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import OutOfResources, PTXASError

    try:
        k = triton.compile(ASTSource(fn=fn, signature=sig,
                                     constexprs=_constexprs(kernel, dclass, head_tile, table_tile, free)),
                           target=GPUTarget("cuda", arch, 128 if arch >= 90 else 64),
                           options={"num_warps": warps, "num_stages": stages})
    except (CompilationError, OutOfResources, PTXASError):
        # The config itself does not fit. Anything else (a killed subprocess, no memory) is
        # raised: swallowing it would make the table depend on the machine's load.
        return False
    if k.metadata.shared > SHARED_LIMIT[arch]:
        return False
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(k.asm["ptx"])
    try:
        out = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}{'a' if arch >= 90 else ''}", f.name,
                              "-o", os.devnull], capture_output=True, text=True, timeout=300)
    finally:
        os.unlink(f.name)
    m = re.search(r"(\d+) bytes spill stores", out.stderr)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"ptxas gave no spill report for {kernel}/{dclass}/d{head_tile}/t{table_tile} "
                           f"{cand}: {out.stderr.strip()[-500:]}")
    return int(m.group(1)) == 0


def _timed_best(K, kernel, dclass, head_tile, table_tile, cands):
    """Fastest candidate on the present GPU (None if none runs)."""
    import torch
    import triton.testing

    dtype = torch.bfloat16 if dclass == "half" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = dclass == "tf32"
    gen = torch.Generator().manual_seed(0)
    lens = torch.randint(20, 300, (40,), generator=gen)
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)]).to(torch.int32).cuda()
    n, heads = int(lens.sum()), 4
    q, k, v, do, out = (torch.randn(n, heads, head_tile, device="cuda", dtype=dtype) for _ in range(5))
    lse = torch.randn(n, heads, device="cuda")
    delta = torch.randn(n, heads, device="cuda")
    tbl = K.block_table(cu, table_tile, n)
    dot_f32, prec = dclass != "half", "ieee" if dclass == "fp32" else "tf32"
    best, best_ms = None, float("inf")
    for free, warps, stages in cands:
        c = _constexprs(kernel, dclass, head_tile, table_tile, free)
        c.pop("DOT_F32"), c.pop("PRECISION"), c.pop("BLOCK_D")
        grid = (tbl.shape[1], heads)
        strides = (q.stride(0), q.stride(1))
        if kernel == "fwd":
            def run():
                K._fwd_kernel[grid](q, k, v, out, lse, cu, cu, tbl, tbl.shape[1], *strides, *strides, *strides,
                                    *strides, lse.stride(0), lse.stride(1), head_tile, 0.125,
                                    BLOCK_D=head_tile, DOT_F32=dot_f32, PRECISION=prec,
                                    num_warps=warps, num_stages=stages, **c)
        elif kernel == "dq":
            def run():
                K._bwd_dq_kernel[grid](q, k, v, out, do, lse, delta, delta, out, cu, cu, tbl, tbl.shape[1],
                                       *strides, *strides, *strides, *strides, *strides, lse.stride(0),
                                       lse.stride(1), *strides, head_tile, 0.125, 0.18,
                                       BLOCK_D=head_tile, DOT_F32=dot_f32, PRECISION=prec,
                                       num_warps=warps, num_stages=stages, **c)
        else:
            def run():
                K._bwd_dkdv_kernel[grid](q, k, v, do, lse, delta, out, out, cu, cu, tbl, tbl.shape[1],
                                         *strides, *strides, *strides, *strides, lse.stride(0), lse.stride(1),
                                         *strides, *strides, head_tile, 0.125, 0.18,
                                         BLOCK_D=head_tile, DOT_F32=dot_f32, PRECISION=prec,
                                         num_warps=warps, num_stages=stages, **c)
        try:
            ms = triton.testing.do_bench(run, warmup=5, rep=20, return_mode="median")
        except Exception:  # out of resources on this GPU
            continue
        if ms < best_ms:
            best, best_ms = (free, warps, stages), ms
    return best


def generate(arch: int | None, offline: bool, log=print, only=None) -> tuple[str, dict]:
    """(arch family, entries). ``only``: a predicate on "kernel/dtype class/d<head>/t<table>"
    names restricting which entries are made (checks and partial regeneration)."""
    os.environ.pop("TRITON_INTERPRET", None)  # compile for the GPU, not the interpreter
    import hotspot_erc.kernels.varlen_attention as K

    if not offline:
        import torch

        major, minor = torch.cuda.get_device_capability()
        arch = major * 10 + minor
    family = {9: "sm90", 8: "sm80"}.get(arch // 10, "default")
    entries = {}
    for kernel, dclass, d, t in keys():
        if only is not None and not only(f"{kernel}/{dclass}/d{d}/t{t}"):
            continue
        cands = candidates(t, d)
        if offline:
            pick = next((c for c in cands if _offline_ok(K, kernel, dclass, d, t, c, arch)), cands[-1])
        else:
            pick = _timed_best(K, kernel, dclass, d, t, cands) or cands[-1]
        name = f"{kernel}/{dclass}/d{d}/t{t}"
        entries[name] = {"tile": pick[0], "num_warps": pick[1], "num_stages": pick[2]}
        log(f"{family} {name}: {entries[name]}")
    return family, entries


def generator_version() -> str:
    """The compiler the offline entries depend on (ptxas ships with Triton)."""
    import triton

    return f"triton {triton.__version__}"


def format_table(table: dict, made_with: str) -> str:
    """The table as Python source, one entry per line."""
    lines = [f"GENERATED_WITH = {made_with!r}", "TABLE: dict = {"]
    for op in sorted(table):
        lines.append(f"    {op!r}: {{")
        for family in sorted(table[op]):
            lines.append(f"        {family!r}: {{")
            for name, e in sorted(table[op][family].items()):
                lines.append(f"            {name!r}: {{'tile': {e['tile']}, 'num_warps': {e['num_warps']}, "
                             f"'num_stages': {e['num_stages']}}},")
            lines.append("        },")
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def read_table(path: str = TABLE_FILE) -> dict:
    """The checked-in table, read from the file's text (not imported)."""
    with open(path) as f:
        text = f.read()
    begin = text.index("# BEGIN GENERATED TABLE")
    scope: dict = {}
    exec(text[text.index("\n", begin) + 1:text.index("# END GENERATED TABLE")], scope)
    return scope["TABLE"]


def check(family: str, entries: dict, path: str = TABLE_FILE) -> list[str]:
    """Entries whose checked-in value differs from ``entries`` (empty: the table is what the
    generator makes)."""
    have = read_table(path).get("varlen_attention", {}).get(family, {})
    return [f"{family} {name}: table {have.get(name)}, generator {e}" for name, e in sorted(entries.items())
            if have.get(name) != e]


def write_table(family: str, entries: dict, path: str = TABLE_FILE, also_default: bool = False,
                partial: bool = False) -> None:
    """Replace ``family``'s entries (and "default"'s, when asked) between the file's markers; with
    ``partial``, only the entries given (the others are kept)."""
    with open(path) as f:
        text = f.read()
    begin = text.index("# BEGIN GENERATED TABLE")
    end = text.index("# END GENERATED TABLE")
    table = read_table(path)
    op = table.setdefault("varlen_attention", {})
    for fam in [family] + (["default"] if also_default else []):
        op[fam] = dict(sorted({**(op.get(fam, {}) if partial else {}), **entries}.items()))
    body = format_table(table, generator_version())
    with open(path, "w") as f:
        f.write(text[:text.index("\n", begin) + 1] + body + text[end:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="pick by ptxas spill reports, no GPU")
    parser.add_argument("--arch", type=int, choices=sorted(SHARED_LIMIT), default=90,
                        help="compute capability for --offline (90: H100/H200, 80: A100 family)")
    parser.add_argument("--dry-run", action="store_true", help="print the entries, leave the file")
    parser.add_argument("--only", default=None,
                        help="regenerate only the entries whose name contains one of these comma-separated "
                             "texts (e.g. '/fp32/')")
    parser.add_argument("--check", action="store_true",
                        help="leave the file; exit 1 listing every entry that differs from the generator's")
    args = parser.parse_args(argv)
    only = (lambda name: any(p in name for p in args.only.split(","))) if args.only else None
    family, entries = generate(args.arch, args.offline, only=only)
    if args.check:
        diff = check(family, entries)
        print("\n".join(diff) or f"{len(entries)} {family} entries match the generator")
        return 1 if diff else 0
    if args.dry_run:
        print(json.dumps(entries, indent=1))
    else:
        write_table(family, entries, also_default=family == "sm80", partial=only is not None)
        print(f"wrote {len(entries)} {family} entries to {TABLE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
