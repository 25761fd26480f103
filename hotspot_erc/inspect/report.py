"""``hotspot-erc inspect``: load a run folder, compute every section, write the HTML and the JSON.

One pass of the trained model over the split gathers gates, scores, routing, attention and graph
edges (:mod:`~hotspot_erc.inspect.collect`); the ablation and robustness sections run further
passes with the same weights and altered inputs or edges (:mod:`~hotspot_erc.inspect.perturb`).
Errors a user can fix are the CLI's :class:`~hotspot_erc.train.run.UserError` kinds, so the
command exits with the same codes as the others.
"""
from __future__ import annotations

import datetime as _dt
import json
import os

import hotspot_erc
from hotspot_erc.data.dataset import DialogueDataset
from hotspot_erc.data.synthetic_common import burst_frame_roles
from hotspot_erc.inspect import html
from hotspot_erc.inspect.alignment import alignment_section
from hotspot_erc.inspect.collect import collect
from hotspot_erc.inspect.cost import cost_section
from hotspot_erc.inspect.dialogues import dialogue_view
from hotspot_erc.inspect.edges import graph_section
from hotspot_erc.inspect.gates import gate_section
from hotspot_erc.inspect.robustness import robustness_section
from hotspot_erc.inspect.routing import routing_section
from hotspot_erc.inspect.summary import summary_section
from hotspot_erc.train import checkpoint as ckpt
from hotspot_erc.train.batching import eval_loader
from hotspot_erc.train.device import resolve_device
from hotspot_erc.train.model_io import check_corpus_fits, load_model
from hotspot_erc.train.reports import write_json
from hotspot_erc.train.run import (CheckpointProblem, DataError, OutputError, UserError, check_can_create,
                                   check_speakers_fit, count_labelled, open_checked)

REPORT_NAME = "report.html"
MAX_DIALOGUES = 40


def _read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def load_run(run_dir: str, corpus: str | None = None, device: str | None = None) -> dict:
    """The run folder's model (best checkpoint, else last) on ``device`` (default: the run's own
    setting), its settings, corpus and records."""
    if not os.path.isdir(run_dir):
        raise CheckpointProblem(f"run folder {run_dir} does not exist (give the folder `hotspot-erc train` wrote)")
    path = next((os.path.join(run_dir, "checkpoints", n) for n in ("best.safetensors", "last.safetensors")
                 if os.path.isfile(os.path.join(run_dir, "checkpoints", n))), None)
    if path is None:
        raise CheckpointProblem(f"run folder {run_dir} holds no checkpoints/best.safetensors or last.safetensors")
    try:
        model, cfg, ck_cfg = load_model(path, "cpu")
    except ckpt.CheckpointError as exc:
        raise CheckpointProblem(str(exc)) from exc
    try:
        dev = resolve_device(device or cfg.train.device)
    except ValueError as exc:
        raise UserError(f"--device: {exc}") from exc
    config = _read_json(os.path.join(run_dir, "config.json")) or {}
    corpus_path = corpus or config.get("corpus")
    if not corpus_path:
        raise UserError(f"run folder {run_dir} does not name its corpus (config.json); pass --corpus PATH")
    c = open_checked(corpus_path)
    try:
        check_corpus_fits(c, ck_cfg["dims"], ck_cfg["label_names"], model.modalities, f"checkpoint {path}")
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    check_speakers_fit(model, c, path)
    return {"run_dir": os.path.abspath(run_dir), "checkpoint": os.path.abspath(path), "model": model.to(dev),
            "device": dev, "cfg": cfg, "label_names": list(ck_cfg["label_names"]), "corpus_obj": c,
            "corpus": os.path.abspath(c.path), "corpus_name": c.meta.get("name"),
            "config": cfg.to_dict(), "metrics": _read_json(os.path.join(run_dir, "metrics.json")),
            "history": _read_json(os.path.join(run_dir, "history.json")) or []}


def choose_split(corpus, split: str | None, modalities) -> str:
    """``split`` when given (it must exist and hold labelled utterances), else test, else dev."""
    candidates = [split] if split else ["test", "dev"]
    for name in candidates:
        if name not in corpus.splits or len(corpus.splits[name]) == 0:
            continue
        if count_labelled(DialogueDataset(corpus, name, modalities=modalities)) > 0:
            return name
    if split:
        raise DataError(f"--split {split}: corpus {corpus.path} has no labelled utterance in a split of that "
                        f"name (it has {sorted(corpus.splits)})")
    raise DataError(f"corpus {corpus.path} has no labelled test or dev utterance to inspect; pass --split")


