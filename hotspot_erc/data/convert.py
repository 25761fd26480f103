"""``hotspot-erc convert``: turn the files researchers already have into the native format.

Converters form a registry (:data:`CONVERTERS`, :func:`converters`): each has a name (the FORMAT
word of ``hotspot-erc convert FORMAT ...``), a one-line help, a function that adds its own
arguments to its own sub-parser and a function that runs it and returns the exit status. Built in:
``iemocap`` (the DialogueRNN/MMGCN/COGMEN/CORECT 9-tuple pickle), ``cogmen`` (COGMEN/CORECT
processed ``{"train","dev","test"}`` pickles), ``mosei`` (MulT's ``mosei_senti_data.pkl``), and
``conversation-csv`` (MELD, EmoryNLP or any conversation CSV: :mod:`hotspot_erc.text.convert`,
a layer above this one, so the CLI registers it). A new reader is one :class:`Converter` passed to
:func:`register`. All pickles are read with the restricted unpickler of
:mod:`hotspot_erc.data.safe_pickle`.

Exit status (the policy of :mod:`hotspot_erc.cli`, which turns a converter's exceptions into its
one-line message and code): a converter checks its options before it reads anything, and a bad
option exits 2 (argparse's own checks included); from then on a problem with what it reads is a
data error, 3 (:class:`~hotspot_erc.data.iemocap.ReaderError`, the CSV reader's and the tagger
file's errors, the corpus writer's :class:`~hotspot_erc.data.format.RecordError`; any other
ValueError raised while a pickle is read becomes a ReaderError), and a problem with where it
writes is an output error, 5.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Callable

import numpy as np

from hotspot_erc.data.cogmen import read_cogmen
from hotspot_erc.data.format import (FEATURE_DTYPES, CorpusFormatError, OutputRefused, check_not_overlapping,
                                     open_corpus)
from hotspot_erc.data.iemocap import ReaderError, read_iemocap
from hotspot_erc.data.mosei import read_mosei
from hotspot_erc.data.splits import DEFAULT_DEV_FRACTION, check_fraction

FORMATS = ("iemocap", "cogmen", "mosei")  # the pickle formats of :func:`convert`
MOSEI_CLASSES = (2, 7)


@dataclasses.dataclass(frozen=True)
class Converter:
    """One ``hotspot-erc convert FORMAT`` entry. ``run(args)`` returns the exit status of a
    conversion that went through and raises for one that did not (the CLI reports it)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


CONVERTERS: dict[str, Converter] = {}


def register(converter: Converter) -> Converter:
    """Add ``converter`` to the registry (a name already taken is refused, not replaced)."""
    if converter.name in CONVERTERS:
        raise ValueError(f"a converter named {converter.name!r} is already registered")
    CONVERTERS[converter.name] = converter
    return converter


def converters() -> dict[str, Converter]:
    """The registered converters by name, in registration order."""
    return CONVERTERS


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``FORMAT SRC OUT_DIR [options]``: one sub-parser per registered converter, each with only
    its own options (``--classes`` is a mosei option, and refused for iemocap)."""
    sub = parser.add_subparsers(dest="format", metavar="FORMAT", required=True,
                                title="formats (hotspot-erc convert FORMAT --help for its options)")
    formatter = getattr(parser, "formatter_class", argparse.HelpFormatter)
    for conv in converters().values():
        p = sub.add_parser(conv.name, help=conv.help, description=conv.description or conv.help,
                           formatter_class=formatter)
        conv.add_arguments(p)
        p.set_defaults(converter=conv.name)
    return parser


def run_converter(args: argparse.Namespace) -> int:
    """Run the converter ``args.format`` names; returns its exit status."""
    return int(converters()[args.format].run(args) or 0)


# ----------------------------------------------------------------------------- the pickle formats

def convert(format: str, src: str | os.PathLike, out_dir: str | os.PathLike, **opts) -> str:
    """Convert ``src`` (in ``format``) into a native corpus at ``out_dir``; returns the path.

    Options by format: iemocap: ``four_way``, ``drop_unlabelled``, ``dev_fraction``; cogmen:
    ``label_names``, ``four_way``, ``drop_unlabelled``, ``text_field``; mosei: ``num_classes``
    (2 or 7), ``exclude_zero``, ``strip_padding``; all: ``overwrite``, ``feature_dtype``.
    Options are checked first (ValueError naming the option); then a source that does not have the
    expected layout raises :class:`~hotspot_erc.data.iemocap.ReaderError`. The written corpus is
    re-opened and validated before returning. The output folder may not be, contain or lie inside
    ``src``.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {FORMATS}")
    check_options(format, opts)
    if not os.path.exists(src):
        raise ReaderError(f"{src}: no such file")
    if not os.path.isfile(src):
        raise ReaderError(f"{src} is a folder; {format} takes the source pickle file")
    if not os.access(src, os.R_OK):
        raise ReaderError(f"{src}: not readable (permission denied)")
    check_not_overlapping(out_dir, [src])
    reader = {"iemocap": read_iemocap, "cogmen": read_cogmen, "mosei": read_mosei}[format]
    try:
        path = reader(src, out_dir, **opts)
    except ValueError as exc:
        # The options passed check_options: whatever else is wrong now lies in the source.
        if isinstance(exc, (ReaderError, CorpusFormatError, OutputRefused)):
            raise
        raise ReaderError(f"{src}: {exc}") from exc
    open_corpus(path)
    return path


