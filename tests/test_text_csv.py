"""Conversation CSV reading: the MELD and EmoryNLP layouts, column overrides and messy files.

The CSVs are written here in the exact public layouts, with the damage real copies carry (CRLF,
mojibake, gaps, duplicated rows and row numbers, multi-speaker rows). No optional package needed.
"""
import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotspot_erc.text.csv_reader import (EMORYNLP_EMOTIONS, MELD_EMOTIONS, MELD_SENTIMENTS, CsvFormatError,
                                         make_layout, read_conversation_csv, split_files_in)
from hotspot_erc.text.mojibake import repair_mojibake

MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
               "Season", "Episode", "StartTime", "EndTime"]
EMORY_HEADER = ["Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode",
                "Start_Time", "End_Time"]


def mojibake(text: str) -> str:
    """What a cp1252 round trip does to UTF-8 text (undefined bytes become C1 controls)."""
    return "".join(bytes([b]).decode("latin-1") if b in b"\x81\x8d\x8f\x90\x9d" else bytes([b]).decode("cp1252")
                   for b in text.encode("utf-8"))


def write_csv(path, header, rows, newline="\r\n", encoding="utf-8"):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=newline)
    w.writerow(header)
    w.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


def meld_row(sr, text, speaker, emotion, sentiment, dia, utt):
    return [sr, text, speaker, emotion, sentiment, dia, utt, 3, 7, "00:14:38,127", "00:14:40,378"]


@pytest.fixture
def meld_files(tmp_path):
    train = write_csv(tmp_path / "train_sent_emo.csv", MELD_HEADER, [
        meld_row(1, mojibake("I don’t know — really?"), "Chandler", "surprise", "positive", 0, 0),
        # Rows out of order in the file, a gap (utterance 2 of dialogue 0 is absent) ...
        meld_row(3, "Fine.", "Chandler", "neutral", "neutral", 0, 3),
        meld_row(2, "Oh, no!", "Monica", "sadness", "negative", 0, 1),
        # ... an exact duplicate row, and a duplicated "Sr No." on a different utterance.
        meld_row(2, "Oh, no!", "Monica", "sadness", "negative", 0, 1),
        meld_row(3, "Hey.", "Joey", "joy", "positive", 1, 0),
        meld_row(4, "Hi Joey", "Rachel", "neutral", "neutral", 1, 1),
        meld_row(5, "How you doin'?", "Joey", "joy", "positive", 1, 2),
    ])
    dev = write_csv(tmp_path / "dev_sent_emo.csv", MELD_HEADER, [
        meld_row(1, "What?!", "Ross", "anger", "negative", 0, 0),
        meld_row(2, "Nothing", "Rachel", "fear", "negative", 0, 1),
    ])
    return {"train": train, "dev": dev}


def test_meld_layout(meld_files):
    table = read_conversation_csv(meld_files, "meld")
    assert table.label_names == list(MELD_EMOTIONS)
    assert [d.dialogue_id for d in table.dialogues] == ["train/0", "train/1", "dev/0"]
    d0 = table.dialogues[0]
    # Ordered by utterance id, the gap kept as a gap (no invented row), the duplicate dropped.
    assert [u.order for u in d0.utterances] == [0, 1, 3]
    assert [u.utterance_id for u in d0.utterances] == ["train/dia0_utt0", "train/dia0_utt1", "train/dia0_utt3"]
    assert d0.utterances[0].text == "I don’t know — really?"
    assert [u.label for u in d0.utterances] == ["surprise", "sadness", "neutral"]
    assert [u.speaker for u in d0.utterances] == ["Chandler", "Monica", "Chandler"]
    notes = "\n".join(table.notes)
    assert "repaired mojibake (1)" in notes and "train_sent_emo.csv:2" in notes
    assert "gap in utterance ids" in notes and "lacks id(s) [2]" in notes
    assert "duplicate row dropped (1)" in notes and "train_sent_emo.csv:5" in notes
    assert "duplicated 'Sr No.'" in notes and "train_sent_emo.csv:6" in notes


def test_folder_of_split_files(tmp_path, meld_files):
    assert split_files_in(tmp_path) == {k: str(v) for k, v in meld_files.items()}
    table = read_conversation_csv(tmp_path, "meld")  # a folder works wherever files do
    assert [d.dialogue_id for d in table.dialogues] == ["train/0", "train/1", "dev/0"]
    emory = tmp_path / "emory"
    emory.mkdir()
    for split in ("train", "dev", "test"):
        (emory / f"emorynlp_{split}_final.csv").write_text(",".join(EMORY_HEADER) + "\n")
    (emory / "notes.txt").write_text("not a csv")
    assert sorted(split_files_in(emory)) == ["dev", "test", "train"]
    (emory / "valid.csv").write_text("")
    with pytest.raises(CsvFormatError, match=r"several dev CSVs \['emorynlp_dev_final.csv', 'valid.csv'\]"):
        split_files_in(emory)