def output_paths(run_dir: str, out: str | None) -> tuple[str, str]:
    """(HTML path, JSON path): ``out`` or ``<run_dir>/report.html``, the JSON beside it."""
    out = out or os.path.join(run_dir, REPORT_NAME)
    if not out.lower().endswith(".html"):
        raise UserError(f"-o/--output {out}: the report is an HTML file; give a name ending in .html")
    if os.path.isdir(out):
        raise OutputError(f"-o/--output {out} is a folder; give an .html file name")
    check_can_create(os.path.dirname(os.path.abspath(out)))
    return out, out[:-5] + ".json"


def build_report(run: dict, split: str, batch_size: int = 8, max_dialogues: int = MAX_DIALOGUES, seed: int = 0,
                 log=None) -> dict:
    """Every section's numbers (see the modules of :mod:`hotspot_erc.inspect`)."""
    log = log or (lambda msg: None)
    model, dev, corpus = run["model"], run["device"], run["corpus_obj"]
    ds = DialogueDataset(corpus, split, modalities=model.modalities)
    log(f"inspecting split {split!r} ({len(ds)} dialogues)")
    col = collect(model, ds, dev, run["label_names"], batch_size)
    truth = burst_frame_roles(corpus)
    report = {"summary": summary_section(col, run)}
    report["gates"] = gate_section(col, truth, seed)
    report["routing"] = routing_section(col, run["history"], seed)
    report["alignment"] = alignment_section(col, truth)
    log("graph edges removed at inference")
    report["graph"] = graph_section(model, col, ds, dev, batch_size, run["cfg"].model.graph_scheme)
    log("missing modalities and noise")
    report["robustness"] = robustness_section(model, col, ds, dev, batch_size, run["cfg"].model.modality_dropout,
                                              seed)
    log("MoA against plain cross-attention")
    report["cost"] = cost_section(model, next(iter(eval_loader(ds, batch_size, dev))), dev, run["history"])
    report["dialogues"] = dialogue_view(col, corpus, truth, max_dialogues, seed)
    return report


def _positive_int(value, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{flag} must be an integer >= 1, got {value!r}")
    return value


def inspect_run(run_dir: str, corpus: str | None = None, split: str | None = None, out: str | None = None,
                device: str | None = None, batch_size: int | None = None, max_dialogues: int = MAX_DIALOGUES,
                seed: int = 0, progress: bool | None = None) -> dict:
    """Write ``report.html`` (offline, self-contained) and ``report.json`` (the same numbers) for the
    run in ``run_dir``; returns ``{"html", "json", "report"}``.

    ``corpus`` replaces the corpus the run trained on (it must fit the checkpoint); ``split``
    defaults to test (dev when test has no labels); ``max_dialogues`` caps the per-dialogue view
    (a seeded sample beyond it); ``device``, ``batch_size`` and ``progress`` default to the run's
    own settings.
    """
    _positive_int(max_dialogues, "--max-dialogues")
    if batch_size is not None:
        _positive_int(batch_size, "--batch-size")
    html_path, json_path = output_paths(run_dir, out)
    run = load_run(run_dir, corpus, device)
    batch_size = batch_size or run["cfg"].train.batch_size
    progress = run["cfg"].train.progress if progress is None else progress
    split = choose_split(run["corpus_obj"], split, run["model"].modalities)
    log = (lambda msg: print(f"inspect: {msg}", flush=True)) if progress else None
    report = build_report(run, split, batch_size, max_dialogues, seed, log)
    report.update(written=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  version=hotspot_erc.__version__, json_name=os.path.basename(json_path))
    try:
        os.makedirs(os.path.dirname(os.path.abspath(html_path)), exist_ok=True)
        write_json(json_path, report)
        tmp = html_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(html.page(report))
        os.replace(tmp, html_path)
    except OSError as exc:
        raise OutputError(f"cannot write the report {html_path}: {exc.strerror or exc}") from exc
    return {"html": html_path, "json": json_path, "report": report}


def summary_lines(report: dict) -> list[str]:
    """The findings in a few lines, for the command line."""
    lines = []
    for m, g in report["gates"]["modalities"].items():
        lines.append(f"gate {m}: {g['verdict']}")
    r = report["routing"]
    if r["one_expert"]:
        lines.append("routing: one expert per pair (nothing to route)")
    for pair, p in r["pairs"].items():
        mi = p["mi"]["class"]
        lines.append(f"routing {pair}: MI(expert; class) {mi['mi_bits']:.3f} bits vs shuffled "
                     f"{mi['shuffled_mean']:.3f} (p {mi['p_value']:.3f})")
    for name, v in report["graph"].get("variants", {}).items():
        if "delta" in v:
            lines.append(f"graph {name}: weighted F1 {v['delta']:+.4f} against the full graph")
    return lines
