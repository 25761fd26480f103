"""Training, evaluation, checkpoints and reports for :class:`hotspot_erc.nn.model.HotspotERC`.

* :mod:`~hotspot_erc.train.config`: run settings (dataclasses; defaults < TOML < flags);
* :mod:`~hotspot_erc.train.trainer`: the training loop (Adam, schedule, early stopping, AMP,
  ``torch.compile``, DDP, exact resume);
* :mod:`~hotspot_erc.train.checkpoint`: safetensors + JSON checkpoints, atomic writes;
* :mod:`~hotspot_erc.train.metrics`: accuracy, weighted / per-class F1, confusion matrix;
* :mod:`~hotspot_erc.train.reports`: run-folder JSON and diagnostic plots;
* :mod:`~hotspot_erc.train.run`: the workflows behind ``hotspot-erc train / evaluate / predict / ablate``.
"""
from hotspot_erc.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hotspot_erc.train.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from hotspot_erc.train.metrics import (accuracy, confusion_matrix, evaluate_predictions, per_class_f1,
                                       weighted_f1)
from hotspot_erc.train.trainer import Trainer, load_model

__all__ = [
    "CheckpointError", "DataConfig", "ModelConfig", "RunConfig", "TrainConfig", "Trainer", "accuracy",
    "confusion_matrix", "evaluate_predictions", "load_checkpoint", "load_model", "per_class_f1",
    "save_checkpoint", "weighted_f1",
]
