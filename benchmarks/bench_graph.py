"""Conversation-graph building: the vectorised ``build_conversation_graph`` vs per-dialogue Python
loops, the way CORECT/COGMEN build graphs: ``hotspot_erc.reference.conversation_graph`` for our
schemes, ``hotspot_erc.reference.baseline_graphs`` (CORECT's / COGMEN's graph, their default
windows: CORECT wp=11 wf=9, COGMEN wp=wf=10) for ``corect`` / ``cogmen``. Batches of 32
dialogues (30 and 50 utterances, 3 modalities), every scheme.
Run: ``python -m benchmarks.bench_graph [--quick]``.
"""
from __future__ import annotations


import torch

from benchmarks.harness import bench_parser, launches, parse_bench_args, print_table, time_ms, write_results
from hotspot_erc.data.graph import SCHEMES, build_conversation_graph, node_modalities
from hotspot_erc.reference.baseline_graphs import cogmen_graph_loop, corect_graph_loop
from hotspot_erc.reference.conversation_graph import build_conversation_graph_loop

BASELINE_WINDOWS = {"corect": (11, 9), "cogmen": (10, 10)}


def builders(scheme: str, dialogue, speaker):
    """(vectorised, loop) zero-argument callables for one scheme."""
    if scheme not in BASELINE_WINDOWS:
        return (lambda: build_conversation_graph(dialogue, speaker, scheme=scheme),
                lambda: build_conversation_graph_loop(dialogue, speaker, scheme=scheme))
    wp, wf = BASELINE_WINDOWS[scheme]
    kw = dict(window_past=wp, window_future=wf, scheme=scheme, num_speakers=2,
              modalities=node_modalities("tav", scheme))
    if scheme == "corect":
        loop = lambda: corect_graph_loop(dialogue.tolist(), 3, wp, wf)  # noqa: E731
    else:
        loop = lambda: cogmen_graph_loop(dialogue.tolist(), speaker.tolist(), wp, wf)  # noqa: E731
    return (lambda: build_conversation_graph(dialogue, speaker, **kw)), loop


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
            vectorised, looped = builders(scheme, dialogue, speaker)
            g = vectorised()
            case = f"32x{utterances}x3 {scheme}"
            # interleaved rounds, best kept: the load of a shared machine drifts between runs
            vec, loop = float("inf"), float("inf")
            for _ in range(rounds):
                vec = min(vec, time_ms(vectorised, device, min_run_time))
                # the loop runs on host lists; its inputs start where the batch lives, as in a collate
                loop = min(loop, time_ms(looped, device, min_run_time))
            common = {"case": case, "utterances": dialogue.numel(), "edges": g.edge_index.shape[1],
                      "relations": g.num_relations}
            records.append({**common, "impl": "vectorised", "ms": vec, "launches": launches(vectorised),
                            "speedup_vs_loop": loop / vec})
            records.append({**common, "impl": "python loop", "ms": loop, "launches": launches(looped),
                            "speedup_vs_loop": 1.0})
    print_table(records, ["case", "edges", "impl", "ms", "launches", "speedup_vs_loop"])
    path = write_results("bench_graph", device, records, extra={"quick": args.quick})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
