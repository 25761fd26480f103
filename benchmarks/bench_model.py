"""End-to-end benchmark: a training step and an inference pass of ``HotspotERC``.

    python -m benchmarks.bench_model [--quick]

The same model (same weights, same batch) runs with the automatic backends (Triton / CUDA kernels
on GPU, the C++ and ATen paths on CPU) and with every op forced onto its plain-PyTorch reference
(``hotspot_erc.ops.use_backend("reference")``). Cases: conversation scale (32 dialogues x 50
utterances, the corpus' default frame lengths) and long scale (8 dialogues x 50 utterances with
frames 5x longer). ``--quick`` shrinks both for a CPU smoke run. Every row has launches per call
(the train step includes the optimiser step); there is no FLOP/byte model of the whole model.
"""
from __future__ import annotations

import tempfile

import torch
import torch.nn.functional as F

from benchmarks.harness import bench_parser, measure, parse_bench_args, print_table, write_results
from hotspot_erc.data.dataset import DialogueDataset, collate_dialogues
from hotspot_erc.data.format import open_corpus
from hotspot_erc.data.synthetic import generate_synthetic_corpus
from hotspot_erc.nn.model import HotspotERC
from hotspot_erc.ops import use_backend

LONG_FRAMES = {"t": (50, 200), "a": (100, 300), "v": (75, 250)}


def make_batch(root: str, dialogues: int, utterances: int, long: bool, device):
    opts = dict(utterances=(utterances, utterances))
    if long:
        opts["frames"] = LONG_FRAMES
    path = generate_synthetic_corpus(root, num_dialogues=dialogues, seed=0, **opts)
    corpus = open_corpus(path)
    items = []
    for split in ("train", "dev", "test"):  # every dialogue, whatever split it landed in
        ds = DialogueDataset(corpus, split)
        items += [ds[i] for i in range(len(ds))]
    batch = collate_dialogues(items).to(device)
    return corpus, batch


def run(quick: bool):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if quick:
        cases = [("conversation", 8, 20, False), ("long", 3, 10, True)]
    else:
        cases = [("conversation", 32, 50, False), ("long", 8, 50, True)]
    records = []
    for name, dialogues, utterances, long in cases:
        with tempfile.TemporaryDirectory() as root:
            corpus, batch = make_batch(root, dialogues, utterances, long, device)
        torch.manual_seed(0)
        model = HotspotERC(corpus.meta["dims"], len(corpus.meta["label_names"])).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        labels = batch.labels
        frames = sum(int(f.shape[0]) for f in batch.features.values())
        meta = dict(case=name, dialogues=dialogues, utterances=int(labels.numel()), frames=frames)

        def train_step():
            model.train()
            opt.zero_grad(set_to_none=True)
            out = model(batch)
            loss = F.cross_entropy(out.logits, labels, ignore_index=-1) + 0.01 * out.lb_loss
            loss.backward()
            opt.step()

        @torch.no_grad()
        def infer():
            model.eval()
            model(batch)

        row = {}
        for impl, backend in (("hotspot_erc", None), ("reference", "reference")):
            for what, fn in (("train_step", train_step), ("inference", infer)):
                def call(fn=fn, backend=backend):
                    with use_backend(backend):
                        fn()

                rec = measure(f"{impl}/{what}", call, device, impl=impl, **{"pass": what}, **meta)
                records.append(rec)
                row[(impl, what)] = rec
        for what in ("train_step", "inference"):
            ours = row[("hotspot_erc", what)]
            ours["speedup_vs_reference"] = row[("reference", what)]["ms"] / ours["ms"]
    return records, device


def main(argv=None) -> int:
    p = bench_parser(__doc__, "small cases (CPU smoke run)")
    args = parse_bench_args(p, argv)
    records, device = run(args.quick)
    print_table(records, ["name", "case", "utterances", "frames", "ms", "launches", "peak_mb", "speedup_vs_reference"])
    path = write_results("model", device, records, extra={"quick": args.quick})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
