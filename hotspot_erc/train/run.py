"""End-to-end workflows behind the CLI: train a run folder, evaluate or apply a checkpoint, ablate.

Each function raises :class:`UserError` subclasses for problems a user can fix (bad corpus,
checkpoint, output folder, settings); the CLI turns them into a message and an exit code.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import statistics
import time

import numpy as np

from hotspot_erc.data.dataset import DialogueDataset
from hotspot_erc.data.format import open_corpus
from hotspot_erc.data.synthetic import generate_synthetic_corpus
from hotspot_erc.train import checkpoint as ckpt
from hotspot_erc.train.config import RunConfig, validate
from hotspot_erc.train.metrics import evaluate_predictions
from hotspot_erc.train.probes import context_split_accuracy, linear_probes, matched_burst_attention
from hotspot_erc.train.reports import Diagnostics, collapse_warnings, write_json, write_report
from hotspot_erc.train.trainer import (BEST, DistInfo, Trainer, TrainingDiverged, check_corpus_fits,
                                       checkpoint_config, init_distributed, load_model, predict, resolve_device)

PREDICTION_FORMATS = (".json", ".csv")


class UserError(Exception):
    """A problem with the user's input; ``exit_code`` tells the CLI how to exit (the policy is in
    :mod:`hotspot_erc.cli`'s docstring): 2 arguments or settings."""

    exit_code = 2


class DataError(UserError):
    """3: a corpus or source file is missing, unreadable or inconsistent."""

    exit_code = 3


class CheckpointProblem(UserError):
    """4: a checkpoint is missing, corrupt, edited or does not fit."""

    exit_code = 4


class OutputError(UserError):
    """5: an output location cannot be written, or holds something we refuse to replace."""

    exit_code = 5


class DivergedError(UserError):
    """6: training stopped because the loss or the weights became NaN/Inf."""

    exit_code = 6


# ----------------------------------------------------------------------------- corpus & folders

def prepare_corpus(data_cfg, progress: bool = True) -> str:
    """Path of the corpus a run uses; the synthetic corpus is generated first when absent."""
    if data_cfg.synthetic:
        path = data_cfg.synthetic_dir
        if progress:
            print(f"synthetic corpus ({data_cfg.synthetic_kind}): {os.path.abspath(path)}", flush=True)
        try:
            # The kind is part of the recipe saved with the corpus: a folder holding the other story
            # is regenerated, never reused.
            return generate_synthetic_corpus(path, num_dialogues=data_cfg.synthetic_dialogues,
                                             seed=data_cfg.synthetic_seed, kind=data_cfg.synthetic_kind)
        except OSError as exc:  # a folder holding something else, read-only, full disk
            raise OutputError(f"cannot create the synthetic corpus in {path}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise DataError(f"cannot create the synthetic corpus in {path}: {exc}") from exc
    if not data_cfg.corpus:
        raise UserError("no corpus given: pass --corpus PATH (a folder in the native format, see "
                        "`hotspot-erc convert`) or --synthetic")
    return data_cfg.corpus


def open_checked(path: str):
    if not os.path.exists(path):
        raise DataError(f"corpus folder {path} does not exist")
    try:
        return open_corpus(path)
    except (ValueError, OSError, KeyError) as exc:  # CorpusFormatError is a ValueError
        raise DataError(f"cannot open corpus {path}: {exc}") from exc


def dataset(corpus, split: str, modalities, labelled: bool = False):
    """The dialogues of ``split``; with ``labelled``, refuse a split without any labelled utterance
    (its metrics would be a meaningless 0.0)."""
    if split not in corpus.splits:
        raise DataError(f"corpus {corpus.path} has no split {split!r} (it has {sorted(corpus.splits)})")
    ds = DialogueDataset(corpus, split, modalities=modalities)
    if len(ds) == 0:
        raise DataError(f"split {split!r} of corpus {corpus.path} is empty")
    if labelled and count_labelled(ds) == 0:
        raise DataError(f"split {split!r} of corpus {corpus.path} has no labelled utterance (every label is -1): "
                        "nothing to learn from or to score; label it, or use `predict` for unlabelled data")
    return ds


def count_labelled(ds) -> int:
    c = ds.corpus
    return int(sum((np.asarray(c.label[slice(*c.dialogue_utterances(int(d)))]) >= 0).sum() for d in ds.indices))


def choose_run_dir(run_dir: str | None, root: str = "runs", prefix: str = "") -> str:
    """``run_dir``, or a new ``<root>/<prefix><UTC timestamp>``; checks it could be created (creates nothing)."""
    if run_dir is None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_dir = os.path.join(root, prefix + stamp)
        n = 1
        while os.path.exists(run_dir):
            n += 1
            run_dir = os.path.join(root, f"{prefix}{stamp}-{n}")
    check_can_create(run_dir)
    return run_dir


def make_run_dir(run_dir: str | None, root: str = "runs", prefix: str = "") -> str:
    """Create (and prove writable) ``run_dir``, by default ``runs/<UTC timestamp>``."""
    run_dir = choose_run_dir(run_dir, root, prefix)
    ensure_writable(run_dir)
    return run_dir


def check_can_create(folder: str) -> None:
    """Refuse early (before minutes of work) a folder that is a file or lies under a file or a
    read-only folder; the folder itself is not created."""
    path = os.path.abspath(folder)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"output folder {folder} is a file, not a folder")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputError(f"output folder {folder} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} is not writable: {parent} is read-only for this user")


