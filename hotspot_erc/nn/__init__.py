"""Modules: thin wrappers over :mod:`hotspot_erc.ops`, and the HotspotERC model."""
from hotspot_erc.nn.moa import MixtureOfAligners, MoAOutput, PlainCrossModalAttention, RoutingInfo

__all__ = ["MixtureOfAligners", "MoAOutput", "PlainCrossModalAttention", "RoutingInfo"]
