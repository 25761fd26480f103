"""Kept for imports written before 0.x: the segment helpers live in :mod:`hotspot_erc.segments`."""
from hotspot_erc.segments import (Segments, _SegmentSum, cu_seqlens_from_lengths, gather_rows,  # noqa: F401
                                  segment_broadcast, segment_ids, segment_lengths, segment_mean, segment_sum)