def ensure_writable(folder: str) -> None:
    check_can_create(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"output folder {folder} is not writable: {exc.strerror or exc}") from exc


def output_error(exc: OSError, what: str) -> OutputError:
    return OutputError(f"cannot write {what}: {exc.strerror or exc}"
                       + (f" ({exc.filename})" if getattr(exc, "filename", None) else ""))


# ----------------------------------------------------------------------------- train

def train(cfg: RunConfig, run_dir: str | None = None, resume: bool = False, callbacks=(),
          dist_info: DistInfo | None = None, root: str = "runs", plots: bool | None = None) -> dict:
    """Train, pick the best dev epoch, evaluate on test and write the run folder (without the
    PNG plots when ``plots=False``; default: ``cfg.train.plots``).

    Returns ``{"run_dir", "metrics", "files"}`` (``files`` only on rank 0).
    """
    try:
        validate(cfg)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    dist_info = dist_info or init_distributed(cfg.train.device)
    if resume and run_dir is None:
        raise UserError("--resume needs --run-dir: the run folder to continue")
    if resume and not os.path.isfile(os.path.join(run_dir, "checkpoints", "last.safetensors")):
        raise CheckpointProblem(f"cannot resume: {run_dir} holds no checkpoints/last.safetensors")
    if run_dir is not None and not resume and os.path.exists(os.path.join(run_dir, "checkpoints", "last.safetensors")):
        raise OutputError(f"{run_dir} already holds a run (checkpoints/last.safetensors); continue it with "
                          "--resume or choose another --run-dir (its checkpoints are never overwritten)")
    # Everything that can be refused is checked before the run folder exists, so a rejected
    # configuration leaves no empty folder behind.
    if dist_info.is_main:
        run_dir = choose_run_dir(run_dir, root)
    if dist_info.enabled:
        import torch.distributed as dist

        holder = [run_dir]
        dist.broadcast_object_list(holder, src=0)
        run_dir = holder[0]
    corpus = open_checked(prepare_corpus(cfg.data, progress=cfg.train.progress and dist_info.is_main))
    mods = tuple(cfg.model.modalities)
    missing = [m for m in mods if m not in corpus.modalities]
    if missing:
        raise DataError(f"--modalities {cfg.model.modalities} asks for {missing}, but corpus {corpus.path} "
                        f"has only {''.join(corpus.modalities)}")
    if cfg.model.hotspot_source == "data" and any(corpus.intensity[m] is None for m in mods):
        raise DataError(f"--hotspot-source data needs per-frame intensity for {list(mods)}, but corpus "
                        f"{corpus.path} lacks it for some; use --hotspot-source rule or learned")
    train_set, dev_set = dataset(corpus, "train", mods, labelled=True), dataset(corpus, "dev", mods, labelled=True)
    test_set = None
    test_note = None
    if "test" in corpus.splits and len(corpus.splits["test"]) > 0:
        test_set = dataset(corpus, "test", mods)
        if count_labelled(test_set) == 0:
            test_set, test_note = None, "the test split has no labelled utterance: diagnostics are computed on dev"
    else:
        test_note = "the corpus has no test split: diagnostics are computed on dev"
    dims = {m: int(corpus.dims[m]) for m in mods}
    labels = list(corpus.label_names)
    try:
        trainer = Trainer(cfg, train_set, dev_set, labels, dims, run_dir=run_dir, resume=resume,
                          callbacks=callbacks, dist_info=dist_info)
    except ckpt.CheckpointError as exc:
        raise CheckpointProblem(str(exc)) from exc
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    cfg = trainer.cfg  # with the speaker table sized from the corpus
    if dist_info.is_main:  # only now: a refused resume must leave the run folder as it was
        ensure_writable(run_dir)
        try:
            write_json(os.path.join(run_dir, "config.json"),
                       {**checkpoint_config(cfg, dims, labels), "corpus": os.path.abspath(corpus.path)})
        except OSError as exc:
            raise output_error(exc, f"the run folder {run_dir}") from exc
    t0 = time.perf_counter()
    try:
        history = trainer.fit()
    except ckpt.CheckpointError as exc:
        raise OutputError(str(exc)) from exc
    except TrainingDiverged as exc:
        raise DivergedError(str(exc)) from exc
    metrics = {"best_epoch": trainer.best_epoch, "epochs_run": len(history), "train_seconds": time.perf_counter() - t0,
               "world_size": dist_info.world_size, "device": str(trainer.device)}
    if not dist_info.is_main:
        return {"run_dir": run_dir, "metrics": metrics, "files": {}}
    dev = trainer.evaluate(dev_set, desc="dev")
    metrics["dev"] = dev["metrics"]
    diag = Diagnostics(mods, len(labels))
    trainer.model.inspect = True  # the diagnostics pass also measures where MoA attention looks
    try:
        if test_set is not None:
            test = trainer.evaluate(test_set, diagnostics=diag, desc="test")
            metrics["test"] = test["metrics"]
            write_predictions(os.path.join(run_dir, "predictions_test.csv"), test, labels)
        else:
            trainer.evaluate(dev_set, diagnostics=diag, desc="dev")
            metrics["test"] = None
            metrics["note"] = test_note
    finally:
        trainer.model.inspect = False
    metrics["diagnostics"] = diag.summary()
    metrics["diagnostics"]["probes"] = linear_probes(trainer.model, train_set, dev_set, trainer.device, labels,
                                                     batch_size=cfg.train.batch_size)
    aligned = matched_burst_attention(trainer.model, dev_set, trainer.device, batch_size=cfg.train.batch_size)
    if aligned is not None:  # alignment-story corpora only: does MoA find the key-matched burst?
        metrics["diagnostics"]["matched_burst_attention"] = aligned
    split = context_split_accuracy(dev_set.corpus, test if test_set is not None else dev)
    if split is not None:  # ... and does the graph read the cue-less utterances from context?
        metrics["diagnostics"]["cued_cueless_accuracy"] = {"split": "test" if test_set is not None else "dev", **split}
    metrics["warnings"] = collapse_warnings(metrics["diagnostics"])
    try:
        files = write_report(run_dir, metrics, history, diag, labels,
                             plots=cfg.train.plots if plots is None else plots)
    except OSError as exc:
        raise output_error(exc, f"the report in {run_dir}") from exc
    files["best_checkpoint"] = os.path.join(trainer.checkpoint_dir, BEST)
    return {"run_dir": run_dir, "metrics": metrics, "files": files}


