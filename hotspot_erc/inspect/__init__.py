"""Inspect a trained run: one offline HTML report (and a JSON of the same numbers) that checks the
paper's claims on held-out data and lets a reader open a dialogue and see why the model said what
it said.

``inspect_run(run_dir, corpus=None, split=None, out=None)`` is ``hotspot-erc inspect``. The
sections, each computed in its own module: ``summary``, ``gates`` (HGF's gate against intensity and
the generator's bursts), ``routing`` (MoA's experts against class, speaker, turn), ``alignment``
(where MoA's hotspot queries look), ``edges`` (the graph section: edge families removed at
inference), ``robustness`` (missing modalities, noise), ``cost`` (MoA against plain
cross-attention) and ``dialogues`` (the per-dialogue view); ``collect`` runs the one inspection
pass they share, ``perturb`` the altered passes, ``stats`` the statistics, ``html`` / ``svg`` the
page.
"""
from hotspot_erc.inspect.report import build_report, inspect_run, load_run

__all__ = ["build_report", "inspect_run", "load_run"]
