"""Functional ops. Each takes ``backend=None`` (auto) or one of "triton", "cuda", "cpu",
"reference"; see :mod:`hotspot_erc.ops._backend`."""
from hotspot_erc.ops._backend import BACKENDS, BackendUnavailable, use_backend
from hotspot_erc.ops.graph_attention import AttentionGraph, graph_attention
from hotspot_erc.ops.grouped_linear import GroupedLinearPlan, grouped_expert_linear, grouped_linear_plan
from hotspot_erc.ops.hotspot_gate import hotspot_gate
from hotspot_erc.ops.relational import (RelationalGraph, relational_aggregate, relational_matmul,
                                        relational_message_sum)
from hotspot_erc.ops.segment_matmul import segment_matmul
from hotspot_erc.ops.varlen_attention import varlen_cross_attention

__all__ = ["AttentionGraph", "BACKENDS", "BackendUnavailable", "GroupedLinearPlan", "RelationalGraph", "grouped_expert_linear",
           "graph_attention", "grouped_linear_plan", "hotspot_gate", "relational_aggregate",
           "relational_matmul", "relational_message_sum", "segment_matmul", "use_backend", "varlen_cross_attention"]
