"""``#robustness``: weighted F1 when a modality goes missing or the inputs get noisy, at inference.

Missing: each modality in turn is emptied in 0 / 25 / 50 / 100% of the utterances that have it
(the other modalities stay as they are). Noise: Gaussian noise of 0.1, 0.5 and 1 times each
feature channel's standard deviation over the split is added to every frame of every modality.
The trained weights are used as they are; what the run trained with (its modality dropout) is
stated beside the numbers, since it decides how much missing inputs should hurt.
"""
from __future__ import annotations

from hotspot_erc.inspect import perturb
from hotspot_erc.train.metrics import weighted_f1

MISSING_SHARES = (0.0, 0.25, 0.5, 1.0)
NOISE_LEVELS = (0.1, 0.5, 1.0)


def robustness_section(model, col, dataset, device, batch_size: int, modality_dropout: float,
                       seed: int = 0) -> dict:
    num_classes = len(col.label_names)
    full = weighted_f1(col.labels, col.preds, num_classes)
    res = {"training_modality_dropout": modality_dropout, "seed": seed, "shares": list(MISSING_SHARES),
           "noise_levels": list(NOISE_LEVELS), "missing": {}, "noise": [], "full": full, "notes": []}
    mods = col.modalities
    for m in mods:
        row = []
        for share in MISSING_SHARES:
            if share == 0.0:
                row.append(full)
                continue
            if len(mods) == 1 and share == 1.0:
                row.append(None)  # nothing would be left to classify
                res["notes"].append(f"{m} at 100%: the run has no other modality, so nothing is left to classify")
                continue
            split = perturb.PerturbedSplit(dataset, perturb.hide_modality(m, share), seed)
            row.append(weighted_f1(col.labels, perturb.run_pass(model, split, device, batch_size), num_classes))
        res["missing"][m] = row
    scale = {m: perturb.channel_std(dataset, m) for m in mods}
    for level in NOISE_LEVELS:
        split = perturb.PerturbedSplit(dataset, perturb.add_noise(level, scale), seed)
        res["noise"].append(weighted_f1(col.labels, perturb.run_pass(model, split, device, batch_size), num_classes))
    return res
