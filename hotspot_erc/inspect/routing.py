"""``#routing``: do MoA's experts specialise by emotion class, speaker or place in the dialogue?

Per ordered pair: expert usage (gate-weighted shares) per true class, per speaker and per turn
bucket, over the utterances where both modalities have frames; the mutual information between
each utterance's top expert (its largest gate) and its class, speaker or turn bucket, against the
MI left when that variable is shuffled across utterances; and the load-balancing loss and routing
entropy per epoch of training (``history.json``). With one expert per pair there is no choice to
read, and the section says so.
"""
from __future__ import annotations

import numpy as np

from hotspot_erc.inspect import stats

# Turn buckets (0-based turn index, lower bounds): 1st, 2nd-3rd, 4th-6th, 7th-10th, 11th on.
TURN_BOUNDS = (0, 1, 3, 6, 10)


def turn_bucket(position: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.asarray(TURN_BOUNDS), np.asarray(position), side="right") - 1


def turn_bucket_names() -> list[str]:
    names = []
    for i, lo in enumerate(TURN_BOUNDS):
        hi = TURN_BOUNDS[i + 1] if i + 1 < len(TURN_BOUNDS) else None
        names.append(f"turn {lo + 1}" if hi == lo + 1 else (f"turns {lo + 1}-{hi}" if hi else f"turns {lo + 1}+"))
    return names


def top_expert(experts: np.ndarray, gates: np.ndarray) -> np.ndarray:
    """Each row's expert with the largest gate (the first slot on ties)."""
    return experts[np.arange(experts.shape[0]), gates.argmax(1)] if experts.size else np.zeros(0, np.int64)


def usage_table(groups: np.ndarray, num_groups: int, experts: np.ndarray, gates: np.ndarray,
                num_experts: int) -> dict:
    """Gate-weighted expert shares per group: ``{"shares" [G, E] (rows sum to 1, or 0 for an empty
    group), "utterances" [G]}``."""
    w = np.zeros((num_groups, num_experts))
    rows = np.repeat(groups, experts.shape[1])
    np.add.at(w, (rows, experts.reshape(-1)), gates.reshape(-1).astype(np.float64))
    total = w.sum(1, keepdims=True)
    shares = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    return {"shares": shares.tolist(), "utterances": np.bincount(groups, minlength=num_groups).tolist()}


def pair_routing(r: dict, labels, speaker, position, label_names, seed: int = 0) -> dict:
    valid = r["valid"]
    experts, gates, e = r["experts"][valid], r["gates"][valid], r["num_experts"]
    lab, spk, turn = labels[valid], speaker[valid], turn_bucket(position[valid])
    top = top_expert(experts, gates)
    labelled = lab >= 0
    n_spk = int(spk.max()) + 1 if spk.size else 0
    res = {"utterances": int(valid.sum()), "num_experts": e,
           "usage": usage_table(np.zeros(len(top), np.int64), 1, experts, gates, e)["shares"][0],
           "by_class": usage_table(lab[labelled], len(label_names),
                                   experts[labelled], gates[labelled], e),
           "by_speaker": usage_table(spk, n_spk, experts, gates, e),
           "by_turn": usage_table(turn, len(TURN_BOUNDS), experts, gates, e)}
    res["mi"] = {"class": stats.mutual_information_vs_shuffled(top[labelled], lab[labelled], seed=seed),
                 "speaker": stats.mutual_information_vs_shuffled(top, spk, seed=seed),
                 "turn": stats.mutual_information_vs_shuffled(top, turn, seed=seed)}
    return res


def load_balance_history(history: list[dict]) -> dict | None:
    """Per epoch: the training load-balancing loss (summed over pairs) and the dev routing entropy
    per pair (normalised to [0, 1])."""
    if not history:
        return None
    pairs = sorted({p for h in history for p in h.get("dev_routing_entropy", {})})
    return {"epochs": [h.get("epoch") for h in history],
            "train_lb": [h.get("train_lb") for h in history],
            "dev_routing_entropy": {p: [h.get("dev_routing_entropy", {}).get(p) for h in history] for p in pairs},
            "warmup_epochs": sum(1 for h in history if h.get("align_warmup"))}


def routing_section(col, history: list[dict], seed: int = 0) -> dict:
    res = {"load_balance": load_balance_history(history), "pairs": {}, "turn_buckets": turn_bucket_names(),
           "label_names": list(col.label_names),
           "shuffles": stats.SHUFFLES, "seed": seed, "one_expert": False, "note": None}
    if not col.routing:
        res["note"] = ("MoA is off in this run (one modality, or --no-moa): there is no routing to inspect.")
        return res
    e = max(r["num_experts"] for r in col.routing.values())
    if e == 1:
        res["one_expert"] = True
        res["note"] = ("MoA has one expert aligner per modality pair in this run (--num-experts 1, the "
                       "default): every utterance uses it, so there is no routing to read (usage 100%, "
                       "mutual information 0 by construction). Train with --num-experts > 1 (e.g. "
                       "--num-experts 4 --top-k 2) to study specialisation.")
        return res
    for pair in sorted(col.routing):
        res["pairs"][pair] = pair_routing(col.routing[pair], col.labels, col.speaker, col.position,
                                          col.label_names, seed)
    return res
