"""Reading conversation CSVs (one row per utterance) into ordered dialogues.

Presets describe the two public layouts users have (MELD and EmoryNLP); any other corpus names its
columns. Real copies of these files are messy, and each problem is either handled, with a note
naming the file and line, or rejected with a :class:`CsvFormatError` naming them:

- CRLF line endings, a UTF-8 byte-order mark, quoted fields spanning lines: read by :mod:`csv`.
- Files that are not UTF-8 at all: decoded as cp1252, with a note.
- cp1252 mojibake inside UTF-8 text (``â€™`` for ``’``): repaired (:mod:`.mojibake`), with a note.
- Gaps in utterance ids: utterances are ordered by id and nothing is invented, with a note.
- The same (dialogue, utterance id) twice: an identical copy is dropped with a note; copies that
  disagree are an error (``on_conflict="first"`` keeps the first with a note instead).
- Duplicated row numbers (MELD's ``Sr No.``): not keys, so only noted.
- Several speakers on one row (EmoryNLP's ``['Ross Geller', 'Rachel Green']``): the group becomes
  one speaker name, with a note (``multi_speaker="first"`` keeps the first named person).
- Empty text: kept as an utterance without words (the text modality is missing for it).
- Empty label: kept as unlabelled context (ignored by losses and metrics), with a note and a count.
- Fields longer than :mod:`csv`'s default limit (131,072 characters): read; the limit is raised to
  the file's size while it is parsed.
- Unknown labels, unknown split names, non-integer utterance ids, missing columns, broken quoting:
  errors naming file, line and column.
"""
from __future__ import annotations

import ast
import contextlib
import csv
import dataclasses
import io
import os
import re
import sys
from typing import Iterable, Mapping, Sequence

from hotspot_erc.data.splits import ALIASES, DEV_ALIASES, SPLIT_WORDS, SPLITS, canonical_split  # noqa: F401 (SPLITS re-exported)
from hotspot_erc.text.mojibake import repair_mojibake

MELD_EMOTIONS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
MELD_SENTIMENTS = ("neutral", "positive", "negative")
EMORYNLP_EMOTIONS = ("Neutral", "Joyful", "Peaceful", "Powerful", "Scared", "Mad", "Sad")
SPLIT_ALIASES = ALIASES  # kept for imports written before hotspot_erc.data.splits
# Notes of one kind beyond this many are counted, not listed.
_MAX_LISTED = 5


class CsvFormatError(ValueError):
    """A conversation CSV cannot be read as asked; the message names the file, line and column."""


@dataclasses.dataclass(frozen=True)
class CsvLayout:
    """Which columns hold what. ``dialogue`` may name several columns that together identify a
    dialogue (EmoryNLP: season, episode, scene). ``label_names`` fixes the class order; None means
    the sorted labels found in the files. ``label_aliases`` maps spellings in the file to names."""

    name: str
    dialogue: tuple[str, ...]
    order: str | None
    speaker: str
    text: str
    label: str | None
    split: str | None = None
    row_number: str | None = None
    label_names: tuple[str, ...] | None = None
    label_aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    id_format: str = "{dialogue}_u{order}"


PRESETS: dict[str, CsvLayout] = {
    "meld": CsvLayout(
        name="meld", dialogue=("Dialogue_ID",), order="Utterance_ID", speaker="Speaker",
        text="Utterance", label="Emotion", row_number="Sr No.", label_names=MELD_EMOTIONS,
        # MELD's own file and video names: dia<D>_utt<U>.
        id_format="dia{dialogue}_utt{order}",
    ),
    "meld-sentiment": CsvLayout(
        name="meld-sentiment", dialogue=("Dialogue_ID",), order="Utterance_ID", speaker="Speaker",
        text="Utterance", label="Sentiment", row_number="Sr No.", label_names=MELD_SENTIMENTS,
        id_format="dia{dialogue}_utt{order}",
    ),
    "emorynlp": CsvLayout(
        name="emorynlp", dialogue=("Season", "Episode", "Scene_ID"), order="Utterance_ID", speaker="Speaker",
        text="Utterance", label="Emotion", label_names=EMORYNLP_EMOTIONS,
        label_aliases={n.lower(): n for n in EMORYNLP_EMOTIONS},
        id_format="s{Season}_e{Episode}_c{Scene_ID}_u{order}",
    ),
    "generic": CsvLayout(
        name="generic", dialogue=("dialogue_id",), order="utterance_id", speaker="speaker", text="text",
        label="label", split="split",
    ),
}


