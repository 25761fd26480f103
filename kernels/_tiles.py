"""The tile-map scan shared by the kernels that cut packed segments into row tiles.

Both the grouped projection's plan (:mod:`.grouped_linear`) and the attention's block tables
(:mod:`.varlen_attention`) map a program (tile id) to the segment it works on without a host
sync: tiles never cross segment boundaries, so tile p belongs to the segment whose running tile
count first exceeds p. One program resolves ``BLOCK_P`` tile ids by scanning all segments'
tile counts ``BLOCK_S`` at a time (a running cumsum); nothing depends on a sorted search, so
it is a fixed amount of work per program and deterministic.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def segment_tiles(cu_ptr, num_segments, block, tile_ids, ends_ptr, write_ends,
                  BLOCK_S: tl.constexpr, WRITE_ENDS: tl.constexpr):
    """For int64 ``tile_ids`` [BLOCK_P] (cut into tiles of ``block`` rows): (segment of each
    id, its tile index inside that segment, the total tile count). Ids at or past the total get
    segment ``num_segments`` and are the caller's to mask. With ``WRITE_ENDS``, the running end
    of every segment's tiles (``ends_ptr[s] = first tile of segment s + 1``) is stored where the
    runtime flag ``write_ends`` holds (one program should)."""
    seg = tl.zeros_like(tile_ids)
    first = tl.zeros_like(tile_ids)
    total = tl.zeros([1], dtype=tl.int64)
    for s0 in range(0, num_segments, BLOCK_S):
        offs = s0 + tl.arange(0, BLOCK_S)
        m = offs < num_segments
        lo = tl.load(cu_ptr + offs, mask=m, other=0).to(tl.int64)
        hi = tl.load(cu_ptr + offs + 1, mask=m, other=0).to(tl.int64)
        n_tiles = tl.where(m, (hi - lo + block - 1) // block, 0)
        ends = tl.cumsum(n_tiles, 0)[None, :] + total[:, None]  # [1, BLOCK_S]
        if WRITE_ENDS:
            tl.store(ends_ptr + offs[None, :], ends, mask=m[None, :] & write_ends)
        done = (ends <= tile_ids[:, None]) & m[None, :]
        seg += tl.sum(done.to(tl.int64), 1)
        first = tl.maximum(first, tl.max(tl.where(done, ends, 0), 1))
        total += tl.sum(n_tiles, 0)
    return seg, tile_ids - first, tl.max(total, 0)