def test_meld_sentiment_task(meld_files):
    table = read_conversation_csv(meld_files, make_layout("meld", label="sentiment"))
    assert table.label_names == list(MELD_SENTIMENTS)
    assert [u.label for u in table.dialogues[0].utterances] == ["positive", "negative", "neutral"]


def test_line_numbers_survive_quoted_newlines(tmp_path):
    path = write_csv(tmp_path / "m.csv", MELD_HEADER, [
        meld_row(1, "first line\r\nsecond line", "A", "joy", "positive", 0, 0),
        meld_row(2, "ok", "B", "rage", "negative", 0, 1),
    ])
    with pytest.raises(CsvFormatError, match=r"m\.csv:4: label 'rage' .*'Emotion'"):
        read_conversation_csv({"train": path}, "meld")


def emory_row(text, speaker, emotion, scene, utt, season=1, episode=1):
    return [text, speaker, emotion, scene, utt, season, episode, "00:00:01.000", "00:00:02.000"]


def test_emorynlp_layout(tmp_path):
    path = write_csv(tmp_path / "emorynlp_train_final.csv", EMORY_HEADER, [
        emory_row("We're here!", "['Monica Geller']", "Joyful", 1, 0),
        emory_row("Great.", "['Ross Geller', 'Rachel Green']", "Sad", 1, 1),
        emory_row("Hm.", "['Monica Geller']", "neutral", 1, 2),  # lower-case spelling
        # Same scene number in another episode is another dialogue.
        emory_row("Who?", "['Joey Tribbiani']", "Scared", 1, 0, episode=2),
    ])
    table = read_conversation_csv({"train": path}, "emorynlp")
    assert table.label_names == list(EMORYNLP_EMOTIONS)
    assert [d.dialogue_id for d in table.dialogues] == ["train/1_1_1", "train/1_2_1"]
    d0 = table.dialogues[0]
    assert [u.speaker for u in d0.utterances] == ["Monica Geller", "Ross Geller & Rachel Green", "Monica Geller"]
    assert [u.label for u in d0.utterances] == ["Joyful", "Sad", "Neutral"]
    assert d0.utterances[0].utterance_id == "train/s1_e1_c1_u0"
    assert any("several speakers on one row (joined) (1)" in n and ".csv:3" in n for n in table.notes)
    first = read_conversation_csv({"train": path}, "emorynlp", multi_speaker="first")
    assert first.dialogues[0].utterances[1].speaker == "Ross Geller"


def test_generic_overrides_and_split_column(tmp_path):
    path = write_csv(tmp_path / "mine.csv", ["conv", "turn", "who", "line", "feeling", "part"], [
        ["c1", "1", "A", "hello", "happy", "train"],
        ["c1", "2", "B", "hi", "calm", "train"],
        ["c2", "1", "A", "bye", "sad", "validation"],
        ["c3", "1", "B", "", "calm", "test"],  # empty text: kept, no words
    ], newline="\n")
    layout = make_layout("generic", dialogue="conv", order="turn", speaker="who", text="line", label="feeling",
                         split="part")
    table = read_conversation_csv(path, layout)
    assert table.label_names == ["calm", "happy", "sad"]
    assert table.split_names() == ["train", "dev", "test"]
    assert table.dialogues[2].utterances[0].text == ""
    assert any("empty text" in n and "mine.csv:5" in n for n in table.notes)
    fixed = read_conversation_csv(path, layout, label_names=["sad", "happy", "calm"])
    assert fixed.label_names == ["sad", "happy", "calm"]
    # A file given for one split is that split: its split column is not consulted.
    assert read_conversation_csv({"test": path}, layout).split_names() == ["test"]


def test_single_file_without_split_column_is_train(tmp_path):
    path = write_csv(tmp_path / "one.csv", ["dialogue_id", "utterance_id", "speaker", "text", "label"],
                     [["d", "0", "A", "x", "joy"], ["d", "1", "B", "y", ""]])
    table = read_conversation_csv(path, "generic")
    assert table.split_names() == ["train"]
    assert [u.label for u in table.dialogues[0].utterances] == ["joy", None]  # empty label = unlabelled


