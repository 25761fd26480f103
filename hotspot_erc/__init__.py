"""hotspot-erc: emotion recognition in conversations built around emotion hotspots."""
__version__ = "0.1.0"

import os as _os
import sys as _sys

from hotspot_erc import _ext as _ext  # noqa: E402


def _map_checkout_kernels() -> None:
    """Installed, the Triton kernels sit in ``hotspot_erc/kernels/``. In a checkout (an editable
    install, or the root on sys.path) they sit in the top-level ``kernels/``, a namespace folder
    (no ``__init__.py``) so that it never shadows an installed package named ``kernels``; setuptools'
    editable finder cannot map a namespace subpackage, so it is registered here. Submodules still
    load lazily, on first use."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    folder = _os.path.join(_os.path.dirname(here), "kernels")
    if "hotspot_erc.kernels" in _sys.modules or _os.path.isdir(_os.path.join(here, "kernels")) \
            or not _os.path.isfile(_os.path.join(folder, "_launch.py")):
        return
    from importlib.machinery import ModuleSpec
    from importlib.util import module_from_spec

    spec = ModuleSpec(__name__ + ".kernels", None, is_package=True)
    spec.submodule_search_locations = [folder]
    _sys.modules[spec.name] = globals()["kernels"] = module_from_spec(spec)


_map_checkout_kernels()

# Load the compiled ops if present; failures are reported by `python -m hotspot_erc.info`.
_ext.load()
