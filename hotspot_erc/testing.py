"""Testing helpers: count the kernel launches one call makes.

At conversation scale (a few thousand tokens or nodes) every op here is launch-bound: its run time
is its number of kernel launches times a few microseconds. :func:`count_launches` counts them on
any machine, including a CPU-only CI runner where Triton runs through ``TRITON_INTERPRET=1``, so
tests can hold each op to a launch budget.

What is counted, for one call of ``fn(*args, **kwargs)`` (and, with :func:`count_fwd_bwd`, for
the backward pass that follows it):

* **Triton launches**: every ``kernel[grid](...)`` call (``triton.runtime.jit.KernelInterface``'s
  launch proxy: ``JITFunction``, the interpreter's ``InterpretedFunction``, ``Autotuner`` and
  ``Heuristics`` all launch through it) counts 1, under the name of the kernel. Whatever runs
  *inside* that call is Triton's business and is not counted: autotuning benchmark runs (which
  call ``fn.run`` directly), and the interpreter's copies of the arguments to host and back.
  (A launcher calling ``kernel.run(grid=..., warmup=False)`` itself bypasses the proxy and is not
  seen; every launcher in ``kernels/`` uses ``kernel[grid](...)``.)
* **ATen ops**: every leaf ATen op dispatched outside those launches, as a
  ``TorchDispatchMode`` sees it (composite ops such as ``linear`` arrive decomposed into their
  leaves: ``t`` + ``addmm``), including the ops a Triton launcher's own Python runs around its
  launches (``cumsum`` / ``searchsorted`` building a tile map, ``zero_`` of an accumulator) and
  the ops the autograd engine dispatches itself (``ones_like`` seeding a scalar loss, ``add``
  summing the gradients of a tensor used twice, zeros for an undefined gradient).
  Excluded, because they launch nothing on a GPU:

  - views and metadata: ops whose every output aliases an input without writing it (schema
    annotation ``Tensor(a)``: ``view``, ``t``, ``transpose``, ``select``, ``slice``, ``expand``,
    ``detach``, ``alias``, ...), ops tagged ``inplace_view`` (``t_``, ``as_strided_``, ...),
    ``_unsafe_view``, ``lift_fresh``, ``set_``, size/stride queries (``sym_size``... reach
    the mode for nested tensors) and TorchScript's ``prim`` queries (``prim.layout``);
  - allocations: ``empty``, ``empty_like``, ``empty_strided``, ``empty_permuted``, ``new_empty``,
    ``new_empty_strided``, ``resize_``, ``resize_as_`` (memory from the caching allocator).

  Ops whose every output is an empty tensor are not counted either (no kernel runs for zero
  elements).
  *Fills are counted* (``zeros``, ``ones``, ``full``, ``zeros_like``, ``new_zeros``, ``fill_``,
  ``zero_``): each is a kernel on a GPU. Copies and casts (``copy_``, ``_to_copy``, ``clone``)
  count; a ``.to()`` that changes nothing dispatches nothing. ``_local_scalar_dense``
  (``.item()``, ``int(t)``, ``bool(t)``) counts and is also listed in :attr:`LaunchCount.syncs`
  with the ops tagged ``dynamic_output_shape`` (``nonzero``, ``unique``, ``masked_select``...):
  on a CUDA tensor each of them waits for the device.
* **Custom ops**: an op registered from Python with ``torch.library.custom_op`` is transparent:
  the counter looks inside it and counts what its implementation launches (the op itself is
  bookkeeping). Any other non-ATen op (the C++ ops of ``hotspot_erc._C``, registered with
  ``TORCH_LIBRARY``) counts 1 as a kernel of its own, *plus* the ATen ops its C++ code dispatches
  (``at::zeros`` inside a C++ kernel is a second launch on a GPU; ``at::empty`` is not counted).
  Inside a custom op autograd is off, so composite ATen ops (``matmul``, ``item``) reach the mode
  undecomposed there: they are decomposed and their leaves counted, as everywhere else.
* **Value checks are listed apart** (:attr:`LaunchCount.validation`, not in ``total``): the
  ops check argument *values* (``cu_seqlens`` monotonic, ids in range) always for CPU tensors
  but for CUDA tensors only with ``HOTSPOT_ERC_VALIDATE=1``, because each check is a host sync
  there. A launch is a check when a function of the package on its call stack is named
  ``check_*``, ``_check*``, ``validate*`` or ``_validate*`` (the package's convention:
  ``_backend.check_cu_seqlens``, ``<op>._validate``, ``MixtureOfAligners._check``). So ``total``
  on CPU tensors is the launch count of the default CUDA path.
* **Steady state**: by default the call (and its backward) runs once uncounted first
  (``warmup=1``), so lazily built caches (a graph's relation-major layout, Triton's compile and
  autotune) are not counted; pass ``warmup=0`` to count a first call.

Every launch also records its call site (the innermost frame in ``hotspot_erc`` or ``kernels``):
``print(count.where())`` lists where the launches come from.

The count is what the code *dispatches*, not what a GPU would run: one ATen op can launch zero
(a ``copy_`` between identical tensors) or several kernels on CUDA (``sort`` of a long tensor,
``_assert_async``), and the CUDA path of an op may differ from its CPU path. On a CPU tensor the
number is the one CI asserts; run the same call on a CUDA tensor to count that path.

Usage::

    from hotspot_erc.testing import count_launches, count_fwd_bwd

    n = count_launches(hotspot_gate, c, h, w, b, backend="triton")
    assert n.total <= 1, n               # repr lists every launch by name
    fwd, bwd = count_fwd_bwd(layer, x, graph, grad=torch.ones(...))
"""
from __future__ import annotations

