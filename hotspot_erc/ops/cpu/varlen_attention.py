"""CPU backend of ``varlen_cross_attention``: segments grouped by length into padded batches
under a work budget and run through ATen's CPU flash-attention kernel (explicit matmul/softmax
where a torch build lacks it, or where the log-sum-exp has a gradient). CPU tensors only (the
grouping reads the offsets on the host)."""
from __future__ import annotations

import torch

# Padded score work (elements of count·H·Lq·Lk) of one group of segments.
SCORE_BUDGET = 1 << 20

# ATen's CPU flash-attention kernels (they return the log-sum-exp the backward needs). They are
# private ops: where a torch build lacks them, the explicit formulas below do the same work.
CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
CPU_FLASH_BWD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def length_groups(cu_q: torch.Tensor, cu_k: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """Segments with queries and keys, sorted by length and grouped so that each group's padded
    score work (count·H·Lq·Lk) stays under a budget: similar lengths keep padding waste small,
    and the explicit path's dense score tensor stays bounded."""
    lq = (cu_q[1:] - cu_q[:-1]).tolist()
    lk = (cu_k[1:] - cu_k[:-1]).tolist()
    order = sorted((s for s in range(len(lq)) if lq[s] > 0 and lk[s] > 0), key=lambda s: (lk[s], lq[s]))
    chunks, cur, mq, mk = [], [], 0, 0
    for s in order:
        nq, nk = max(mq, lq[s]), max(mk, lk[s])
        if cur and (len(cur) + 1) * heads * nq * nk > SCORE_BUDGET:
            chunks.append(cur)
            cur, nq, nk = [], lq[s], lk[s]
        cur.append(s)
        mq, mk = nq, nk
    if cur:
        chunks.append(cur)
    return [torch.tensor(c, dtype=torch.long) for c in chunks]


class Padding:
    """Where the tokens of a group of segments sit in a padded [c, L, ...] batch."""

    def __init__(self, cu: torch.Tensor, segs: torch.Tensor):
        starts = cu[segs].long()
        self.lens = cu[segs + 1].long() - starts
        self.count, self.length = segs.numel(), int(self.lens.max())
        pos = torch.arange(self.length)
        self.valid = pos[None, :] < self.lens[:, None]
        self.slot = self.valid.flatten().nonzero().squeeze(1)  # flat padded position of each token
        self.tok = (starts[:, None] + pos[None, :])[self.valid]  # packed index of each token

    def pad(self, x: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        padded = x.new_full((self.count * self.length,) + tuple(x.shape[1:]), fill)
        padded.index_copy_(0, self.slot, x.index_select(0, self.tok))
        return padded.view((self.count, self.length) + tuple(x.shape[1:]))

    def unpad_into(self, dst: torch.Tensor, padded: torch.Tensor) -> None:
        rows = padded.reshape((self.count * self.length,) + tuple(dst.shape[1:])).index_select(0, self.slot)
        dst.index_copy_(0, self.tok, rows.to(dst.dtype))


def lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def key_mask(pk: Padding, dtype: torch.dtype) -> torch.Tensor:
    """Additive [c, 1, 1, Lk] mask: -inf on padded keys."""
    return torch.zeros(pk.valid.shape, dtype=dtype).masked_fill(~pk.valid, float("-inf"))[:, None, None, :]


def heads_first(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)  # [c, L, H, D] -> [c, H, L, D]


def forward(q, k, v, cu_q, cu_k, scale):
    out = torch.zeros(q.shape, dtype=q.dtype)
    lse = torch.full(q.shape[:2], float("-inf"), dtype=lse_dtype(q.dtype))
    for segs in length_groups(cu_q, cu_k, q.shape[1]):
        pq, pk = Padding(cu_q, segs), Padding(cu_k, segs)
        qp, kp, vp = heads_first(pq.pad(q)), heads_first(pk.pad(k)), heads_first(pk.pad(v))
        if CPU_FLASH is not None:
            o, l = CPU_FLASH(qp, kp, vp, attn_mask=key_mask(pk, q.dtype), scale=scale)
        else:
            ct = lse_dtype(q.dtype)
            scores = torch.matmul(qp.to(ct), kp.to(ct).transpose(-1, -2)) * scale + key_mask(pk, ct)
            l = torch.logsumexp(scores, dim=-1)  # finite: every grouped segment has keys
            o = torch.matmul(torch.exp(scores - l[..., None]), vp.to(ct))
        pq.unpad_into(out, heads_first(o))
        pq.unpad_into(lse, l.transpose(1, 2))
    return out, lse


def backward(do, q, k, v, out, lse, grad_lse, cu_q, cu_k, scale):
    dq, dk, dv = (torch.zeros(t.shape, dtype=t.dtype) for t in (q, k, v))
    # ATen's kernel has no log-sum-exp gradient input: use it only when that gradient is zero.
    if grad_lse is not None and not bool(grad_lse.any()):
        grad_lse = None
    use_flash = CPU_FLASH_BWD is not None and grad_lse is None
    ct = lse_dtype(q.dtype)
    for segs in length_groups(cu_q, cu_k, q.shape[1]):
        pq, pk = Padding(cu_q, segs), Padding(cu_k, segs)
        qp, dop, op_ = (heads_first(pq.pad(t)) for t in (q, do, out))
        kp, vp = heads_first(pk.pad(k)), heads_first(pk.pad(v))
        # +inf on padded query rows makes their probabilities exactly 0.
        lsep = pq.pad(lse, fill=float("inf")).transpose(1, 2)
        mask = key_mask(pk, q.dtype if use_flash else ct)
        if use_flash:
            dqp, dkp, dvp = CPU_FLASH_BWD(dop, qp, kp, vp, op_, lsep, 0.0, False, attn_mask=mask, scale=scale)
        else:
            qc, kc, vc, doc = qp.to(ct), kp.to(ct), vp.to(ct), dop.to(ct)
            delta = (doc * op_.to(ct)).sum(-1)
            if grad_lse is not None:
                delta = delta - pq.pad(grad_lse.to(ct)).transpose(1, 2)
            probs = torch.exp(torch.matmul(qc, kc.transpose(-1, -2)) * scale + mask - lsep[..., None])
            dvp = torch.matmul(probs.transpose(-1, -2), doc)
            ds = probs * (torch.matmul(doc, vc.transpose(-1, -2)) - delta[..., None])
            dqp = torch.matmul(ds, kc) * scale
            dkp = torch.matmul(ds.transpose(-1, -2), qc) * scale
        pq.unpad_into(dq, heads_first(dqp))
        pk.unpad_into(dk, heads_first(dkp))
        pk.unpad_into(dv, heads_first(dvp))
    return dq, dk, dv
