"""Hostile and careless input to the ops and modules.

One table row per case: a call on bad input -> the exception type and a fragment of the message
that names the argument and what was expected. Then the inputs that are not errors but used to
go wrong: empty tensors, zero heads, strided views (same result as contiguous copies), NaN/inf
that must stay where the definition puts it.
"""
import pytest
import torch

from hotspot_erc.hotspots import extract_hotspots
from hotspot_erc.nn.moa import MixtureOfAligners
from hotspot_erc.nn.rgcn import RGCNConv
from hotspot_erc.ops._backend import BackendUnavailable
from hotspot_erc.ops.grouped_linear import grouped_expert_linear
from hotspot_erc.ops.hotspot_gate import hotspot_gate
from hotspot_erc.ops.relational import (RelationalGraph, relational_aggregate, relational_matmul,
                                        relational_message_sum)
from hotspot_erc.ops.varlen_attention import _fwd_op, varlen_cross_attention
from hotspot_erc.reference.grouped_linear import grouped_expert_linear_reference
from hotspot_erc.reference.varlen_attention import varlen_cross_attention_reference
from tolerance import assert_close, magnitude

T = torch.tensor
META = torch.device("meta")


# ----------------------------------------------------------------------------- inputs

def attn(**over):
    a = dict(q=torch.randn(5, 2, 4), k=torch.randn(6, 2, 4), v=torch.randn(6, 2, 4),
             cu_seqlens_q=T([0, 2, 5]), cu_seqlens_k=T([0, 4, 6]))
    a.update(over)
    return a


def grouped(**over):
    a = dict(x=torch.randn(5, 4), cu_seqlens=T([0, 2, 5]), experts=T([[0, 1], [2, 0]]),
             gates=torch.rand(2, 2), weight=torch.randn(3, 4, 6), bias=torch.randn(3, 6))
    a.update(over)
    return a


# grouped()'s output: 2 slots of a dot over d_in = 4 plus the bias
GROUPED_K = 2 * (4 + 1)


def grouped_magnitude(a):
    """Σ|terms| of grouped()'s output: the reference on the magnitudes of its inputs."""
    return magnitude(grouped_expert_linear_reference, a["x"], a["cu_seqlens"], a["experts"], a["gates"],
                     a["weight"], a["bias"])


def gate(**over):
    a = dict(c=torch.randn(3, 4), h=torch.randn(3, 4), weight=torch.randn(8, 4), bias=torch.randn(4))
    a.update(over)
    return a


EI, ET = T([[0, 1, 2], [1, 2, 0]]), T([0, 1, 0])


def graph():
    return RelationalGraph(EI, ET, 3, 2)


def moa_inputs(**cu_over):
    feats = {"t": torch.randn(5, 8), "a": torch.randn(4, 8)}
    cu = {"t": T([0, 2, 5]), "a": T([0, 1, 4])}
    cu.update(cu_over)
    return feats, cu


MOA = MixtureOfAligners(8, modalities="ta", num_heads=2)
CONV = RGCNConv(5, 3, 2)


# ----------------------------------------------------------------------------- the table

