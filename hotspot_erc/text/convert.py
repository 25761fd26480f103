"""Conversation CSV -> native corpus with word-level text features and per-word intensity.

``hotspot-erc convert --format conversation-csv`` mounts :func:`add_csv_arguments` and
:func:`run_csv_convert`. The features are computed once: the corpus records a fingerprint of its
inputs (file contents, columns, encoder, intensity source), and converting again with the same
inputs into the same folder returns the existing corpus without re-encoding.

Text frames are words (:func:`hotspot_erc.text.words.split_words`); an utterance with no words
has a zero-length text segment, which every op treats as a missing modality. Intensity comes from
the VADER lexicon, an external tagger's file (see :mod:`hotspot_erc.text.lexicon`), or nothing
(then train with ``--hotspot-source rule`` or ``learned``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from hotspot_erc.text.csv_reader import SPLITS, ConversationTable, CsvLayout, PRESETS, make_layout, \
    read_conversation_csv, split_files_in
from hotspot_erc.data.splits import carve_dev
from hotspot_erc.text.encoders import ENCODERS, HF_PREFIX, WordEncoder, describe_encoder, get_encoder
from hotspot_erc.text.lexicon import LexiconScorer, TaggerFileError, read_tagger_file, write_word_file
from hotspot_erc.text.words import split_words

logger = logging.getLogger("hotspot_erc.text")
INTENSITY_SOURCES = ("lexicon", "tagger", "none")
# Bump when the meaning of the stored features changes, so old caches are not reused.
_PIPELINE_VERSION = 1


def convert_conversation_csv(
    out_dir: str | os.PathLike,
    files: Mapping[str, str | os.PathLike] | str | os.PathLike,
    *,
    preset: str | CsvLayout = "generic",
    label: str | None = None,
    columns: Mapping[str, object] | None = None,
    label_names: Sequence[str] | None = None,
    encoder: str | WordEncoder = "minilm",
    encoder_options: Mapping[str, object] | None = None,
    intensity: str = "lexicon",
    tagger_file: str | os.PathLike | None = None,
    dev_fraction: float = 0.1,
    batch_size: int = 64,
    repair: bool = True,
    on_conflict: str = "error",
    multi_speaker: str = "joint",
    feature_dtype: str = "float32",
    overwrite: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> str:
    """Convert conversation CSV(s) into a text-only (modality ``"t"``) native corpus; returns its path.

    ``files``: ``{"train": path, "dev": path, "test": path}`` (any subset), one path whose rows
    carry a split column (else all rows are train), or a folder holding per-split CSVs named like
    MELD's ``train_sent_emo.csv`` or EmoryNLP's ``emorynlp_dev_final.csv``. ``preset``: ``"meld"``, ``"emorynlp"`` or
    ``"generic"``; ``label="sentiment"`` on MELD is the 3-way task. ``columns`` overrides column
    names (keys of :class:`CsvLayout`: dialogue, order, speaker, text, label, split). Without a dev
    split, the first ``dev_fraction`` of the train dialogues (file order) become dev.
    ``encoder``: ``"minilm"``, ``"glove"``, ``"hashing"`` (offline baseline),
    ``"hf:<model folder or cached name>"`` (any BERT/RoBERTa-family encoder on disk) or a
    :class:`WordEncoder`. ``intensity``: ``"lexicon"`` (VADER), ``"tagger"`` (``tagger_file``) or
    ``"none"``.
    """
    log = log or logger.info
    out_dir = os.fspath(out_dir)
    if intensity not in INTENSITY_SOURCES:
        raise ValueError(f"intensity must be one of {INTENSITY_SOURCES}, got {intensity!r}")
    if (intensity == "tagger") != (tagger_file is not None):
        raise ValueError("intensity='tagger' needs tagger_file (and tagger_file needs intensity='tagger')")
    if not 0.0 <= dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    columns = dict(columns or {})
    label = columns.pop("label", None) if label is None else label
    layout = preset if isinstance(preset, CsvLayout) else make_layout(preset, label=label, **columns)
    inputs = []
    if isinstance(files, (str, os.PathLike)):
        inputs.append(files)  # a folder of CSVs is itself an input: nothing may be written inside it
        file_map = split_files_in(files) if os.path.isdir(files) else {None: files}
    else:
        file_map = dict(files)
    for split in file_map:
        if split is not None and split not in SPLITS:
            raise ValueError(f"split names are {SPLITS}, got {split!r}")
    from hotspot_erc.data.format import CorpusWriteError, check_not_overlapping, holds_corpus

    check_not_overlapping(out_dir, [*inputs, *file_map.values(), tagger_file])
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise CorpusWriteError(f"cannot write corpus folder {out_dir}: it is a file, not a folder")

    # The model's folder and file digest are in it (a corpus encoded by one model is never reused for
    # another); the device is not, as where the encoder runs does not change what it computes.
    enc_desc = encoder.describe() if isinstance(encoder, WordEncoder) else describe_encoder(
        encoder, **dict(encoder_options or {}))
    fingerprint = _fingerprint(file_map, layout, label_names, enc_desc, intensity, tagger_file, dev_fraction,
                               repair, on_conflict, multi_speaker, feature_dtype)
    cached = _cached(out_dir, fingerprint)
    if cached:
        log(f"{out_dir}: up to date (same inputs, encoder and intensity); features not recomputed")
        return out_dir
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists and holds something else (different inputs or not a corpus); "
                                  "pass overwrite=True (--overwrite) to replace it")
        if not holds_corpus(out_dir):  # refused now, not after minutes of encoding
            raise FileExistsError(f"{out_dir} is not empty and does not hold a hotspot-erc corpus; --overwrite "
                                  "only replaces a corpus: choose an empty or new folder")

    # Optional packages first: a missing extra fails before minutes of reading and encoding.
    enc = encoder if isinstance(encoder, WordEncoder) else get_encoder(encoder, **dict(encoder_options or {}))
    scorer = LexiconScorer() if intensity == "lexicon" else None
    tagged = read_tagger_file(tagger_file) if intensity == "tagger" else None

    table = read_conversation_csv(file_map, layout, label_names=label_names, repair=repair,
                                  on_conflict=on_conflict, multi_speaker=multi_speaker)
    for note in table.notes:
        log(f"note: {note}")
    splits = _splits(table, dev_fraction, log)
    if tagged is not None:
        known = {u.utterance_id for d in table.dialogues for u in d.utterances}
        stray = [uid for uid in tagged if uid not in known]
        if stray:
            first = tagged[stray[0]].where
            raise TaggerFileError(f"{first}: utterance id {stray[0]!r} is not in the CSV(s) ({len(stray)} such "
                                  "ids); ids look like " + ", ".join(sorted(known)[:3]))

    from hotspot_erc.data.format import write_corpus

    meta = {
        "source": {"format": "conversation-csv", "preset": layout.name, "files": {str(k): os.path.abspath(v)
                   for k, v in file_map.items()}, "fingerprint": fingerprint},
        "text": {"frames": "words", "encoder": enc.describe(),
                 "intensity": scorer.describe() if scorer else ({"name": "tagger", "file": os.path.abspath(tagger_file)}
                                                               if tagged is not None else None)},
    }
    total = sum(len(d.utterances) for d in table.dialogues)
    bar = _progress(total, progress, f"encoding words ({enc.name})")
    untagged = []
    try:
        records = _records(table, enc, scorer, tagged, batch_size, bar, untagged)
        write_corpus(out_dir, records, splits, modalities=("t",), dims={"t": enc.dim}, label_names=table.label_names,
                     intensity=intensity != "none", feature_dtype=feature_dtype, overwrite=overwrite, extra_meta=meta)
    finally:
        if bar is not None:
            bar.close()
    if untagged:
        log(f"note: {len(untagged)} utterance(s) absent from the tagger file score 0 (e.g. {untagged[:3]})")
    most = max((len({u.speaker for u in d.utterances}) for d in table.dialogues), default=0)
    if most > 8:
        log(f"note: a dialogue has {most} speakers; train with --num-speakers {most} so each keeps its own "
            "speaker embedding (the default table has 8)")
    oov = getattr(enc, "oov", None)
    if oov is not None and getattr(enc, "seen", 0):
        log(f"note: {oov} of {enc.seen} words ({100.0 * oov / enc.seen:.1f}%) are not in the {enc.name} vocabulary "
            "(zero vectors)")
    unlabelled = sum(u.label is None for d in table.dialogues for u in d.utterances)
    if unlabelled:
        log(f"note: {unlabelled} of {total} utterance(s) have no label (kept as unlabelled context, ignored by "
            "losses and metrics)")
    log(f"wrote {out_dir}: {len(table.dialogues)} dialogues, {total} utterances, "
        f"splits { {k: len(v) for k, v in splits.items()} }, labels {table.label_names}, text dim {enc.dim}")
    return out_dir


def _splits(table: ConversationTable, dev_fraction: float, log) -> dict[str, list[str]]:
    splits: dict[str, list[str]] = {}
    for d in table.dialogues:
        splits.setdefault(d.split, []).append(d.dialogue_id)
    if "dev" not in splits and "train" in splits:
        dev, train = carve_dev(splits["train"], dev_fraction)  # the one rule of data/splits.py
        if dev:
            splits["dev"], splits["train"] = dev, train
            log(f"note: no dev split given; the first {len(dev)} train dialogue(s) (file order) are dev")
    return splits


def _records(table, enc: WordEncoder, scorer, tagged, batch_size: int, bar, untagged) -> Iterator:
    """DialogueRecords, encoded a buffer of about ``batch_size * 8`` utterances at a time."""
    from hotspot_erc.data.format import DialogueRecord

    buffer: list = []
    pending = 0
    for dialogue in table.dialogues:
        buffer.append(dialogue)
        pending += len(dialogue.utterances)
        if pending >= batch_size * 8:
            yield from _encode_buffer(buffer, table, enc, scorer, tagged, batch_size, bar, untagged, DialogueRecord)
            buffer, pending = [], 0
    if buffer:
        yield from _encode_buffer(buffer, table, enc, scorer, tagged, batch_size, bar, untagged, DialogueRecord)


def _encode_buffer(dialogues, table, enc, scorer, tagged, batch_size, bar, untagged, DialogueRecord):
    utts = [u for d in dialogues for u in d.utterances]
    words = [split_words(u.text) for u in utts]
    feats: list = [None] * len(utts)
    # Similar lengths share a batch: less padding for the contextual encoder.
    order = sorted(range(len(utts)), key=lambda i: len(words[i]))
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        for i, vec in zip(idx, enc.encode([words[i] for i in idx])):
            feats[i] = vec
        if bar is not None:
            bar.update(len(idx))
    inten = []
    for u, w in zip(utts, words):
        if scorer is not None:
            inten.append(scorer.score(w))
        elif tagged is not None:
            entry = tagged.get(u.utterance_id)
            if entry is None:
                untagged.append(u.utterance_id)
                inten.append(np.zeros(len(w), dtype=np.float32))
            else:
                inten.append(entry.word_scores(w))
        else:
            inten.append(None)
    label_index = {n: i for i, n in enumerate(table.label_names)}
    pos = 0
    for d in dialogues:
        n = len(d.utterances)
        speakers: dict[str, int] = {}
        yield DialogueRecord(
            dialogue_id=d.dialogue_id,
            speakers=[speakers.setdefault(u.speaker, len(speakers)) for u in d.utterances],
            labels=[label_index[u.label] if u.label is not None else -1 for u in d.utterances],
            features={"t": feats[pos:pos + n]},
            intensity={"t": inten[pos:pos + n]} if scorer is not None or tagged is not None else None,
            utterance_ids=[u.utterance_id for u in d.utterances],
            texts=[u.text for u in d.utterances],
        )
        pos += n


def _progress(total: int, progress: bool | None, desc: str):
    if progress is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    # None: a bar only on a terminal, so logs and CI output stay clean.
    return tqdm(total=total, desc=desc, unit="utt", disable=None if progress is None else False)


def _file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fingerprint(file_map, layout, label_names, enc_desc, intensity, tagger_file, *options) -> str:
    parts = {
        "pipeline": _PIPELINE_VERSION,
        "files": {str(k): _file_digest(v) for k, v in file_map.items() if os.path.isfile(v)},
        "layout": {k: (list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, Mapping) else v))
                   for k, v in vars(layout).items()},
        "label_names": list(label_names) if label_names is not None else None,
        "encoder": enc_desc, "intensity": intensity,
        "tagger": _file_digest(tagger_file) if tagger_file and os.path.isfile(tagger_file) else None,
        "options": list(options),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _cached(out_dir: str, fingerprint: str) -> bool:
    meta_path = os.path.join(out_dir, "meta.json")
    if not os.path.isfile(meta_path):
        return False
    try:
        with open(meta_path) as fh:
            meta = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("source", {}).get("fingerprint") != fingerprint:
        return False
    from hotspot_erc.data.format import CorpusFormatError, open_corpus

    try:
        open_corpus(out_dir, check_values=False)
    except CorpusFormatError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- CLI


def add_csv_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hotspot-erc convert --format conversation-csv`` (mounted by the CLI).

    Options the parser already has (``--dev-fraction``, ``--label-names``, ``--overwrite``,
    ``--feature-dtype`` from the other converters) are shared, not added twice; the output folder is
    ``-o/--output`` or an ``out_dir`` positional the parser already defines.
    """
    from hotspot_erc.data.convert import fraction_arg

    g = parser.add_argument_group("conversation CSV (--format conversation-csv)")

    def add(*flags, **kw):
        if not any(f in parser._option_string_actions for f in flags):
            g.add_argument(*flags, **kw)

    add("--csv", metavar="PATH", help="one CSV holding every split (split column, else all train), or a folder "
                                      "of per-split CSVs (train_sent_emo.csv, emorynlp_dev_final.csv, ...)")
    for split in SPLITS:
        add(f"--{split}", metavar="FILE", dest=f"csv_{split}", help=f"the {split} CSV")
    add("--preset", choices=sorted(k for k in PRESETS if "-" not in k), default="generic",
        help="column layout: meld, emorynlp or generic (default: generic)")
    add("--label", metavar="COLUMN", help="label column; with --preset meld, 'sentiment' is the 3-way task "
                                          "(default: the preset's Emotion column)")
    add("--label-names", metavar="NAMES", help="comma-separated class order (default: the preset's, else the "
                                               "sorted labels found)")
    for key, what in (("dialogue", "dialogue id (comma-separated for a compound key)"),
                      ("order", "utterance index within the dialogue"), ("speaker", "speaker"),
                      ("text", "utterance text"), ("split", "split name")):
        add(f"--{key}-col", metavar="COLUMN", dest=f"col_{key}", help=f"column of the {what}")
    add("--encoder", type=encoder_arg, default="minilm", metavar="{" + ",".join(ENCODERS) + ",hf:DIR}",
        help="word features: minilm (384-d, the [text] extra), glove (50-d, the [text] extra), "
             "hashing (dependency-free baseline, no meaning) or hf:DIR, any BERT/RoBERTa-family "
             "model folder (or a name already in the Hugging Face cache), read offline (default: minilm)")
    add("--hashing-dim", type=int, default=32, metavar="D", help="size of the hashing baseline (default: 32)")
    add("--encoder-device", default="cpu", metavar="DEV", help="device for minilm and hf: (default: cpu)")
    add("--intensity", choices=INTENSITY_SOURCES, default="lexicon",
        help="per-word intensity: lexicon (VADER, the [text] extra), tagger (--tagger-file) or none "
             "(train with --hotspot-source rule/learned) (default: lexicon)")
    add("--tagger-file", metavar="JSONL", help="an external tagger's per-word scores")
    add("--export-words", metavar="JSONL",
        help="only write the words of every utterance, for an external tagger to score, and stop")
    add("--dev-fraction", type=fraction_arg, default=0.1,
        help="share of train dialogues used as dev when no dev split is given (default: 0.1)")
    add("--text-batch-size", type=int, default=64, metavar="N", help="utterances per encoder batch (default: 64)")
    add("--on-conflict", choices=("error", "first"), default="error",
        help="two different rows with the same dialogue and utterance id: error, or keep the first")
    add("--multi-speaker", choices=("joint", "first"), default="joint",
        help="rows naming several speakers: one joint speaker, or the first named")
    add("--no-repair", action="store_true", help="do not repair cp1252 mojibake")
    add("--feature-dtype", choices=("float32", "float16"), default="float32", help="stored feature dtype")
    add("--overwrite", action="store_true", help="replace an existing output folder")
    if not any(a.dest in ("output", "out_dir") for a in parser._actions):
        add("-o", "--output", metavar="DIR", help="output corpus folder")