import collections
import dataclasses
import importlib.util
import os
import re
import sys
import threading
from typing import Any, Callable, Sequence

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import hotspot_erc as _pkg

__all__ = ["LaunchCount", "LaunchCounter", "count_launches", "count_fwd_bwd", "is_counted"]

# Allocations: memory from the caching allocator, no kernel on any device.
_ALLOCATIONS = frozenset({
    "empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided",
    "resize_", "resize_as_",
})
# Metadata-only ops whose schema does not say so (a fresh TensorImpl on the same storage, or a
# size/stride query that reaches the mode for tensor subclasses such as nested tensors).
_METADATA = frozenset({"_unsafe_view", "lift_fresh", "set_", "sym_size", "sym_stride", "sym_numel",
                       "sym_storage_offset", "sym_is_contiguous", "size", "stride", "numel", "dim", "storage_offset",
                       "is_contiguous", "is_strides_like_format", "is_non_overlapping_and_dense"})
# Python-level namespaces whose ops are always ATen's.
_ATEN_NAMESPACES = frozenset({"aten", "prims", "prim"})  # prim: TorchScript's layout/device queries
_CIA = torch._C.DispatchKey.CompositeImplicitAutograd


def _op_name(func) -> str:
    """``aten.addmm`` (overload dropped): the name a launch is listed under."""
    return f"{func.namespace}.{func._schema.name.split('::', 1)[-1]}"


def is_counted(func) -> bool:
    """Whether the counter counts one dispatch of ``func`` (an ``OpOverload``) as a launch:
    False for views, metadata-only ops and allocations (see the module docstring)."""
    base = func._schema.name.split("::", 1)[-1]
    if func.namespace == "prim" or base in _ALLOCATIONS or base in _METADATA:
        return False
    if torch.Tag.inplace_view in func.tags:
        return False
    rets = func._schema.returns
    if rets and all(r.alias_info is not None and not r.alias_info.is_write for r in rets):
        return False  # a view: its outputs alias an input, nothing is written
    return True


def _is_sync(func, args) -> bool:
    """Whether the op waits for a CUDA device: a tensor value read on the host, or an output
    size that depends on values (``index`` only with a boolean mask)."""
    if func._schema.name == "aten::_local_scalar_dense":
        return True
    if torch.Tag.dynamic_output_shape not in func.tags:
        return False
    if func._schema.name in ("aten::index", "aten::index_put", "aten::index_put_"):
        indices = args[1] if len(args) > 1 else ()
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)
    return True


