"""Conversation-graph building: the vectorised ``build_conversation_graph`` vs the per-dialogue
Python loop (``hotspot_erc.reference.conversation_graph``), the way CORECT/COGMEN-style code
builds graphs. Batches of 32 dialogues (30 and 50 utterances, 3 modalities), every scheme.
Run: ``python -m benchmarks.bench_graph [--quick]``.
"""
from __future__ import annotations


import torch

from benchmarks.harness import bench_parser, parse_bench_args, print_table, time_ms, write_results
from hotspot_erc.data.graph import SCHEMES, build_conversation_graph
from hotspot_erc.reference.conversation_graph import build_conversation_graph_loop


def batch(dialogues: int, utterances: int, device):
    dialogue = torch.arange(dialogues).repeat_interleave(utterances).to(device)
    speaker = torch.randint(0, 2, dialogue.shape, generator=torch.Generator().manual_seed(0)).to(device)
    return dialogue, speaker


def main(argv=None) -> None:
    parser = bench_parser(__doc__, "shorter timing runs (same sizes)")
    args = parse_bench_args(parser, argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    min_run_time = 0.2 if args.quick else 1.0
    rounds = 3 if args.quick else 5
    records = []
    for utterances in (30, 50):
        dialogue, speaker = batch(32, utterances, device)
        for scheme in SCHEMES:
            g = build_conversation_graph(dialogue, speaker, scheme=scheme)
            case = f"32x{utterances}x3 {scheme}"
            # interleaved rounds, best kept: the load of a shared machine drifts between runs
            vec, loop = float("inf"), float("inf")
            for _ in range(rounds):
                vec = min(vec, time_ms(lambda: build_conversation_graph(dialogue, speaker, scheme=scheme), device,
                                       min_run_time))
                # the loop runs on host lists; its inputs start where the batch lives, as in a collate
                loop = min(loop, time_ms(lambda: build_conversation_graph_loop(dialogue, speaker, scheme=scheme),
                                         device, min_run_time))
            common = {"case": case, "utterances": dialogue.numel(), "edges": g.edge_index.shape[1],
                      "relations": g.num_relations}
            records.append({**common, "impl": "vectorised", "ms": vec, "speedup_vs_loop": loop / vec})
            records.append({**common, "impl": "python loop", "ms": loop, "speedup_vs_loop": 1.0})
    print_table(records, ["case", "edges", "impl", "ms", "speedup_vs_loop"])
    path = write_results("bench_graph", device, records, extra={"quick": args.quick})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