CASES = [
    # varlen_cross_attention
    ("attn q not a tensor", lambda: varlen_cross_attention(**attn(q=[[1.0]])), TypeError, "q must be a torch.Tensor"),
    ("attn q int", lambda: varlen_cross_attention(**attn(q=torch.zeros(5, 2, 4, dtype=torch.int64))),
     TypeError, "q must have dtype in (float32"),
    ("attn k dtype", lambda: varlen_cross_attention(**attn(k=torch.randn(6, 2, 4).double())), TypeError,
     "k must have dtype in (float32)"),
    ("attn q 2-D", lambda: varlen_cross_attention(**attn(q=torch.randn(5, 8))), ValueError, "q must have 3 dimensions"),
    ("attn k heads", lambda: varlen_cross_attention(**attn(k=torch.randn(6, 3, 4))), ValueError,
     "k must be [Nk, H, Dh] with q's H and Dh (2, 4)"),
    ("attn v shape", lambda: varlen_cross_attention(**attn(v=torch.randn(5, 2, 4))), ValueError, "v must have k's shape"),
    ("attn k device", lambda: varlen_cross_attention(**attn(k=torch.randn(6, 2, 4, device=META))), ValueError,
     "k must be on cpu"),
    ("attn cu device", lambda: varlen_cross_attention(**attn(cu_seqlens_k=T([0, 4, 6], device=META))), ValueError,
     "cu_seqlens_k must be on cpu"),
    ("attn cu float", lambda: varlen_cross_attention(**attn(cu_seqlens_q=T([0.0, 2, 5]))), TypeError,
     "cu_seqlens_q must have dtype in (int32, int64)"),
    ("attn cu 2-D", lambda: varlen_cross_attention(**attn(cu_seqlens_q=T([[0, 2, 5]]))), ValueError,
     "cu_seqlens_q must have 1 dimensions"),
    ("attn cu empty", lambda: varlen_cross_attention(**attn(cu_seqlens_q=T([], dtype=torch.int64))), ValueError,
     "cu_seqlens_q must have at least one element"),
    ("attn cu start", lambda: varlen_cross_attention(**attn(cu_seqlens_q=T([1, 2, 5]))), ValueError,
     "cu_seqlens_q must start at 0, got 1"),
    ("attn cu decreasing", lambda: varlen_cross_attention(**attn(cu_seqlens_k=T([0, 7, 6]))), ValueError,
     "cu_seqlens_k must be non-decreasing"),
    ("attn cu negative", lambda: varlen_cross_attention(**attn(cu_seqlens_k=T([0, -2, 6]))), ValueError,
     "cu_seqlens_k must be non-decreasing"),
    ("attn cu past end", lambda: varlen_cross_attention(**attn(cu_seqlens_q=T([0, 2, 9]))), ValueError,
     "cu_seqlens_q must end at the token count 5, got 9"),
    ("attn cu huge", lambda: varlen_cross_attention(**attn(cu_seqlens_q=T([0, 2, 2**62]))), ValueError,
     "cu_seqlens_q must end at the token count 5"),
    ("attn segments", lambda: varlen_cross_attention(**attn(cu_seqlens_k=T([0, 6]))), ValueError,
     "cu_seqlens_q and cu_seqlens_k must describe the same number of segments, got 2 and 1"),
    ("attn scale nan", lambda: varlen_cross_attention(**attn(), scale=float("nan")), ValueError,
     "scale must be a finite number or None"),
    ("attn scale inf", lambda: varlen_cross_attention(**attn(), scale=float("inf")), ValueError,
     "scale must be a finite number or None"),
    ("attn scale tensor", lambda: varlen_cross_attention(**attn(), scale=T(0.5)), ValueError,
     "scale must be a finite number or None"),
    ("attn backend name", lambda: varlen_cross_attention(**attn(), backend="cudnn"), ValueError,
     "backend must be one of"),
    ("attn backend cuda", lambda: varlen_cross_attention(**attn(), backend="cuda"), BackendUnavailable,
     "no 'cuda' backend"),
    ("attn triton float64", lambda: varlen_cross_attention(
        **{k: (v.double() if v.is_floating_point() else v) for k, v in attn().items()}, backend="triton"),
     TypeError, "float32, float16 or bfloat16"),
    ("attn triton head dim", lambda: varlen_cross_attention(
        **attn(q=torch.randn(5, 1, 130), k=torch.randn(6, 1, 130), v=torch.randn(6, 1, 130)), backend="triton"),
     ValueError, "head dims up to 128, got 130"),

    # grouped_expert_linear
    ("grouped x int", lambda: grouped_expert_linear(**grouped(x=torch.ones(5, 4, dtype=torch.int32))), TypeError,
     "x must have dtype in (float32"),
    ("grouped weight dtype", lambda: grouped_expert_linear(**grouped(weight=torch.randn(3, 4, 6).double())),
     TypeError, "weight must have dtype in (float32)"),
    ("grouped weight d_in", lambda: grouped_expert_linear(**grouped(weight=torch.randn(3, 5, 6))), ValueError,
     "weight must have shape [E, d_in=4, d_out] to match x"),
    ("grouped no experts", lambda: grouped_expert_linear(**grouped(weight=torch.randn(0, 4, 6), bias=None)),
     ValueError, "weight must hold at least one expert"),
    ("grouped bias shape", lambda: grouped_expert_linear(**grouped(bias=torch.randn(3, 5))), ValueError,
     "bias must have shape [E, d_out] = [3, 6]"),
    ("grouped experts float", lambda: grouped_expert_linear(**grouped(experts=T([[0.0, 1], [2, 0]]))), TypeError,
     "experts must have dtype in (int32, int64)"),
    ("grouped experts >= E", lambda: grouped_expert_linear(**grouped(experts=T([[0, 3], [2, 0]]))), ValueError,
     "experts must hold ids in [0, 3) (E = weight.shape[0]), got values in [0, 3]"),
    ("grouped experts negative", lambda: grouped_expert_linear(**grouped(experts=T([[0, -1], [2, 0]]))), ValueError,
     "experts must hold ids in [0, 3)"),
    ("grouped experts huge", lambda: grouped_expert_linear(**grouped(experts=T([[0, 2**62], [2, 0]]))), ValueError,
     "experts must hold ids in [0, 3)"),
    ("grouped experts device", lambda: grouped_expert_linear(**grouped(experts=T([[0, 1], [2, 0]], device=META))),
     ValueError, "experts must be on cpu"),
    ("grouped gates shape", lambda: grouped_expert_linear(**grouped(gates=torch.rand(2, 3))), ValueError,
     "gates must have the shape of experts (2, 2)"),
    ("grouped gates int", lambda: grouped_expert_linear(**grouped(gates=T([[1, 0], [0, 1]]))), TypeError,
     "gates must have dtype in (float32"),
    ("grouped no slots", lambda: grouped_expert_linear(**grouped(experts=T([[], []], dtype=torch.int64),
                                                                 gates=torch.rand(2, 0))),
     ValueError, "experts must have at least one slot per segment"),
    ("grouped cu rows", lambda: grouped_expert_linear(**grouped(cu_seqlens=T([0, 5]))), ValueError,
     "cu_seqlens has 1 segments but experts has 2 rows"),
    ("grouped cu start", lambda: grouped_expert_linear(**grouped(cu_seqlens=T([2, 2, 5]))), ValueError,
     "cu_seqlens must start at 0"),
    ("grouped cu decreasing", lambda: grouped_expert_linear(**grouped(cu_seqlens=T([0, 6, 5]))), ValueError,
     "cu_seqlens must be non-decreasing"),
    ("grouped cu end", lambda: grouped_expert_linear(**grouped(cu_seqlens=T([0, 2, 4]))), ValueError,
     "cu_seqlens must end at the token count 5, got 4"),
    ("grouped cu float", lambda: grouped_expert_linear(**grouped(cu_seqlens=T([0.0, 2, 5]))), TypeError,
     "cu_seqlens must have dtype in (int32, int64)"),
    ("grouped triton float64", lambda: grouped_expert_linear(
        **{k: v.double() if v.is_floating_point() else v for k, v in grouped().items()}, backend="triton"),
     BackendUnavailable, "float32, float16 or bfloat16"),

    # hotspot_gate
    ("gate c int", lambda: hotspot_gate(**gate(c=torch.ones(3, 4, dtype=torch.int64))), TypeError,
     "c must have dtype in (float32"),
    ("gate h shape", lambda: hotspot_gate(**gate(h=torch.randn(2, 4))), ValueError, "h must have the shape of c (3, 4)"),
    ("gate h dtype", lambda: hotspot_gate(**gate(h=torch.randn(3, 4).double())), TypeError, "h must have the dtype of c"),
    ("gate h device", lambda: hotspot_gate(**gate(h=torch.randn(3, 4, device=META))), ValueError, "h must be on cpu"),
    ("gate no features", lambda: hotspot_gate(**gate(c=torch.randn(3, 0), h=torch.randn(3, 0),
                                                      weight=torch.randn(0, 1), bias=torch.randn(1))),
     ValueError, "c and h must have at least one feature"),
    ("gate weight shape", lambda: hotspot_gate(**gate(weight=torch.randn(8, 3))), ValueError,
     "weight must have shape [2d, g] = [8, 1] (scalar gate) or [8, 4] (vector gate)"),
    ("gate bias shape", lambda: hotspot_gate(**gate(bias=torch.randn(1))), ValueError, "bias must have shape [g] = [4]"),

    # RelationalGraph and the relational ops
    ("graph huge relations", lambda: RelationalGraph(EI, ET, 3, 2**40), ValueError,
     "num_relations must be at most 2147483647, got 1099511627776"),
    ("graph huge buckets", lambda: RelationalGraph(EI, ET, 2**20, 2**20), ValueError,
     "num_nodes * num_relations = 1048576 * 1048576"),
    ("graph huge nodes", lambda: RelationalGraph(EI, ET, 2**40, 1), ValueError, "num_nodes must be at most"),
    ("graph negative nodes", lambda: RelationalGraph(EI, ET, -1, 2), ValueError, "num_nodes must be >= 0, got -1"),
    ("graph zero relations", lambda: RelationalGraph(EI, ET, 3, 0), ValueError, "num_relations must be >= 1, got 0"),
    ("graph float nodes", lambda: RelationalGraph(EI, ET, 3.0, 2), TypeError, "num_nodes must be a Python int"),
    ("graph bool relations", lambda: RelationalGraph(EI, ET, 3, True), TypeError, "num_relations must be a Python int"),
    ("graph node out of range", lambda: RelationalGraph(T([[0, 3], [1, 2]]), T([0, 1]), 3, 2), ValueError,
     "edge 1 is out of range: source 3, destination 2 must lie in [0, 3)"),
    ("graph negative node", lambda: RelationalGraph(T([[0, 1], [-1, 2]]), T([0, 1]), 3, 2), ValueError,
     "edge 0 is out of range"),
    ("graph type out of range", lambda: RelationalGraph(EI, T([0, 2, 0]), 3, 2), ValueError,
     "type 2 in [0, 2)"),
    ("graph float edges", lambda: RelationalGraph(EI.float(), ET, 3, 2), TypeError,
     "edge_index must have dtype in (int32, int64)"),
    ("graph edge shape", lambda: RelationalGraph(EI.t(), ET, 3, 2), ValueError, "edge_index must have shape [2, E]"),
    ("graph type count", lambda: RelationalGraph(EI, ET[:2], 3, 2), ValueError, "edge_type must have one entry per edge"),
    ("aggregate rows", lambda: relational_aggregate(torch.randn(4, 2), graph()), ValueError,
     "x must have one row per node (3), got 4"),
    ("aggregate int x", lambda: relational_aggregate(torch.ones(3, 2, dtype=torch.int64), graph()), TypeError,
     "x must have dtype in (float32"),
    ("aggregate reduce", lambda: relational_aggregate(torch.randn(3, 2), graph(), "max"), ValueError,
     "reduce must be one of ('mean', 'sum'), got 'max'"),
    ("aggregate graph type", lambda: relational_aggregate(torch.randn(3, 2), (EI, ET)), TypeError,
     "graph must be a RelationalGraph"),
    ("message shape", lambda: relational_message_sum(torch.randn(3, 3, 2), graph()), ValueError,
     "h must have shape [N, 2, d]"),
    ("matmul weight shape", lambda: relational_matmul(torch.randn(3, 2), torch.randn(2, 3, 4), graph()), ValueError,
     "weight must have shape [2, 2, out]"),

    # RGCNConv
    ("rgcn huge relations", lambda: RGCNConv(4, 4, 2**40), ValueError, "num_relations must be in [1, 2147483647]"),
    ("rgcn negative channels", lambda: RGCNConv(-3, 4, 2), ValueError, "in_channels must be in [1, 2147483647], got -3"),
    ("rgcn float relations", lambda: RGCNConv(4, 4, 2.0), TypeError, "num_relations must be an int, got float"),
    ("rgcn zero bases", lambda: RGCNConv(4, 4, 2, num_bases=0), ValueError, "num_bases must be in [1"),
    ("rgcn too many weights", lambda: RGCNConv(2**16, 2**16, 2**10), ValueError, "relation weights (more than"),
    ("rgcn bipartite", lambda: RGCNConv((4, 4), 4, 2), TypeError, "bipartite"),
    ("rgcn index >= in_channels", lambda: CONV(T([0, 7, 1]), EI, ET), ValueError,
     "index node features x must hold ids in [0, in_channels=5), got values in [0, 7]"),
    ("rgcn negative index", lambda: CONV(T([0, -1, 1]), EI, ET), ValueError, "must hold ids in [0, in_channels=5)"),
    ("rgcn 2-D index", lambda: CONV(T([[0, 1, 1]]), EI, ET), ValueError,
     "index node features x must be a 1-D int32/int64 tensor"),
    ("rgcn featureless edge >= in_channels", lambda: CONV(None, T([[0, 7], [1, 2]]), T([0, 1])), ValueError,
     "with x=None (featureless nodes) there is one node per input channel: edge_index must hold node ids in "
     "[0, in_channels=5)"),
    ("rgcn x width", lambda: CONV(torch.randn(3, 4), EI, ET), ValueError, "x must have shape [N, 5], got (3, 4)"),
    ("rgcn edge type missing", lambda: CONV(torch.randn(3, 5), EI), ValueError, "edge_type is required"),
    ("rgcn edge type range", lambda: CONV(torch.randn(3, 5), EI, T([0, 2, 0])), ValueError, "type 2 in [0, 2)"),

    # MixtureOfAligners
    ("moa float cu", lambda: MOA(*moa_inputs(t=T([0.0, 2, 5]))), TypeError,
     "cu_seqlens['t'] must have dtype in (int32, int64), got float32"),
    ("moa cu list", lambda: MOA(*moa_inputs(t=[0, 2, 5])), ValueError, "cu_seqlens['t'] must be a 1-D tensor"),
    ("moa cu end", lambda: MOA(*moa_inputs(a=T([0, 1, 3]))), ValueError,
     "cu_seqlens['a'] must end at the token count 4, got 3"),
    ("moa cu decreasing", lambda: MOA(*moa_inputs(a=T([0, 5, 4]))), ValueError, "cu_seqlens['a'] must be non-decreasing"),
    ("moa segment counts", lambda: MOA(*moa_inputs(a=T([0, 4]))), ValueError,
     "every modality's cu_seqlens must count the same utterances"),
    ("moa int feats", lambda: MOA({"t": torch.ones(5, 8, dtype=torch.int64), "a": torch.randn(4, 8)},
                                  moa_inputs()[1]), TypeError, "feats['t'] must have dtype in (float32"),
    ("moa missing modality", lambda: MOA({"t": torch.randn(5, 8)}, moa_inputs()[1]), KeyError, "need key 'a'"),

    # hotspot extraction
    ("extract scores shape", lambda: extract_hotspots(torch.randn(5, 3), T([0, 2, 5]), torch.randn(4)), ValueError,
     "scores must have shape [N] = [5]"),
    ("extract cu end", lambda: extract_hotspots(torch.randn(5, 3), T([0, 2, 6]), torch.randn(5)), ValueError,
     "cu_seqlens must end at the token count 5"),
    ("extract windows", lambda: extract_hotspots(torch.randn(5, 3), T([0, 5]), torch.randn(5), num_windows=-1),
     ValueError, "num_windows must be an integer >= 0"),
    ("extract radius", lambda: extract_hotspots(torch.randn(5, 3), T([0, 5]), torch.randn(5), radius=1.5),
     ValueError, "radius must be an integer >= 0"),
    ("extract temperature", lambda: extract_hotspots(torch.randn(5, 3), T([0, 5]), torch.randn(5), temperature=0.0),
     ValueError, "temperature must be > 0"),
]