_OPTIONS = {"iemocap": {"four_way", "drop_unlabelled", "dev_fraction"},
            "cogmen": {"label_names", "four_way", "drop_unlabelled", "text_field"},
            "mosei": {"num_classes", "exclude_zero", "strip_padding"}}


def check_options(format: str, opts: dict) -> None:
    """Refuse, before anything is read, an option ``format`` does not take or a value out of range."""
    unknown = sorted(set(opts) - _OPTIONS[format] - {"overwrite", "feature_dtype"})
    if unknown:
        raise ValueError(f"{format} does not take the option(s) {unknown}; it takes "
                         f"{sorted(_OPTIONS[format] | {'overwrite', 'feature_dtype'})}")
    if "dev_fraction" in opts:
        check_fraction(opts["dev_fraction"], "dev_fraction")
    if "num_classes" in opts and opts["num_classes"] not in MOSEI_CLASSES:
        raise ValueError(f"num_classes must be 2 or 7, got {opts['num_classes']!r}")
    if opts.get("feature_dtype", "float32") not in FEATURE_DTYPES:
        raise ValueError(f"feature_dtype must be one of {FEATURE_DTYPES}, got {opts['feature_dtype']!r}")
    names = opts.get("label_names")
    if names is not None and (not names or len(set(names)) != len(names)):
        raise ValueError(f"label_names must be distinct class names, at least one, got {names!r}")


def fraction_arg(text: str) -> float:
    """argparse type of a share in [0, 1): 1.5 or -1 is refused, not clamped."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (a share of the train dialogues), got {text}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="the source pickle")
    parser.add_argument("out_dir", help="corpus folder to create")
    parser.add_argument("--feature-dtype", choices=FEATURE_DTYPES, default="float32",
                        help="on-disk feature dtype (default float32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the corpus in OUT_DIR (only the files a corpus writer creates are deleted)")


def _labels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--four-way", action="store_true",
                        help="keep hap sad neu ang (other utterances stay as unlabelled context)")
    parser.add_argument("--drop-unlabelled", action="store_true",
                        help="remove unlabelled utterances instead of keeping them as context")


def _iemocap_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _labels(parser)
    parser.add_argument("--dev-fraction", type=fraction_arg, default=DEFAULT_DEV_FRACTION,
                        help="share of trainVid (from the front, in order) used as dev: rounded down, at least "
                             "one dialogue (hotspot_erc.data.splits) (default 0.1)")


def _cogmen_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    _labels(parser)
    parser.add_argument("--text-field", default="text",
                        help="sample field holding text features (text or sbert_sentence_embeddings)")
    parser.add_argument("--label-names", default=None, help="comma-separated class names (default: IEMOCAP's six)")


def _mosei_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--classes", type=int, choices=MOSEI_CLASSES, default=7,
                        help="2-class by sign or 7-class by rounding (default 7)")
    parser.add_argument("--exclude-zero", action="store_true", help="2-class: mark score-0 segments unlabelled")
    parser.add_argument("--keep-padding", action="store_true", help="keep MulT's all-zero padding frames")


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
    """Run the pickle conversion ``args`` describes and print a summary; returns 0 and raises
    what went wrong (``hotspot_erc.cli`` reports it with its exit code)."""
    path = convert(args.format, args.src, args.out_dir, **options_from_args(args))
    print(summary(path))
    return 0


for _name, _help, _add in (
        ("iemocap", "the IEMOCAP 9-tuple pickle of DialogueRNN/MMGCN/COGMEN/CORECT (IEMOCAP_features.pkl)",
         _iemocap_arguments),
        ("cogmen", "COGMEN/CORECT processed pickles ({'train','dev','test'} lists of samples)", _cogmen_arguments),
        ("mosei", "MulT's CMU-MOSEI pickle (mosei_senti_data.pkl), 2- or 7-class sentiment", _mosei_arguments)):
    register(Converter(_name, _help, _add, run_convert))
