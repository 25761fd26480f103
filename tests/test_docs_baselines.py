"""docs/speed-up-baselines.md: its code runs as written (the blocks in order, one namespace)."""
import os
import re

import pytest

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "speed-up-baselines.md")


def blocks(kind):
    with open(DOC, encoding="utf-8") as fh:
        return re.findall(rf"```{kind}\n(.*?)```", fh.read(), flags=re.S)


def test_python_blocks_run():
    code = blocks("python")
    assert len(code) == 3, "the page's three examples"
    namespace = {}
    for block in code:
        exec(compile(block, DOC, "exec"), namespace)  # noqa: S102  (our own documentation)
    assert namespace["h"].shape[1] == 700


def test_import_change_names_real_drop_ins():
    pytest.importorskip("torch_geometric")
    (diff,) = blocks("diff")
    added = [line[1:] for line in diff.splitlines() if line.startswith("+")]
    assert added == ["from hotspot_erc.nn import RGCNConv, TransformerConv"]
    exec(added[0], {})  # noqa: S102