def _plain(args, kwargs) -> bool:
    """Only dense strided tensors among the arguments (no subclass, nested or sparse tensor: those
    decompose their own way)."""
    return all(type(t) in (torch.Tensor, torch.nn.Parameter) and t.layout == torch.strided and not t.is_nested
               for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))


def _all_empty(out) -> bool:
    """Every output is a tensor with no elements (a fill or copy of nothing launches no kernel)."""
    tensors = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    return bool(tensors) and all(t.numel() == 0 for t in tensors)


def _is_composite(func) -> bool:
    # The C++ dispatcher's own table: OpOverload.has_kernel_for_dispatch_key also answers True
    # for a Python decomposition registered under the key (aten.native_batch_norm has one), and
    # asking the dispatcher for a kernel it lacks crashes the process.
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), _CIA)
    except RuntimeError:  # an overload only Python knows (aten.sym_size.int): not composite
        return False


def _is_python_custom_op(func) -> bool:
    return func.namespace not in _ATEN_NAMESPACES and func._schema.name in torch._library.custom_ops.OPDEFS


@dataclasses.dataclass
class LaunchCount:
    """What one counted region launched.

    ``total`` = ``triton`` + ``aten`` (+ ``custom``: non-ATen C++ ops counted as kernels).
    ``launches``: every counted launch by name (``triton:<kernel>``, ``aten.<op>``,
    ``<namespace>.<op>``), in first-seen order. ``syncs``: ops that wait for the device when
    run on CUDA tensors (already included in ``aten``). ``validation``: launches of value checks
    (not in ``total``, see the module docstring). ``sites``: (name, innermost package frame
    ``module:function:line``) of every launch and validation launch: where to look.
    """

    launches: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    syncs: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    validation: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    sites: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def triton(self) -> int:
        return sum(v for k, v in self.launches.items() if k.startswith("triton:"))

    @property
    def aten(self) -> int:
        return sum(v for k, v in self.launches.items() if k.startswith(("aten.", "prims.")))

    @property
    def custom(self) -> int:
        return self.total - self.triton - self.aten

    @property
    def total(self) -> int:
        return sum(self.launches.values())

    def __int__(self) -> int:
        return self.total

    def __add__(self, other: "LaunchCount") -> "LaunchCount":
        return LaunchCount(self.launches + other.launches, self.syncs + other.syncs,
                           self.validation + other.validation, self.sites + other.sites)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}×{v}" if v > 1 else k for k, v in self.launches.items())
        parts = f"triton={self.triton}, aten={self.aten}"
        if self.custom:
            parts += f", custom={self.custom}"
        sync = f"; syncs: {dict(self.syncs)}" if self.syncs else ""
        checks = f"; +{sum(self.validation.values())} value-check launches not counted" if self.validation else ""
        return f"LaunchCount(total={self.total}: {parts}; [{items}]{sync}{checks})"

    def where(self) -> str:
        """One line per (launch, call site), most frequent first: where the launches come from."""
        return "\n".join(f"{n:4d}  {name:40s} {site}" for (name, site), n in self.sites.most_common())


# ----------------------------------------------------------------------------- Triton hook

_state = threading.local()      # .inside_launch: depth of kernel[grid](...) calls on this thread
_active: list["LaunchCounter"] = []  # counters recording now (any thread: autograd workers launch too)
_patch_lock = threading.Lock()
_patched: dict = {}


def _package_roots() -> tuple[str, ...]:
    roots = [os.path.dirname(os.path.abspath(_pkg.__file__))]
    spec = importlib.util.find_spec("hotspot_erc.kernels")  # kernels/ maps onto it: find it unimported
    if spec is not None and spec.submodule_search_locations:
        roots += [os.path.abspath(p) for p in spec.submodule_search_locations]
    return tuple(r + os.sep for r in roots)


