"""``hotspot-erc convert``: turn the files researchers already have into the native format.

Formats: ``iemocap`` (the DialogueRNN/MMGCN/COGMEN/CORECT 9-tuple pickle), ``cogmen`` (COGMEN/CORECT
processed ``{"train","dev","test"}`` pickles), ``mosei`` (MulT's ``mosei_senti_data.pkl``). All
pickles are read with the restricted unpickler of :mod:`hotspot_erc.data.safe_pickle`.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from hotspot_erc.data.format import check_not_overlapping, open_corpus

FORMATS = ("iemocap", "cogmen", "mosei")


def convert(format: str, src: str | os.PathLike, out_dir: str | os.PathLike, **opts) -> str:
    """Convert ``src`` (in ``format``) into a native corpus at ``out_dir``; returns the path.

    Options by format: iemocap: ``four_way``, ``drop_unlabelled``, ``dev_fraction``; cogmen:
    ``label_names``, ``four_way``, ``drop_unlabelled``, ``text_field``; mosei: ``num_classes``
    (2 or 7), ``exclude_zero``, ``strip_padding``; all: ``overwrite``, ``feature_dtype``.
    The written corpus is re-opened and validated before returning. The output folder may not be,
    contain or lie inside ``src``.
    """
    from hotspot_erc.data.iemocap import ReaderError

    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {FORMATS}")
    if not os.path.exists(src):
        raise ReaderError(f"{src}: no such file")
    if not os.path.isfile(src):
        raise ReaderError(f"{src} is a folder; {format} takes the source pickle file")
    if not os.access(src, os.R_OK):
        raise ReaderError(f"{src}: not readable (permission denied)")
    check_not_overlapping(out_dir, [src])
    if format == "iemocap":
        from hotspot_erc.data.iemocap import read_iemocap as reader
    elif format == "cogmen":
        from hotspot_erc.data.cogmen import read_cogmen as reader
    elif format == "mosei":
        from hotspot_erc.data.mosei import read_mosei as reader
    path = reader(src, out_dir, **opts)
    open_corpus(path)
    return path


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``hotspot-erc convert FORMAT SRC OUT_DIR [options]``."""
    parser.add_argument("format", choices=FORMATS, help="layout of SRC")
    parser.add_argument("src", help="the source pickle")
    parser.add_argument("out_dir", help="corpus directory to create")
    parser.add_argument("--four-way", action="store_true",
                        help="iemocap/cogmen: keep hap sad neu ang (other utterances stay as unlabelled context)")
    parser.add_argument("--drop-unlabelled", action="store_true",
                        help="iemocap/cogmen: remove unlabelled utterances instead of keeping them as context")
    parser.add_argument("--dev-fraction", type=fraction_arg, default=0.1,
                        help="iemocap: share of trainVid (from the front, in order) used as dev (default 0.1)")
    parser.add_argument("--text-field", default="text",
                        help="cogmen: sample field holding text features (text or sbert_sentence_embeddings)")
    parser.add_argument("--label-names", default=None,
                        help="cogmen: comma-separated class names (default: IEMOCAP's six)")
    parser.add_argument("--classes", type=int, choices=(2, 7), default=7,
                        help="mosei: 2-class by sign or 7-class by rounding (default 7)")
    parser.add_argument("--exclude-zero", action="store_true", help="mosei 2-class: mark score-0 segments unlabelled")
    parser.add_argument("--keep-padding", action="store_true", help="mosei: keep MulT's all-zero padding frames")
    parser.add_argument("--feature-dtype", choices=("float32", "float16"), default="float32",
                        help="on-disk feature dtype (default float32)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is not empty")
    return parser


def fraction_arg(text: str) -> float:
    """argparse type of a share in [0, 1): 1.5 or -1 is refused, not clamped."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (a share of the train dialogues), got {text}")
    return value


def summary(path: str) -> str:
    """What a conversion wrote, with the unlabelled utterances counted per split (kept as context,
    ignored by losses and metrics): a converter never drops or blanks labels without saying so."""
    corpus = open_corpus(path, check_values=False)
    lines = [repr(corpus)]
    label = np.asarray(corpus.label)
    parts = []
    for name, dlg in corpus.splits.items():
        n = unl = 0
        for d in dlg:
            lo, hi = corpus.dialogue_utterances(int(d))
            n += hi - lo
            unl += int((label[lo:hi] < 0).sum())
        parts.append(f"{name} {unl} of {n}")
    total = int((label < 0).sum())
    if total:
        lines.append(f"note: {total} utterance(s) are unlabelled (kept as context, ignored by losses and metrics): "
                     + ", ".join(parts))
    return "\n".join(lines)


def options_from_args(args: argparse.Namespace) -> dict:
    """The reader options ``args`` asks for (only those that apply to ``args.format``)."""
    opts = {"overwrite": args.overwrite, "feature_dtype": args.feature_dtype}
    if args.format in ("iemocap", "cogmen"):
        opts.update(four_way=args.four_way, drop_unlabelled=args.drop_unlabelled)
    if args.format == "iemocap":
        opts["dev_fraction"] = args.dev_fraction
    if args.format == "cogmen":
        opts["text_field"] = args.text_field
        if args.label_names:
            opts["label_names"] = [s.strip() for s in args.label_names.split(",") if s.strip()]
    if args.format == "mosei":
        opts.update(num_classes=args.classes, exclude_zero=args.exclude_zero, strip_padding=not args.keep_padding)
    return opts


def run_convert(args: argparse.Namespace) -> int:
    """Run the conversion ``args`` describes and print a summary; returns the exit status
    (the policy of :mod:`hotspot_erc.cli`: 2 options, 3 source data, 5 output folder)."""
    from hotspot_erc.cli import error_exit

    try:
        path = convert(args.format, args.src, args.out_dir, **options_from_args(args))
        print(summary(path))
    except Exception as exc:  # noqa: BLE001 - error_exit re-raises what is not a user's problem
        return error_exit(exc, "convert")
    return 0


def main(argv=None) -> int:
    parser = add_convert_arguments(argparse.ArgumentParser(prog="hotspot-erc convert", description=__doc__))
    return run_convert(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
