"""The report in a real browser: headless Chromium (Debian package `chromium`; `make test` installs
it when missing) opens the report.html that `train` wrote for a 2-epoch synthetic run and for a
2-epoch text-only run on a CSV-converted corpus, from file://, with the DevTools protocol."""
import json
import os

import pytest
from headless_chromium import PACKAGE, Browser, find_chromium
from inspect_runs import synthetic_run, text_run

SECTIONS = ("summary", "gates", "routing", "alignment", "graph", "robustness", "cost", "dialogues")

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason=f"headless Chromium not found: install the Debian package {PACKAGE!r} "
                                       "(`make test` installs it when apt-get can run)")


def _state(b):
    return b.eval("""(() => {
        const v = document.getElementById('dialogue-view');
        const first = v.querySelector('.utt');
        const cell = v.querySelector('.cell, .word');
        return {dialogue: v.getAttribute('data-dialogue'), first: first && first.getAttribute('data-utterance'),
                utterances: v.querySelectorAll('.utt').length, colour: cell && cell.style.backgroundColor,
                words: Array.from(v.querySelectorAll('.utt')[0].querySelectorAll('.word')).map(w => w.textContent)};
    })()""")


def _choose(b, select, value):
    b.eval(f"(() => {{ const s = document.getElementById({json.dumps(select)}); s.value = {json.dumps(value)}; "
           "s.dispatchEvent(new Event('change')); })()")


def _check_report(tmp_path, run, name):
    page = os.path.join(run, "report.html")
    with open(os.path.join(run, "report.json")) as fh:
        rep = json.load(fh)
    shown = rep["dialogues"]["dialogues"]
    assert len(shown) >= 2, "the test needs two dialogues to switch between"
    with Browser(str(tmp_path / f"profile-{name}")) as b:
        b.open("file://" + os.path.abspath(page))
        sizes = b.eval("Object.fromEntries(Array.from(document.querySelectorAll('main > section'))"
                       ".map(s => [s.id, s.innerText.trim().length]))")
        assert list(sizes) == list(SECTIONS)
        assert all(n > 60 for n in sizes.values()), sizes
        figures = b.eval("Object.fromEntries(Array.from(document.querySelectorAll('main > section'))"
                         ".map(s => [s.id, s.querySelectorAll('svg, table').length]))")
        assert all(figures[s] > 0 for s in ("summary", "gates", "graph", "robustness")), figures
        assert b.eval("document.getElementById('dialogue-select').options.length") == len(shown)
        before = _state(b)
        assert before["dialogue"] == shown[0]["id"] and before["utterances"] == len(shown[0]["utterances"])
        assert before["first"] == shown[0]["utterances"][0]["id"]
        _choose(b, "dialogue-select", "1")
        after = _state(b)
        assert after["dialogue"] == shown[1]["id"] and after["first"] == shown[1]["utterances"][0]["id"]
        assert after["utterances"] == len(shown[1]["utterances"])
        _choose(b, "colour-by", "gate")
        assert _state(b)["colour"] != after["colour"] or not rep["gates"]["modalities"]
        shot = b.screenshot(str(tmp_path / f"{name}.png"), full_page=True)
        assert b.errors() == []
        assert all(u.startswith("file://") for u in b.requests()), b.requests()
        state = _state(b)
        no_markup = b.eval("document.querySelectorAll('#dialogue-view b, #dialogue-view script').length") == 0
    with open(shot, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    return rep, state, no_markup


def test_synthetic_run_report_in_a_browser(tmp_path, tmp_path_factory):
    rep, _, _ = _check_report(tmp_path, synthetic_run(tmp_path_factory)["run"], "synthetic")
    assert set(rep["gates"]["modalities"]) == {"t", "a", "v"}


def test_text_run_report_in_a_browser(tmp_path, tmp_path_factory):
    rep, state, no_markup = _check_report(tmp_path, text_run(tmp_path_factory)["run"], "text")
    # Text frames are words: the second dialogue's first line shows its own words, as text.
    first = rep["dialogues"]["dialogues"][1]["utterances"][0]["modalities"]["t"]
    assert state["words"] == first["words"] and len(first["words"]) > 1
    assert no_markup  # "<b>" in a transcript is shown as characters, never as markup
    assert "MoA is off" in rep["routing"]["note"] and rep["alignment"]["pairs"] == {}