@pytest.mark.parametrize("call, exc, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_named(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)


# ----------------------------------------------------------------------------- empty and degenerate

ATTN_BACKENDS = ["cpu", "triton", "reference"]


def _leaves(*ts):
    return [t.clone().requires_grad_() for t in ts]


@pytest.mark.parametrize("backend", ATTN_BACKENDS)
@pytest.mark.parametrize("heads, head_dim, nq, nk", [(0, 8, 5, 6), (2, 0, 5, 6), (0, 0, 5, 6), (2, 8, 0, 6),
                                                      (2, 8, 5, 0), (2, 8, 0, 0)])
def test_attention_degenerate_shapes(backend, heads, head_dim, nq, nk):
    """Zero heads (used to kill the process with SIGFPE on the CPU path), zero head dim, zero
    tokens: an output of q's shape (zeros where there are elements) and gradients of the inputs'
    shapes, zero."""
    q, k, v = _leaves(torch.randn(nq, heads, head_dim), torch.randn(nk, heads, head_dim),
                      torch.randn(nk, heads, head_dim))
    cq, ck = T([0, nq // 2, nq]), T([0, nk - nk // 2, nk])
    out = varlen_cross_attention(q, k, v, cq, ck, backend=backend)
    assert out.shape == (nq, heads, head_dim) and not out.count_nonzero()
    out.sum().backward()
    for t in (q, k, v):
        assert t.grad.shape == t.shape and not t.grad.count_nonzero()


def test_reference_attention_backward_without_any_query_key_pair():
    """No segment has both queries and keys: zeros, and zero gradients (not an error, not NaN),
    even when the unused keys are inf."""
    q, k, v = _leaves(torch.randn(3, 2, 4), torch.full((4, 2, 4), float("inf")), torch.randn(4, 2, 4))
    for fn in (varlen_cross_attention_reference, lambda *a: varlen_cross_attention(*a, backend="cpu")):
        for t in (q, k, v):
            t.grad = None
        out = fn(q, k, v, T([0, 3, 3]), T([0, 0, 4]))
        assert torch.equal(out, torch.zeros(3, 2, 4))
        out.sum().backward()
        assert all(torch.equal(t.grad, torch.zeros_like(t)) for t in (q, k, v))


@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
def test_grouped_linear_empty_inputs(backend):
    for lens in ([], [0, 0], [0, 3, 0]):
        n = sum(lens)
        x, w, b = _leaves(torch.randn(n, 4), torch.randn(3, 4, 6), torch.randn(3, 6))
        g = torch.rand(len(lens), 2, requires_grad=True)
        e = torch.zeros(len(lens), 2, dtype=torch.int64)
        cu = torch.cumsum(T([0] + lens), 0)
        out = grouped_expert_linear(x, cu, e, g, w, b, backend=backend)
        assert out.shape == (n, 6)
        out.sum().backward()
        assert x.grad.shape == x.shape and w.grad.shape == w.shape and g.grad.shape == g.shape


def test_relational_and_gate_empty_inputs():
    g = RelationalGraph(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), 0, 3)
    x = torch.randn(0, 4, requires_grad=True)
    assert relational_aggregate(x, g).shape == (0, 3, 4)
    conv = RGCNConv(4, 2, 3)
    out = conv(x, g)
    assert out.shape == (0, 2)
    out.sum().backward()
    assert x.grad.shape == (0, 4)
    for backend in ("cpu", "reference"):
        assert hotspot_gate(**gate(c=torch.randn(0, 4), h=torch.randn(0, 4)), backend=backend).shape == (0, 4)


# ----------------------------------------------------------------------------- strided views

def _strided(t):
    """The same values as ``t`` in a view with stride 2 along its first dimension."""
    wide = torch.zeros((t.shape[0] * 2,) + tuple(t.shape[1:]), dtype=t.dtype)
    wide[::2] = t
    view = wide[::2]
    assert not view.is_contiguous() or t.numel() <= 1
    return view


@pytest.mark.parametrize("backend", ATTN_BACKENDS)
def test_attention_strided_views_match_contiguous(backend):
    """A strided cu_seqlens view used to be read at unit stride by the Triton kernels."""
    q, k, v = torch.randn(9, 2, 8), torch.randn(7, 2, 8), torch.randn(7, 2, 8)
    cq, ck = T([0, 3, 5, 9]), T([0, 4, 4, 7])
    want = varlen_cross_attention(q, k, v, cq, ck, backend=backend)
    qs = torch.randn(9, 8, 2).transpose(1, 2).copy_(q)  # head stride 1, feature stride 2
    got = varlen_cross_attention(qs, _strided(k), v, _strided(cq), _strided(ck), backend=backend)
    # a segment's keys (4 at most) × the head dim 8
    assert_close(got, want, torch.float32, 4 * 8, what="strided")
    if backend != "reference":  # the registered op called directly, past the public checks
        direct = _fwd_op(q, k, v, _strided(cq), _strided(ck), 0.5, backend)[0]
        assert torch.equal(direct, _fwd_op(q, k, v, cq, ck, 0.5, backend)[0])


@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
def test_grouped_linear_strided_views_match_contiguous(backend):
    a = grouped()
    want = grouped_expert_linear(**a, backend=backend)
    b = dict(a, x=_strided(a["x"]), cu_seqlens=_strided(a["cu_seqlens"]), experts=_strided(a["experts"]),
             gates=a["gates"].t().contiguous().t(), weight=a["weight"].transpose(1, 2).contiguous().transpose(1, 2))
    assert_close(grouped_expert_linear(**b, backend=backend), want, torch.float32, GROUPED_K,
                 scale=grouped_magnitude(a), what="strided")


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_relational_strided_views_match_contiguous(backend):
    x = torch.randn(3, 4)
    want = relational_aggregate(x, graph(), backend=backend)
    g = RelationalGraph(EI.t().contiguous().t(), _strided(ET), 3, 2)
    got = relational_aggregate(x.t().contiguous().t(), g, backend=backend)
    assert torch.equal(got, want)
    assert torch.equal(relational_matmul(x.t().contiguous().t(), torch.randn(2, 4, 3).transpose(1, 2).contiguous()
                                         .transpose(1, 2), g, backend=backend).isfinite(),
                       torch.ones(3, 3, dtype=torch.bool))


# ----------------------------------------------------------------------------- NaN / inf

@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
def test_inf_in_an_unselected_expert_stays_out(backend):
    """0 · inf is NaN: the reference used to multiply every expert by a zero gate."""
    a = grouped(experts=T([[0, 1], [1, 0]]))
    a["weight"][2] = float("inf")
    a["bias"][2] = float("nan")
    x, g, w, b = _leaves(a["x"], a["gates"], a["weight"], a["bias"])
    out = grouped_expert_linear(x, a["cu_seqlens"], a["experts"], g, w, b, backend=backend)
    assert out.isfinite().all()
    out.sum().backward()
    assert x.grad.isfinite().all() and g.grad.isfinite().all() and w.grad[:2].isfinite().all()
    assert not w.grad[2].count_nonzero() and not b.grad[2].count_nonzero()
    # the reference never reads expert 2, on magnitudes either
    assert_close(out.detach(), grouped_expert_linear_reference(**a), torch.float32, GROUPED_K,
                 scale=grouped_magnitude(a), what="inf in an unselected expert")


@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
def test_nan_stays_in_its_segment(backend):
    """NaN in one segment's keys or tokens reaches that segment's rows only."""
    q, k, v = torch.randn(5, 2, 4), torch.randn(6, 2, 4), torch.randn(6, 2, 4)
    k[5] = float("nan")  # segment 1 of the keys
    out = varlen_cross_attention(q, k, v, T([0, 2, 5]), T([0, 4, 6]), backend=backend)
    assert out[:2].isfinite().all() and out[2:].isnan().all()
    a = grouped()
    a["x"][4] = float("nan")  # segment 1
    y = grouped_expert_linear(**a, backend=backend)
    assert y[:4].isfinite().all() and y[4].isnan().all()


# ----------------------------------------------------------------------------- one capability rule

@pytest.mark.parametrize("op,dtype,head_dim,want", [
    ("hotspot_gate", torch.float32, None, "triton"),
    ("hotspot_gate", torch.float64, None, "cpu"),            # the ATen composition is device-generic
    ("grouped_expert_linear", torch.bfloat16, None, "triton"),
    ("grouped_expert_linear", torch.float64, None, "cpu"),
    ("varlen_cross_attention", torch.float16, 128, "triton"),
    ("varlen_cross_attention", torch.float64, 64, "reference"),  # its CPU path is CPU-only
    ("varlen_cross_attention", torch.float32, 256, "reference"),
])
def test_automatic_choice_on_cuda_follows_the_capability_table(op, dtype, head_dim, want, monkeypatch):
    """Choice only (nothing runs, no GPU needed): every op's post-choice fallback is the table's."""
    from hotspot_erc.ops import _backend

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if _backend.triton_reason(torch.device("cuda")):
        pytest.skip("Triton is not importable")
    got = _backend.choose(op, None, torch.device("cuda"), _backend.OPS[op], dtype=dtype, head_dim=head_dim)
    assert got == want


def test_forced_backend_outside_the_table_names_the_limit_and_the_way_out():
    from hotspot_erc.ops import _backend

    sup = _backend.OPS["varlen_cross_attention"]
    with pytest.raises(_backend.UnsupportedDtype, match="takes float32, float16 or bfloat16 tensors, got float64; "
                                                        "use backend='cpu' or backend='reference'"):
        _backend.choose("varlen_cross_attention", "triton", torch.device("cpu"), sup, dtype=torch.float64)
    with pytest.raises(ValueError, match="head dims up to 128, got 200"):
        _backend.choose("varlen_cross_attention", "triton", torch.device("cpu"), sup, dtype=torch.float32,
                        head_dim=200)
    with _backend.use_backend("triton"):  # a block-wide default the inputs do not fit: automatic
        assert _backend.choose("hotspot_gate", None, torch.device("cpu"), _backend.OPS["hotspot_gate"],
                               dtype=torch.float64) == "cpu"
