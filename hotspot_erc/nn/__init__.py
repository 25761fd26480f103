"""Modules: thin wrappers over :mod:`hotspot_erc.ops`, and the HotspotERC model."""
from hotspot_erc.nn.config import ModelConfig
from hotspot_erc.nn.encoder import AttentionPool, FrameEncoder
from hotspot_erc.nn.fusion import HotspotGatedFusion
from hotspot_erc.nn.graph import CrossModalGraph
from hotspot_erc.nn.moa import MixtureOfAligners, MoAOutput, PlainCrossModalAttention, RoutingInfo
from hotspot_erc.nn.model import HotspotERC, ModelOutput
from hotspot_erc.nn.rgcn import RGCNConv
from hotspot_erc.nn.transformer_conv import TransformerConv

__all__ = ["AttentionPool", "CrossModalGraph", "FrameEncoder", "HotspotERC", "HotspotGatedFusion", "ModelOutput", "MixtureOfAligners", "MoAOutput", "ModelConfig", "PlainCrossModalAttention", "RGCNConv", "RoutingInfo", "TransformerConv"]