def encoder_arg(value: str) -> str:
    """``--encoder``: one of :data:`ENCODERS`, or ``hf:`` followed by a folder or cached model name
    (checked when the conversion starts, so ``--help`` and ``--export-words`` need no model)."""
    if value.startswith(HF_PREFIX):
        if not value[len(HF_PREFIX):].strip():
            raise argparse.ArgumentTypeError("hf: needs a model folder or cached model name, e.g. hf:./roberta-base")
        return value
    if value.lower() in ENCODERS:
        return value.lower()
    raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(ENCODERS)}, or hf:DIR)")


def _files_from_args(args) -> dict | str:
    per_split = {s: getattr(args, f"csv_{s}") for s in SPLITS if getattr(args, f"csv_{s}", None)}
    single = getattr(args, "csv", None) or getattr(args, "src", None)  # a SRC positional, where mounted so
    if single and per_split:
        raise ValueError("give either one CSV with a split column (--csv) or --train/--dev/--test, not both")
    if not single and not per_split:
        raise ValueError("no input: give --csv FILE or --train FILE [--dev FILE] [--test FILE]")
    return single or per_split


def run_csv_convert(args) -> int:
    """Run the conversion the parsed ``args`` describe; returns 0 and raises what went wrong (the
    CLI turns it into its exit code and message, as for every converter)."""

    def say(msg: str) -> None:
        print(msg, file=sys.stderr)

    files = _files_from_args(args)
    columns = {k: getattr(args, f"col_{k}") for k in ("dialogue", "order", "speaker", "text", "split")}
    label_names = [n.strip() for n in args.label_names.split(",")] if args.label_names else None
    if args.export_words:
        table = read_conversation_csv(files, make_layout(args.preset, label=args.label, **columns),
                                      label_names=label_names, repair=not args.no_repair,
                                      on_conflict=args.on_conflict, multi_speaker=args.multi_speaker)
        for note in table.notes:
            say(f"note: {note}")
        path = write_word_file(args.export_words, ((u.utterance_id, u.text, split_words(u.text))
                                                   for d in table.dialogues for u in d.utterances))
        say(f"wrote {path}: score each word (0..1) and pass the file back with --intensity tagger --tagger-file")
        return 0
    output = getattr(args, "output", None) or getattr(args, "out_dir", None)
    if not output:
        raise ValueError("no output folder: give -o/--output DIR")
    options = {"dim": args.hashing_dim} if args.encoder == "hashing" else (
        {"device": args.encoder_device} if args.encoder == "minilm" or args.encoder.startswith(HF_PREFIX)
        else {})
    convert_conversation_csv(
        output, files, preset=args.preset, label=args.label, columns=columns, label_names=label_names,
        encoder=args.encoder, encoder_options=options, intensity=args.intensity, tagger_file=args.tagger_file,
        dev_fraction=args.dev_fraction, batch_size=args.text_batch_size, repair=not args.no_repair,
        on_conflict=args.on_conflict, multi_speaker=args.multi_speaker, overwrite=args.overwrite,
        feature_dtype=getattr(args, "feature_dtype", "float32"),
        progress=False if getattr(args, "no_progress", False) else None, log=say)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m hotspot_erc.text.convert``: the conversion of ``hotspot-erc convert
    conversation-csv`` with its options only (``--csv``/``--train``..., ``-o``); errors get the
    CLI's messages and exit codes (its one policy, imported at start-up)."""
    from hotspot_erc.cli import error_exit

    parser = argparse.ArgumentParser(prog="python -m hotspot_erc.text.convert",
                                     description="conversation CSV -> hotspot-erc corpus with word-level text features")
    add_csv_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        return run_csv_convert(args)
    except Exception as exc:  # noqa: BLE001 - error_exit re-raises what is not a user's problem
        return error_exit(exc, "convert")


if __name__ == "__main__":
    raise SystemExit(main())
