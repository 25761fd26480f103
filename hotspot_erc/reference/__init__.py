"""Plain-PyTorch references of every op: the executable spec, imported by tests and benchmarks."""
from hotspot_erc.reference.baseline_graphs import cogmen_graph_loop, corect_graph_loop
from hotspot_erc.reference.conversation_graph import build_conversation_graph_loop
from hotspot_erc.reference.grouped_linear import grouped_expert_linear_reference
from hotspot_erc.reference.hotspot_gate import hotspot_gate_reference
from hotspot_erc.reference.relational import relational_aggregate as relational_aggregate_reference
from hotspot_erc.reference.relational import rgcn_conv as rgcn_conv_reference
from hotspot_erc.reference.routing import load_balancing_loss, topk_masked_softmax
from hotspot_erc.reference.segment_matmul import segment_matmul_reference
from hotspot_erc.reference.varlen_attention import (padded_attention_reference, padded_sdpa_attention,
                                                    varlen_cross_attention_reference)

__all__ = [
    "build_conversation_graph_loop", "cogmen_graph_loop", "corect_graph_loop", "grouped_expert_linear_reference", "hotspot_gate_reference",
    "load_balancing_loss", "padded_attention_reference", "padded_sdpa_attention",
    "relational_aggregate_reference", "rgcn_conv_reference", "segment_matmul_reference", "topk_masked_softmax",
    "varlen_cross_attention_reference",
]