def make_layout(preset: str = "generic", *, label: str | None = None, **overrides) -> CsvLayout:
    """A preset with columns overridden. ``label="sentiment"`` on MELD picks the 3-way task;
    any other ``label`` is a column name. ``dialogue`` may be a comma-separated string."""
    key = preset.lower()
    if key == "meld" and label is not None and label.lower() == "sentiment":
        key, label = "meld-sentiment", None
    elif key == "meld" and label is not None and label.lower() == "emotion":
        label = None
    if key not in PRESETS:
        raise ValueError(f"unknown CSV preset {preset!r}; presets are {sorted(PRESETS)}")
    layout = PRESETS[key]
    changes = {k: v for k, v in overrides.items() if v is not None}
    if label is not None:
        changes["label"] = label
        changes.setdefault("label_names", None)  # another column: its classes are not the preset's
        changes.setdefault("label_aliases", {})
    if isinstance(changes.get("dialogue"), str):
        changes["dialogue"] = tuple(c.strip() for c in changes["dialogue"].split(",") if c.strip())
    if "label_names" in changes and changes["label_names"] is not None:
        changes["label_names"] = tuple(changes["label_names"])
    if "dialogue" in changes and "id_format" not in changes:
        changes["id_format"] = "{dialogue}_u{order}"
    return dataclasses.replace(layout, **changes)


@dataclasses.dataclass
class Utterance:
    """One row after cleaning. ``label`` is the canonical class name or None (unlabelled)."""

    split: str
    dialogue: str
    order: int
    speaker: str
    text: str
    label: str | None
    utterance_id: str
    source: str  # "file:line", for messages


@dataclasses.dataclass
class Dialogue:
    dialogue_id: str
    split: str
    utterances: list[Utterance]


@dataclasses.dataclass
class ConversationTable:
    """Dialogues in file order (utterances in turn order), the class names, and the notes taken."""

    dialogues: list[Dialogue]
    label_names: list[str]
    notes: list[str]

    def split_names(self) -> list[str]:
        seen: list[str] = []
        for d in self.dialogues:
            if d.split not in seen:
                seen.append(d.split)
        return seen


class _Notes:
    """Collects notes by kind so a file with 10,000 mojibake rows gives one readable line."""

    def __init__(self):
        self._kinds: dict[str, list[str]] = {}

    def add(self, kind: str, where: str) -> None:
        self._kinds.setdefault(kind, []).append(where)

    def lines(self) -> list[str]:
        out = []
        for kind, where in self._kinds.items():
            shown = ", ".join(where[:_MAX_LISTED])
            more = f" and {len(where) - _MAX_LISTED} more" if len(where) > _MAX_LISTED else ""
            out.append(f"{kind} ({len(where)}): {shown}{more}")
        return out


def split_files_in(directory: str | os.PathLike) -> dict[str, str]:
    """The train/dev/test CSVs of a folder, recognised by name: ``train_sent_emo.csv`` (MELD),
    ``emorynlp_dev_final.csv`` (EmoryNLP), ``valid.csv``, ... One file per split at most."""
    directory = os.fspath(directory)
    found: dict[str, list[str]] = {s: [] for s in SPLITS}
    for name in sorted(os.listdir(directory)):
        if not name.lower().endswith(".csv"):
            continue
        tokens = set(re.split(r"[^a-z]+", name.lower()[:-4]))
        for split, words in SPLIT_WORDS.items():
            if tokens & set(words):
                found[split].append(os.path.join(directory, name))
    for split, paths in found.items():
        if len(paths) > 1:
            raise CsvFormatError(f"{directory}: several {split} CSVs {[os.path.basename(p) for p in paths]}; "
                                 "name the files with --train/--dev/--test")
    files = {split: paths[0] for split, paths in found.items() if paths}
    if not files:
        raise CsvFormatError(f"{directory}: no CSV named for a split (train/dev/test) in this folder")
    return files


