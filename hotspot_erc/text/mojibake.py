"""Repair of cp1252/latin-1 mojibake: UTF-8 text that was once decoded with the wrong code page.

Older copies of MELD and EmoryNLP show ``â€™`` where the transcript had ``’``: the three UTF-8
bytes of ``’`` (E2 80 99) were read as cp1252 characters and saved again as UTF-8. The repair maps
every character back to the byte it came from and decodes *only* byte runs that form valid UTF-8
multi-byte sequences, so correct text around the damage (and correct accented words such as
"naïve", whose single byte is not a valid sequence) is left alone.
"""
from __future__ import annotations

import re

# Character -> byte of the code pages that produce the damage. cp1252 leaves 0x81, 0x8D, 0x8F, 0x90
# and 0x9D undefined; lenient decoders turn those (and every 0x80-0x9F byte, under latin-1) into
# the C1 control character of the same number, so those map back too.
_TO_BYTE: dict[str, int] = {}
for _b in range(0x80, 0x100):
    try:
        _TO_BYTE[bytes([_b]).decode("cp1252")] = _b
    except UnicodeDecodeError:
        pass
    _TO_BYTE.setdefault(chr(_b), _b)

_SUSPECT_RUN = re.compile("[" + re.escape("".join(sorted(_TO_BYTE))) + "]{2,}")
_UTF8_SEQ = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _repair_run(match: re.Match) -> str:
    run = match.group(0)
    raw = bytes(_TO_BYTE[c] for c in run)
    out, pos = [], 0
    for seq in _UTF8_SEQ.finditer(raw):
        out.append(run[pos:seq.start()])  # bytes and characters line up one to one
        try:
            out.append(seq.group(0).decode("utf-8"))
        except UnicodeDecodeError:  # overlong or surrogate encodings: not mojibake
            out.append(run[seq.start():seq.end()])
        pos = seq.end()
    out.append(run[pos:])
    return "".join(out)


def repair_mojibake(text: str, max_rounds: int = 3) -> str:
    """``text`` with cp1252/latin-1 mojibake undone (repeated for text damaged more than once)."""
    for _ in range(max_rounds):
        fixed = _SUSPECT_RUN.sub(_repair_run, text)
        if fixed == text:
            break
        text = fixed
    return text
