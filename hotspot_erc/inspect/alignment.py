"""``#alignment``: where do MoA's hotspot queries put their attention in the other modality?

Per ordered pair (source → target), over every query (a target peak whose utterance has source
frames): the attention mass on the source's hotspot windows against the share of its frames they
are (what uniform attention would put there). Where the corpus has a truth file, over the queries
that sit on the target's evidence burst: the mass on the source's matching (evidence) burst and on
its decoy / distractor bursts, each against its uniform share. Lift = mass / uniform share: 1 is
attention blind to content.
"""
from __future__ import annotations

import numpy as np

from hotspot_erc.data.synthetic_common import ROLE_DECOY, ROLE_EVIDENCE


def frame_starts(lengths: np.ndarray) -> np.ndarray:
    """First frame (in the split's packed frames of a modality) of every utterance."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else np.zeros(0, np.int64)


def _summary(mass: list[float], uniform: list[float]) -> dict:
    if not mass:
        return {"mass": None, "uniform": None, "lift": None, "queries": 0}
    m, u = float(np.mean(mass)), float(np.mean(uniform))
    return {"mass": m, "uniform": u, "lift": m / u if u > 0 else None, "queries": len(mass)}


def pair_alignment(rec, src_frames, tgt_frames, src_starts, tgt_starts, src_lengths,
                   src_roles=None, tgt_roles=None) -> dict:
    """The numbers of one pair from its :class:`~hotspot_erc.inspect.collect.AttentionRecord`."""
    win_mass, win_uniform = [], []
    truth = {"matched": ([], []), "distractors": ([], [])}
    for i in range(len(rec.utterance)):
        u = int(rec.utterance[i])
        p = rec.row(i).astype(np.float64)
        lo, n = int(src_starts[u]), int(src_lengths[u])
        win = src_frames.window[lo:lo + n]
        win_mass.append(float(p[win].sum()))
        win_uniform.append(float(win.mean()))
        if src_roles is None or tgt_roles is None:
            continue
        if tgt_roles[int(tgt_starts[u]) + int(rec.query[i])] != ROLE_EVIDENCE:
            continue
        roles = src_roles[lo:lo + n]
        for name, role in (("matched", ROLE_EVIDENCE), ("distractors", ROLE_DECOY)):
            sel = roles == role
            if sel.any():
                truth[name][0].append(float(p[sel].sum()))
                truth[name][1].append(float(sel.mean()))
    res = {"windows": _summary(win_mass, win_uniform)}
    if src_roles is not None and tgt_roles is not None:
        res["truth"] = {k: _summary(*v) for k, v in truth.items()}
    return res


def alignment_section(col, truth_roles: dict | None) -> dict:
    if not col.attention:
        why = ("MoA is off in this run (one modality, or --no-moa)" if not col.routing else
               "MoA attends to hotspot-window slots only (--moa-keys hotspots), not to frames")
        return {"pairs": {}, "note": f"{why}: there is no frame-level attention to inspect."}
    starts = {m: frame_starts(col.lengths[m]) for m in col.modalities}
    roles = None
    if truth_roles is not None:
        roles = {m: truth_roles[m][f.corpus_frame] for m, f in col.frames.items() if m in truth_roles}
    pairs = {}
    for pair in sorted(col.attention):
        src, tgt = pair.split("->")
        pairs[pair] = pair_alignment(col.attention[pair], col.frames[src], col.frames[tgt], starts[src],
                                     starts[tgt], col.lengths[src],
                                     None if roles is None else roles.get(src),
                                     None if roles is None else roles.get(tgt))
    return {"pairs": pairs, "note": None, "truth": roles is not None}
