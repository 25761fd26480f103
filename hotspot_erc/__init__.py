"""hotspot-erc: emotion recognition in conversations built around emotion hotspots."""
__version__ = "0.1.0"

from hotspot_erc import _ext as _ext  # noqa: E402

# Load the compiled ops if present; failures are reported by `python -m hotspot_erc.info`.
_ext.load()