# ----------------------------------------------------------------------------- evaluate / predict

def _load(checkpoint: str, **train_settings):
    """The checkpoint's model, on the device its settings name, and its RunConfig with the given
    ``[train]`` settings (those not None) in place of the stored ones: evaluation runs with the
    settings the model was trained with unless told otherwise, never with defaults of its own.
    Returns (model, RunConfig, checkpoint config dict, device)."""
    try:
        model, cfg, ck_cfg = load_model(checkpoint, "cpu")
    except ckpt.CheckpointError as exc:
        raise CheckpointProblem(str(exc)) from exc
    for name, value in train_settings.items():
        if value is not None:
            setattr(cfg.train, name, value)
    try:
        validate(cfg)
        dev = resolve_device(cfg.train.device)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    return model.to(dev), cfg, ck_cfg, dev


def check_speakers_fit(model, corpus, checkpoint: str) -> None:
    """A checkpoint's speaker table must cover the corpus' speaker ids (the model would refuse
    them mid-run otherwise)."""
    table = getattr(model, "num_speakers", None)
    spk = np.asarray(corpus.speaker)
    if table is not None and getattr(model, "use_graph", True) and spk.size and int(spk.max()) >= table:
        raise DataError(f"corpus {corpus.path} has a dialogue with speaker id {int(spk.max())}, but checkpoint "
                        f"{checkpoint} was trained with a speaker table of {table} (ids 0..{table - 1})")