_PACKAGE_ROOTS = _package_roots()
_THIS_FILE = os.path.abspath(__file__)
_CHECK_NAME = re.compile(r"^_?(check|validate)")


def _call_site() -> tuple[str, bool]:
    """(innermost frame of package code, whether any package frame on the stack is a value check)."""
    frame, site, checking = sys._getframe(2), None, False
    while frame is not None:
        code = frame.f_code
        path = code.co_filename
        if path != _THIS_FILE and path.startswith(_PACKAGE_ROOTS):
            if site is None:
                mod = frame.f_globals.get("__name__", os.path.basename(path))
                site = f"{mod}:{code.co_name}:{frame.f_lineno}"
            if _CHECK_NAME.match(code.co_name):
                checking = True
        frame = frame.f_back
    return site or "(autograd engine or caller)", checking


def _inside_launch() -> bool:
    return getattr(_state, "inside_launch", 0) > 0


def _kernel_name(kernel) -> str:
    obj = kernel
    for _ in range(8):  # Autotuner -> Heuristics -> JITFunction -> python function
        name = getattr(obj, "__name__", None)
        if isinstance(name, str):
            return name
        obj = getattr(obj, "fn", None)
        if obj is None:
            break
    return type(kernel).__name__


def _install_triton_hook() -> None:
    """Wrap ``KernelInterface.__getitem__`` (the ``kernel[grid]`` proxy every Triton launch goes
    through, compiled or interpreted, autotuned or not). Reference-counted by the counters."""
    try:
        from triton.runtime.jit import KernelInterface
    except Exception:  # no triton: nothing to hook
        return
    with _patch_lock:
        if _patched:
            _patched["users"] += 1
            return
        original = KernelInterface.__getitem__

        def __getitem__(self, grid):
            launch = original(self, grid)

            def counted_launch(*args, **kwargs):
                if _active and not _inside_launch():
                    name = "triton:" + _kernel_name(self)
                    for counter in list(_active):
                        counter._record_launch(name)
                _state.inside_launch = getattr(_state, "inside_launch", 0) + 1
                try:
                    return launch(*args, **kwargs)
                finally:
                    _state.inside_launch -= 1

            return counted_launch

        KernelInterface.__getitem__ = __getitem__
        _patched.update(cls=KernelInterface, original=original, users=1)


def _remove_triton_hook() -> None:
    with _patch_lock:
        if not _patched:
            return
        _patched["users"] -= 1
        if _patched["users"] == 0:
            _patched["cls"].__getitem__ = _patched["original"]
            _patched.clear()


# ----------------------------------------------------------------------------- dispatch mode

def _redispatch_keys(args, kwargs):
    """Dispatch keys below the Python key for the tensors of a call (to run an op's own kernel
    without re-entering the mode, while the mode stays active for what that kernel dispatches)."""
    below = torch._C._dispatch_keyset_full_after(torch._C.DispatchKey.Python)
    keys = None
    for t in pytree.tree_leaves((args, kwargs)):
        if isinstance(t, torch.Tensor):
            k = torch._C._dispatch_keys(t)
            keys = k if keys is None else keys | k
    if keys is None:
        keys = torch._C._dispatch_keys(torch.empty(0))
    return keys & below


class _CountingMode(TorchDispatchMode):
    def __init__(self, counter: "LaunchCounter"):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _inside_launch():
            return func(*args, **kwargs)
        if func.namespace not in _ATEN_NAMESPACES:
            if not _is_python_custom_op(func):
                self.counter._record_launch(_op_name(func))  # a C++ kernel of its own
            # Look inside: run the op's kernel below the Python key with this mode active again.
            keys = _redispatch_keys(args, kwargs)
            with self:
                return func.redispatch(keys, *args, **kwargs)
        if _is_composite(func) and _plain(args, kwargs):
            # A composite op reaches this mode only where autograd is off (inside a custom op's
            # kernel): count its leaves, as the mode sees them everywhere else.
            with self:
                return func._op_dk(_CIA, *args, **kwargs)
        out = func(*args, **kwargs)
        if is_counted(func) and not _all_empty(out):
            self.counter._record_launch(_op_name(func), _is_sync(func, args))
        return out