def read_conversation_csv(
    files: Mapping[str, str | os.PathLike] | str | os.PathLike,
    layout: CsvLayout | str = "generic",
    *,
    label_names: Sequence[str] | None = None,
    repair: bool = True,
    on_conflict: str = "error",
    multi_speaker: str = "joint",
) -> ConversationTable:
    """Read one CSV per split (``{"train": path, ...}``), one CSV with a split column, or a folder
    of per-split CSVs (:func:`split_files_in`).

    A single file without a split column is all ``"train"``. ``label_names`` fixes the class order
    (default: the preset's, else the sorted labels found). Rows with an empty label are kept as
    unlabelled context (label None).
    """
    if isinstance(layout, str):
        layout = make_layout(layout)
    if on_conflict not in ("error", "first"):
        raise ValueError(f"on_conflict must be 'error' or 'first', got {on_conflict!r}")
    if multi_speaker not in ("joint", "first"):
        raise ValueError(f"multi_speaker must be 'joint' or 'first', got {multi_speaker!r}")
    if isinstance(files, (str, os.PathLike)):
        files = split_files_in(files) if os.path.isdir(files) else {None: files}
    notes = _Notes()
    rows: list[Utterance] = []
    for split, path in files.items():
        rows.extend(_read_file(os.fspath(path), split, layout, notes, repair, multi_speaker))

    names = list(label_names) if label_names is not None else (
        list(layout.label_names) if layout.label_names is not None else None)
    found = sorted({u.label for u in rows if u.label is not None})
    if names is None:
        names = found
    else:
        known = {n: n for n in names}
        known.update({n.lower(): n for n in names})
        for u in rows:
            if u.label is not None:
                canon = known.get(u.label, known.get(u.label.lower()))
                if canon is None:
                    raise CsvFormatError(f"{u.source}: label {u.label!r} (column {layout.label!r}) is not one of "
                                         f"{names}; pass label_names / --label-names to set the classes")
                u.label = canon
    if not names:
        raise CsvFormatError(f"no labelled rows in {', '.join(map(str, files.values()))}: cannot build a class list")
    dialogues = _group(rows, notes, on_conflict)
    return ConversationTable(dialogues=dialogues, label_names=names, notes=notes.lines())


def _decode(path: str, notes: _Notes) -> str:
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        notes.add("not UTF-8, decoded as cp1252", f"{path}:{line}")
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        # cp1252 leaves five bytes undefined; map them to the C1 control of the same number.
        return "".join(bytes([b]).decode("latin-1") if b in b"\x81\x8d\x8f\x90\x9d" else bytes([b]).decode("cp1252")
                       for b in raw)