def check_prediction_path(path: str) -> str:
    """The output format of ``predict -o``, from the extension; anything else is refused rather
    than guessed."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in PREDICTION_FORMATS:
        raise UserError(f"-o/--output {path}: the file name must end in .json or .csv (the format is chosen "
                        f"by extension), got {ext or 'no extension'!r}")
    if os.path.isdir(path):
        raise OutputError(f"-o/--output {path} is a folder; give a .json or .csv file name")
    check_can_create(os.path.dirname(os.path.abspath(path)))
    return ext[1:]


def evaluate(checkpoint: str, corpus_path: str, split: str = "test", out_dir: str | None = None,
             device: str | None = None, batch_size: int | None = None, progress: bool | None = None,
             num_workers: int | None = None) -> dict:
    """Metrics of a checkpoint on one split; with ``out_dir``, also the report files. ``device``,
    ``batch_size``, ``progress`` and ``num_workers`` default to the checkpoint's settings."""
    if out_dir is not None:
        check_can_create(out_dir)
    model, cfg, ck_cfg, dev = _load(checkpoint, device=device, batch_size=batch_size, progress=progress,
                                    num_workers=num_workers)
    corpus = open_checked(corpus_path)
    try:
        check_corpus_fits(corpus, ck_cfg["dims"], ck_cfg["label_names"], model.modalities, f"checkpoint {checkpoint}")
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    check_speakers_fit(model, corpus, checkpoint)
    ds = dataset(corpus, split, model.modalities, labelled=True)
    if out_dir is not None:
        ensure_writable(out_dir)
    labels = ck_cfg["label_names"]
    diag = Diagnostics(model.modalities, len(labels))
    res = predict(model, ds, dev, batch_size=cfg.train.batch_size, amp=cfg.train.amp, diagnostics=diag,
                  progress=cfg.train.progress, desc=split, num_workers=cfg.train.num_workers)
    metrics = {"checkpoint": os.path.abspath(checkpoint), "corpus": os.path.abspath(corpus.path), "split": split,
               split: evaluate_predictions(res["labels"], res["preds"], labels)}
    metrics["diagnostics"] = diag.summary()
    metrics["warnings"] = collapse_warnings(metrics["diagnostics"])
    if out_dir is not None:
        report_metrics = {**metrics, "test": metrics[split]}
        try:
            metrics["files"] = write_report(out_dir, report_metrics, [], diag, labels)
        except OSError as exc:
            raise output_error(exc, f"the report in {out_dir}") from exc
        write_predictions(os.path.join(out_dir, f"predictions_{split}.csv"), res, labels)
    return metrics


