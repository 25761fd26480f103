"""``#summary``: the run (corpus, settings, training) and its metrics on the inspected split."""
from __future__ import annotations

import dataclasses

from hotspot_erc.nn.config import ModelConfig
from hotspot_erc.train.metrics import evaluate_predictions


def changed_settings(model_config: dict) -> dict:
    """The model settings that differ from today's defaults: {field: [default, run's value]}."""
    defaults = dataclasses.asdict(ModelConfig())
    return {k: [defaults.get(k), v] for k, v in model_config.items() if defaults.get(k) != v}


def summary_section(col, run: dict) -> dict:
    """``run``: what :func:`~hotspot_erc.inspect.report.load_run` found (paths, configs, metrics)."""
    metrics = evaluate_predictions(col.labels, col.preds, col.label_names)
    stored = run.get("metrics") or {}
    return {
        "run_dir": run["run_dir"], "checkpoint": run["checkpoint"], "corpus": run["corpus"],
        "corpus_name": run.get("corpus_name"), "split": col.split,
        "dialogues": col.num_dialogues, "utterances": len(col.utterance_ids),
        "labelled": int((col.labels >= 0).sum()), "modalities": "".join(col.modalities),
        "label_names": col.label_names, "metrics": metrics,
        "best_epoch": stored.get("best_epoch"), "epochs_run": stored.get("epochs_run"),
        "train_seconds": stored.get("train_seconds"), "warnings": stored.get("warnings") or [],
        "stored_test": stored.get("test"),
        "model_config": run["config"]["model"], "train_config": run["config"]["train"],
        "changed_settings": changed_settings(run["config"]["model"]),
    }