@contextlib.contextmanager
def _field_limit(size: int):
    """csv refuses fields over 131,072 characters by default; no field can be longer than the
    file, so allow that much while this file is parsed (and restore the process-wide limit)."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(max(old, size + 1), sys.maxsize))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _read_file(path: str, split: str | None, layout: CsvLayout, notes: _Notes, repair: bool,
               multi_speaker: str) -> list[Utterance]:
    if not os.path.isfile(path):
        raise CsvFormatError(f"{path}: no such file" if not os.path.exists(path) else f"{path}: not a file")
    try:
        text = _decode(path, notes)
    except OSError as exc:
        raise CsvFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with _field_limit(len(text)):
        try:
            return _parse(text, path, split, layout, notes, repair, multi_speaker)
        except csv.Error as exc:
            raise CsvFormatError(f"{path}: not a readable CSV ({exc})") from None


def _parse(text: str, path: str, split: str | None, layout: CsvLayout, notes: _Notes, repair: bool,
           multi_speaker: str) -> list[Utterance]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvFormatError(f"{path}: empty file (expected a header row)") from None
    header = [h.strip() for h in header]
    col = {h: i for i, h in enumerate(header)}
    needed = [*layout.dialogue, layout.speaker, layout.text]
    if layout.order:
        needed.append(layout.order)
    if layout.label:
        needed.append(layout.label)
    missing = [c for c in needed if c not in col]
    if missing:
        raise CsvFormatError(
            f"{path}:1: missing column(s) {missing} for the {layout.name!r} layout; the header has {header}. "
            "Pick another preset or name the columns (--dialogue-col, --order-col, --speaker-col, "
            "--text-col, --label-col)")
    # A file given for one split is that split, whatever columns it has.
    split_col = col.get(layout.split) if layout.split and split is None else None
    if split is None and split_col is None:
        split = "train"
    rownum_col = col.get(layout.row_number) if layout.row_number else None
    seen_rownum: dict[str, str] = {}
    out = []
    line = 1  # reader.line_num counts physical lines, so a quoted newline keeps positions right
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise CsvFormatError(f"{path}:{reader.line_num}: {exc}") from None
        start, line = line + 1, reader.line_num
        where = f"{path}:{start}"
        if not any(f.strip() for f in fields):
            continue  # blank line (often a trailing CRLF)
        if len(fields) != len(header):
            raise CsvFormatError(f"{where}: {len(fields)} fields, the header has {len(header)} "
                                 "(an unquoted comma or a broken quote?)")

        def get(name: str) -> str:
            value = fields[col[name]].strip()
            if repair:
                fixed = repair_mojibake(value)
                if fixed != value:
                    notes.add("repaired mojibake", f"{where} ({name})")
                    value = fixed
            return value

        key_parts = {c: get(c) for c in layout.dialogue}
        if any(v == "" for v in key_parts.values()):
            empty = [c for c, v in key_parts.items() if v == ""]
            raise CsvFormatError(f"{where}: empty dialogue column(s) {empty}")
        dialogue = "_".join(key_parts.values())
        if layout.order:
            raw_order = get(layout.order)
            # Spreadsheet round-trips write 3 as "3.0"; anything else non-integral is an error.
            order = int(raw_order) if re.fullmatch(r"-?\d+", raw_order) else (
                int(float(raw_order)) if re.fullmatch(r"-?\d+\.0*", raw_order) else None)
            if order is None:
                raise CsvFormatError(f"{where}: column {layout.order!r} must be an integer utterance index, "
                                     f"got {raw_order!r}") from None
        else:
            order = len(out)  # file order
        row_split = split
        if split_col is not None:
            raw_split = fields[split_col].strip()
            if not raw_split:
                raise CsvFormatError(f"{where}: empty split column {layout.split!r}")
            row_split = canonical_split(raw_split)
            if row_split is None:
                # A typo ("tset") would otherwise become a fourth split that nothing trains or tests on.
                raise CsvFormatError(f"{where}: unknown split {raw_split!r} in column {layout.split!r}; splits are "
                                     f"{', '.join(SPLITS)} (or {', '.join(DEV_ALIASES)} for dev)")
        speaker = _speaker(get(layout.speaker), where, notes, multi_speaker)
        label = get(layout.label) if layout.label else ""
        if layout.label and not label:
            notes.add("empty label (kept as unlabelled context)", where)
        if label and layout.label_aliases:
            label = layout.label_aliases.get(label.lower(), label)
        if rownum_col is not None:
            rn = fields[rownum_col].strip()
            if rn in seen_rownum:
                notes.add(f"duplicated {layout.row_number!r} (not used as a key)",
                          f"{where} (first at {seen_rownum[rn]})")
            else:
                seen_rownum[rn] = where
        uid = layout.id_format.format(dialogue=dialogue, order=order, **key_parts)
        utt_text = get(layout.text)
        if not utt_text:
            notes.add("empty text (kept, no words)", where)
        out.append(Utterance(split=row_split, dialogue=dialogue, order=order, speaker=speaker, text=utt_text,
                             label=label or None, utterance_id=f"{row_split}/{uid}", source=where))
    return out


def _speaker(value: str, where: str, notes: _Notes, multi_speaker: str) -> str:
    if value.startswith("[") and value.endswith("]"):
        try:
            names = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise CsvFormatError(f"{where}: speaker {value!r} looks like a list but does not parse") from None
        names = [str(n).strip() for n in names if str(n).strip()]
        if len(names) > 1:
            notes.add("several speakers on one row" + (" (joined)" if multi_speaker == "joint" else " (first kept)"),
                      where)
            return " & ".join(names) if multi_speaker == "joint" else names[0]
        return names[0] if names else ""
    return value


def _group(rows: Iterable[Utterance], notes: _Notes, on_conflict: str) -> list[Dialogue]:
    by_key: dict[tuple[str, str], dict[int, Utterance]] = {}
    for u in rows:
        slots = by_key.setdefault((u.split, u.dialogue), {})
        prev = slots.get(u.order)
        if prev is None:
            slots[u.order] = u
            continue
        same = (prev.speaker, prev.text, prev.label) == (u.speaker, u.text, u.label)
        if same:
            notes.add("duplicate row dropped", f"{u.source} (copy of {prev.source})")
        elif on_conflict == "first":
            notes.add("conflicting duplicate utterance id, first kept", f"{u.source} (vs {prev.source})")
        else:
            raise CsvFormatError(
                f"{u.source}: utterance {u.order} of dialogue {u.dialogue!r} ({u.split}) already appeared at "
                f"{prev.source} with different content; fix the file or pass on_conflict='first' "
                "(--on-conflict first) to keep the first")
    # Ids start at 0 (MELD) or 1 depending on the corpus: gaps count from the smallest id seen.
    base = min((min(slots) for slots in by_key.values()), default=0)
    dialogues = []
    for (split, dia), slots in by_key.items():
        orders = sorted(slots)
        missing = sorted(set(range(base, orders[-1] + 1)) - set(orders))
        if missing:
            first = slots[orders[0]].source.rsplit(":", 1)[0]
            notes.add("gap in utterance ids (ordered by id, nothing invented)",
                      f"{first} dialogue {dia!r} ({split}) lacks id(s) {missing[:8]}")
        dialogues.append(Dialogue(dialogue_id=f"{split}/{dia}", split=split, utterances=[slots[o] for o in orders]))
    return dialogues