def write_predictions(path: str, res: dict, label_names, fmt: str | None = None) -> str:
    """Per-utterance predictions and class probabilities as CSV or JSON (by extension)."""
    fmt = fmt or ("json" if path.lower().endswith(".json") else "csv")
    rows = []
    for uid, lab, pred, prob in zip(res["utterance_ids"], res["labels"], res["preds"], res["probs"]):
        rows.append({"utterance_id": uid, "predicted": label_names[int(pred)],
                     "true": label_names[int(lab)] if lab >= 0 else None,
                     "probabilities": {n: float(p) for n, p in zip(label_names, prob)}})
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        if fmt == "json":
            with open(path, "w") as fh:
                json.dump(rows, fh, indent=1)
        else:
            with open(path, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["utterance_id", "predicted", "true", *[f"p_{n}" for n in label_names]])
                for r in rows:
                    w.writerow([r["utterance_id"], r["predicted"], r["true"] or "",
                                *[f"{r['probabilities'][n]:.6f}" for n in label_names]])
    except OSError as exc:
        raise OutputError(f"cannot write predictions to {path}: {exc.strerror or exc}") from exc
    return path


def predict_corpus(checkpoint: str, corpus_path: str, split: str | None = None, dialogue: str | None = None,
                   out: str | None = None, device: str | None = None, batch_size: int | None = None,
                   progress: bool | None = None, num_workers: int | None = None) -> dict:
    """Predicted emotion and class probabilities per utterance of a corpus split, or of one
    conversation (``dialogue`` = its dialogue id). Writes ``out`` (.json or .csv) when given.
    ``device``, ``batch_size``, ``progress`` and ``num_workers`` default to the checkpoint's settings."""
    fmt = check_prediction_path(out) if out is not None else None
    model, cfg, ck_cfg, dev = _load(checkpoint, device=device, batch_size=batch_size, progress=progress,
                                    num_workers=num_workers)
    corpus = open_checked(corpus_path)
    labels = ck_cfg["label_names"]
    labelled = bool((np.asarray(corpus.label) >= 0).any())
    try:
        check_corpus_fits(corpus, ck_cfg["dims"], labels if labelled else list(corpus.label_names),
                          model.modalities, f"checkpoint {checkpoint}")
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    check_speakers_fit(model, corpus, checkpoint)
    if split is not None:
        ds = dataset(corpus, split, model.modalities)
    else:
        ds = DialogueDataset(corpus, None, modalities=model.modalities)
    if dialogue is not None:
        ids = [str(corpus.dialogue_ids[int(d)]) for d in ds.indices]
        if dialogue not in ids:
            raise DataError(f"no dialogue {dialogue!r} in corpus {corpus.path}"
                            + (f" split {split!r}" if split else "") + f" (e.g. {ids[:3]})")
        ds.indices = ds.indices[[ids.index(dialogue)]]
    if len(ds) == 0:
        raise DataError(f"nothing to predict: corpus {corpus.path} has no dialogues"
                        + (f" in split {split!r}" if split else ""))
    res = predict(model, ds, dev, batch_size=cfg.train.batch_size, amp=cfg.train.amp, progress=cfg.train.progress,
                  desc="predict", num_workers=cfg.train.num_workers)
    if not labelled:
        res["labels"] = np.full_like(res["labels"], -1)
    res["label_names"] = list(labels)
    if out is not None:
        write_predictions(out, res, labels, fmt=fmt)
    return res


# ----------------------------------------------------------------------------- ablation grid

VARIANTS: dict[str, dict] = {
    "full": {},
    "no_hgf": {"hgf": False},
    "no_moa": {"moa": False},
    "no_graph": {"graph": False},
    "no_cross_modal_edges": {"cross_modal_edges": False},
    "no_temporal_edges": {"temporal_edges": False},
    "scalar_gate": {"gate": "scalar"},
    "hotspots_data": {"hotspot_source": "data"},
    # the scorer learns through HGF's soft windows, which MoA's queries read by default
    "hotspots_learned": {"hotspot_source": "learned"},
    # MoA before the alignment objective made one aligner per pair the winner (README)
    "routed_experts": {"num_experts": 4, "top_k": 2},
    "shared_expert": {"num_experts": 4, "top_k": 2, "shared_expert": True},
    "no_align": {"align_weight": 0.0},
    "graph_on_encoder": {"graph_on_aligned": False},
    "text_audio": {"modalities": "ta"},
    "modality_dropout": {"modality_dropout": 0.2},
    "no_center": {"center": False},
    # the MoA default before peak queries (docs/EXPERIMENTS.md)
    "frame_queries": {"moa_queries": "frames", "moa_input": "encoder"},
    # MoA on the projected frames, bypassing HGF: the default before hgf_join (docs/EXPERIMENTS.md)
    "projected_queries": {"moa_input": "projected", "hgf_join": "none", "hgf_gate_bias": 0.0},
    "no_hgf_join": {"hgf_join": "none"},
}
DEFAULT_VARIANTS = ("full", "no_hgf", "no_moa", "no_graph")