class LaunchCounter:
    """Context manager counting launches in its block: ``with LaunchCounter() as lc: ...``;
    then ``lc.count`` is a :class:`LaunchCount`. See the module docstring for what counts.
    ``include_validation=True`` counts value checks in ``total`` too."""

    def __init__(self, include_validation: bool = False):
        self.include_validation = include_validation
        self.count = LaunchCount()
        self._lock = threading.Lock()
        self._mode = None

    def _record_launch(self, name: str, sync: bool = False) -> None:
        site, checking = _call_site()
        with self._lock:
            if checking and not self.include_validation:
                self.count.validation[name] += 1
                self.count.sites[(name + " [check]", site)] += 1
                return
            self.count.launches[name] += 1
            self.count.sites[(name, site)] += 1
            if sync:
                self.count.syncs[name] += 1

    def __enter__(self) -> "LaunchCounter":
        _install_triton_hook()
        _active.append(self)
        self._mode = _CountingMode(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._mode.__exit__(*exc)
        finally:
            _active.remove(self)
            _remove_triton_hook()


def count_launches(fn: Callable, *args, warmup: int = 1, include_validation: bool = False,
                   **kwargs) -> LaunchCount:
    """Launches of one call ``fn(*args, **kwargs)`` (forward only; autograd stays as the caller
    has it, so a forward on tensors that require grad counts what a training forward does).
    ``warmup`` uncounted calls run first."""
    for _ in range(warmup):
        fn(*args, **kwargs)
    with LaunchCounter(include_validation) as lc:
        fn(*args, **kwargs)
    return lc.count


def _grad_inputs(fn, args, kwargs) -> list[torch.Tensor]:
    leaves = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.requires_grad]
    if isinstance(fn, torch.nn.Module):
        leaves += [p for p in fn.parameters() if p.requires_grad]
    seen, out = set(), []
    for t in leaves:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def count_fwd_bwd(fn: Callable, *args, grad: Any = None, loss: Callable | None = None,
                  inputs: Sequence[torch.Tensor] | None = None, warmup: int = 1,
                  include_validation: bool = False, **kwargs) -> tuple[LaunchCount, LaunchCount]:
    """(forward, backward) launches of one training step of ``fn(*args, **kwargs)``.

    The backward is ``torch.autograd.grad(outputs, inputs, grad)``: ``inputs`` defaults to the
    tensors in ``args``/``kwargs`` that require grad plus, when ``fn`` is a module, its
    parameters. ``grad``: the output gradient(s) (a tensor, or a sequence matching the tensor
    outputs that require grad); None gives ones, made outside the counted regions. ``loss``:
    optional function of the output returning the tensor(s) to differentiate (counted with the
    forward), for outputs that are not tensors
    (e.g. ``lambda o: sum(v.square().mean() for v in o.outputs.values())``).
    ``warmup`` uncounted steps run first.
    """
    wrt = list(inputs) if inputs is not None else _grad_inputs(fn, args, kwargs)

    def forward():
        out = fn(*args, **kwargs)
        return loss(out) if loss is not None else out

    def backward(out):
        outs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
        if not outs:
            raise ValueError("count_fwd_bwd: the call returned no tensor that requires grad")
        if grad is None:
            grads = [torch.ones_like(t) for t in outs]
        elif isinstance(grad, torch.Tensor):
            grads = [grad]
        else:
            grads = list(grad)
        if len(grads) != len(outs):
            raise ValueError(f"count_fwd_bwd: {len(outs)} outputs require grad, got {len(grads)} grads")
        return outs, grads

    for _ in range(warmup):
        outs, grads = backward(forward())
        torch.autograd.grad(outs, wrt, grads, allow_unused=True)
    with LaunchCounter(include_validation) as lc:
        out = forward()
    outs, grads = backward(out)
    with LaunchCounter(include_validation) as lb:
        torch.autograd.grad(outs, wrt, grads, allow_unused=True)
    return lc.count, lb.count
