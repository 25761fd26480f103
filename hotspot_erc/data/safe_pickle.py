"""Loading research data pickles without letting them run code.

A pickle names callables (``module.attribute``) that the loader calls while rebuilding objects, so
an untrusted file can call ``os.system``. :func:`safe_load` resolves only an allow-list: numpy
arrays, dtypes and scalars, builtin containers, and (on request) record classes such as COGMEN's
``Sample``, which are rebuilt as inert :class:`Record` attribute bags that never run the original
class's code. Anything else raises :class:`UnsafePickleError` naming what the file asked for.
"""
from __future__ import annotations

import importlib
import io
import os
import pickle
from typing import Iterable

# (module, name) pairs a data pickle may reference. numpy moved its core to numpy._core in 2.0;
# pickles written by either major version name either path.
_NUMPY = [
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),
]
_ALLOWED = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),  # Python 2 byte strings inside numpy states
}
for _pkg in ("numpy.core", "numpy._core"):
    for _mod, _name in _NUMPY:
        _ALLOWED[(f"{_pkg}.{_mod}", _name)] = (f"numpy._core.{_mod}", _name)
for _b in ("builtins", "__builtin__"):
    for _name in ("list", "dict", "tuple", "set", "frozenset", "bytearray", "complex", "slice", "object"):
        _ALLOWED[(_b, _name)] = ("builtins", _name)
_ALLOWED[("collections", "OrderedDict")] = ("collections", "OrderedDict")
# copyreg._reconstructor only calls base.__new__(cls) on classes that passed this same check.
_ALLOWED[("copyreg", "_reconstructor")] = ("copyreg", "_reconstructor")
_ALLOWED[("copy_reg", "_reconstructor")] = ("copyreg", "_reconstructor")
# numpy dtype classes (numpy >= 1.25 pickles dtypes through them, e.g. numpy.dtypes.Float32DType).
_DTYPE_MODULES = ("numpy.dtypes",)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a callable outside the allow-list; it was not loaded."""


class UnreadablePickleError(pickle.UnpicklingError):
    """The file is empty, truncated or not a pickle at all."""


class Record:
    """An inert stand-in for a record object (e.g. ``cogmen.Sample``): attributes only, no methods."""

    def __init__(self, *args, **kwargs):
        self._record_class = type(self).__name__
        self.__dict__.update(kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise UnsafePickleError(f"record state must be a dict of attributes, got {type(state).__name__}")
        self.__dict__.update(state)

    def __repr__(self):
        return f"Record({', '.join(sorted(k for k in self.__dict__ if not k.startswith('_')))})"


def _resolve(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        if module.startswith("numpy._core."):  # numpy 1.x has only numpy.core
            return getattr(importlib.import_module("numpy.core." + module[len("numpy._core."):]), name)
        raise


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` only returns allow-listed objects."""

    def __init__(self, file, *, record_classes: Iterable[tuple[str, str]] = (), source: str = "pickle", **kw):
        super().__init__(file, **kw)
        self._records = {tuple(x) for x in record_classes}
        self._source = source

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _resolve(*_ALLOWED[(module, name)])
        if module in _DTYPE_MODULES and name.endswith("DType"):
            return _resolve(module, name)
        if (module, name) in self._records or ("*", name) in self._records:
            # A fresh subclass per name keeps the original class name visible in reprs.
            return type(name, (Record,), {"__module__": __name__})
        raise UnsafePickleError(
            f"{self._source}: refusing to load {module}.{name}: data pickles may contain only numpy "
            "arrays, numpy scalars and builtin containers (a pickle can run code when loaded, and "
            f"{module}.{name} is not known to be harmless). If you trust this file, load it yourself "
            "and re-save its arrays with numpy.save."
        )


def safe_load(path_or_file, *, record_classes: Iterable[tuple[str, str]] = (), encoding: str = "latin1"):
    """Unpickle ``path_or_file`` (path, bytes or binary file) with the restricted unpickler.

    ``encoding="latin1"`` reads Python 2 pickles (DialogueRNN's IEMOCAP file) with numpy arrays
    intact. ``record_classes`` lists ``(module, name)`` pairs (``("*", name)`` for any module) to
    rebuild as :class:`Record` objects.
    """
    if isinstance(path_or_file, (bytes, bytearray)):
        return _load(io.BytesIO(path_or_file), "<bytes>", record_classes, encoding)
    if isinstance(path_or_file, (str, os.PathLike)):
        source = os.fspath(path_or_file)
        if os.path.isdir(source):
            raise UnreadablePickleError(f"{source} is a folder, not a pickle file")
        with open(path_or_file, "rb") as fh:
            return _load(fh, source, record_classes, encoding)
    return _load(path_or_file, getattr(path_or_file, "name", "<file>"), record_classes, encoding)


def _load(fh, source: str, record_classes, encoding: str):
    try:
        return RestrictedUnpickler(fh, record_classes=record_classes, source=source, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except EOFError:
        raise UnreadablePickleError(f"{source}: the file is empty or truncated (the pickle ends early)") from None
    except RecursionError:
        raise UnreadablePickleError(f"{source}: the pickle is nested too deeply to read") from None
    except MemoryError:
        raise UnreadablePickleError(f"{source}: the pickle asks for more memory than is available "
                                    "(damaged or not a data pickle)") from None
    except Exception as exc:
        # Only allow-listed numpy/builtin constructors run here, so any other failure means the
        # bytes are not a valid data pickle (wrong file, damaged, truncated inside an array).
        raise UnreadablePickleError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None