def ablate(cfg: RunConfig, variants=DEFAULT_VARIANTS, seeds=(0, 1, 2), root: str = "runs",
           run_dir: str | None = None, progress: bool = True) -> dict:
    """Train every (variant, seed) into ``<run_dir>/<variant>/seed<k>`` and tabulate mean ± std
    of test weighted F1 and accuracy. Returns {"run_dir", "rows", "table"}."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"unknown ablation variants {unknown}; known: {', '.join(VARIANTS)}")
    try:
        validate(cfg)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if not seeds:
        raise UserError("--seeds needs at least one seed")
    # Created by the first run inside it: a configuration refused there leaves no empty folder.
    run_dir = choose_run_dir(run_dir, root, prefix="ablate-")
    results = {}
    for v in variants:
        for seed in seeds:
            c = RunConfig.from_dict(cfg.to_dict())
            for k, val in VARIANTS[v].items():
                setattr(c.model, k, val)
            c.train.seed = seed
            c.train.progress = False
            t0 = time.perf_counter()
            r = train(c, run_dir=os.path.join(run_dir, v, f"seed{seed}"))
            m = r["metrics"]
            split = m["test"] or m["dev"]
            results.setdefault(v, []).append({"seed": seed, "weighted_f1": split["weighted_f1"],
                                              "accuracy": split["accuracy"],
                                              "dev_weighted_f1": m["dev"]["weighted_f1"],
                                              "best_epoch": m["best_epoch"], "seconds": time.perf_counter() - t0})
            if progress:
                print(f"{v:22s} seed {seed}: test wF1 {split['weighted_f1']:.4f}  acc {split['accuracy']:.4f}  "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for v, rs in results.items():
        f1s, accs = [r["weighted_f1"] for r in rs], [r["accuracy"] for r in rs]
        rows.append({"variant": v, "changes": VARIANTS[v], "seeds": [r["seed"] for r in rs],
                     "weighted_f1_mean": statistics.fmean(f1s),
                     "weighted_f1_std": statistics.stdev(f1s) if len(f1s) > 1 else 0.0,
                     "accuracy_mean": statistics.fmean(accs),
                     "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "runs": rs})
    table = ablation_table(rows)
    try:
        write_json(os.path.join(run_dir, "ablation.json"), {"config": cfg.to_dict(), "rows": rows})
        with open(os.path.join(run_dir, "ablation.md"), "w") as fh:
            fh.write(table + "\n")
    except OSError as exc:
        raise output_error(exc, f"the ablation table in {run_dir}") from exc
    return {"run_dir": run_dir, "rows": rows, "table": table}


def ablation_table(rows: list[dict]) -> str:
    """Markdown table: variant, test weighted F1 and accuracy as mean ± std (in %)."""
    full = next((r for r in rows if r["variant"] == "full"), None)
    lines = ["| variant | test weighted F1 (%) | test accuracy (%) | Δ wF1 vs full |",
             "|---|---|---|---|"]
    for r in rows:
        delta = "" if full is None or r is full else f"{100 * (r['weighted_f1_mean'] - full['weighted_f1_mean']):+.2f}"
        lines.append(f"| {r['variant']} | {100 * r['weighted_f1_mean']:.2f} ± {100 * r['weighted_f1_std']:.2f} | "
                     f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f} | {delta} |")
    return "\n".join(lines)