def test_missing_column_names_file_and_header(tmp_path):
    path = write_csv(tmp_path / "bad.csv", ["Utterance", "Speaker", "Emotion"], [["x", "A", "joy"]])
    with pytest.raises(CsvFormatError, match=r"bad\.csv:1: missing column\(s\) \['Dialogue_ID'.*the header has"):
        read_conversation_csv({"train": path}, "meld")


def test_bad_utterance_id_and_field_count(tmp_path):
    path = write_csv(tmp_path / "b.csv", MELD_HEADER, [meld_row(1, "x", "A", "joy", "positive", 0, "first")])
    with pytest.raises(CsvFormatError, match=r"b\.csv:2: column 'Utterance_ID' must be an integer"):
        read_conversation_csv({"train": path}, "meld")
    path.write_text(",".join(MELD_HEADER) + "\n1,x,A,joy\n")
    with pytest.raises(CsvFormatError, match=r"b\.csv:2: 4 fields, the header has 11"):
        read_conversation_csv({"train": path}, "meld")
    # Spreadsheet round trips write ids as floats: 3.0 is 3.
    path = write_csv(tmp_path / "f.csv", MELD_HEADER, [meld_row(1, "x", "A", "joy", "positive", 0, "3.0")])
    assert read_conversation_csv({"train": path}, "meld").dialogues[0].utterances[0].order == 3


def test_conflicting_duplicates(tmp_path):
    path = write_csv(tmp_path / "c.csv", MELD_HEADER, [
        meld_row(1, "one", "A", "joy", "positive", 0, 0),
        meld_row(2, "two", "B", "anger", "negative", 0, 0),
    ])
    with pytest.raises(CsvFormatError, match=r"c\.csv:3: utterance 0 of dialogue '0' .*already appeared at .*c\.csv:2"):
        read_conversation_csv({"train": path}, "meld")
    table = read_conversation_csv({"train": path}, "meld", on_conflict="first")
    assert [u.text for u in table.dialogues[0].utterances] == ["one"]
    assert any("first kept" in n for n in table.notes)


def test_cp1252_file_and_bom(tmp_path):
    rows = [meld_row(1, "It’s café time…", "Zoë", "joy", "positive", 0, 0)]
    path = write_csv(tmp_path / "old.csv", MELD_HEADER, rows, encoding="cp1252")
    table = read_conversation_csv({"train": path}, "meld")
    u = table.dialogues[0].utterances[0]
    assert (u.text, u.speaker) == ("It’s café time…", "Zoë")
    assert any("not UTF-8, decoded as cp1252" in n and "old.csv:2" in n for n in table.notes)
    bom = write_csv(tmp_path / "bom.csv", MELD_HEADER, rows, encoding="utf-8-sig")
    assert read_conversation_csv({"train": bom}, "meld").dialogues[0].utterances[0].text == "It’s café time…"


def test_repair_can_be_turned_off(tmp_path):
    path = write_csv(tmp_path / "m.csv", MELD_HEADER, [meld_row(1, mojibake("don’t"), "A", "joy", "positive", 0, 0)])
    table = read_conversation_csv({"train": path}, "meld", repair=False)
    assert table.dialogues[0].utterances[0].text == "donâ€™t"


def test_unknown_preset_and_label_column_override():
    with pytest.raises(ValueError, match="unknown CSV preset 'iemocap'"):
        make_layout("iemocap")
    layout = make_layout("meld", label="Sentiment_2")
    assert layout.label == "Sentiment_2" and layout.label_names is None


@pytest.mark.parametrize("text", ["naïve café", "Zoë’s “quote” — 😀", "plain ascii", "Ünïcödé ß ©",
                                  "€5…"])
def test_mojibake_round_trip(text):
    assert repair_mojibake(mojibake(text)) == text
    assert repair_mojibake(mojibake(mojibake(text))) == text  # damaged twice
    assert repair_mojibake(text) == text  # clean text is left alone
    assert repair_mojibake(text.encode("utf-8").decode("latin-1")) == text


# Typographic punctuation, emoji and CJK (no accented Latin letters: a lead byte followed by
# continuation bytes is genuinely ambiguous, e.g. "é’“" is also the mojibake of one CJK char).
_ALPHABET = st.sampled_from(list("abcXYZ 0123.,!?'\"") + list("’‘“”—–…€™•")
                            + ["😀", "你", "好", "\u00a0"])


@settings(max_examples=60, deadline=None)
@given(st.lists(_ALPHABET, max_size=30).map("".join))
def test_mojibake_property(text):
    assert repair_mojibake(mojibake(text)) == text
    assert repair_mojibake(text) == text
