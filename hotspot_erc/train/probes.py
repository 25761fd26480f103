"""Linear probes of the representations the classifier could use.

After training, each branch's per-utterance vectors (``ModelOutput.branches``: encoder-pooled,
MoA-pooled, graph; plus the classifier's whole input) are computed for the train and dev splits,
a logistic regression is fitted on train and scored on dev. A branch whose probe is no better
than the encoder-pooled one adds nothing the classifier could not already read; one that is
better but does not lift the model points at how the branches are combined or trained.

:func:`matched_burst_attention` reads the alignment story's ground truth
(``synthetic_truth.npz``, never seen by a model) to ask MoA the question it exists for: does the
text hotspot attend to the one audio / video burst that shares its content, more than to the
distractor bursts beside it?
"""
from __future__ import annotations

import numpy as np
import torch

from hotspot_erc.data.synthetic_align import alignment_truth
from hotspot_erc.nn.attention_inspect import range_attention_mass
from hotspot_erc.train.metrics import evaluate_predictions
from hotspot_erc.train.trainer import predict

CLASSIFIER_INPUT = "classifier_input"


class _BranchCollector:
    """Receives every evaluated batch from :func:`~hotspot_erc.train.trainer.predict` (its
    ``diagnostics`` hook) and keeps the labelled utterances' branch vectors."""

    def __init__(self):
        self.feats: dict[str, list] = {}
        self.labels: list = []

    def update(self, out, batch) -> None:
        keep = batch.labels >= 0
        for name, vec in {**out.branches, CLASSIFIER_INPUT: out.features}.items():
            self.feats.setdefault(name, []).append(vec[keep].float().cpu())
        self.labels.append(batch.labels[keep].cpu())


def branch_features(model, dataset, device, batch_size: int = 16) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-utterance vectors of every branch over ``dataset`` (labelled utterances only)."""
    got = _BranchCollector()
    predict(model, dataset, device, batch_size=batch_size, diagnostics=got)
    return ({k: torch.cat(v).numpy() for k, v in got.feats.items()},
            torch.cat(got.labels).numpy() if got.labels else np.zeros(0, dtype=np.int64))


def linear_probes(model, train_set, dev_set, device, label_names, batch_size: int = 16,
                  max_train: int = 20_000, seed: int = 0) -> dict[str, dict]:
    """{branch: {"dev_accuracy", "dev_weighted_f1", "dim"}} of a logistic regression per branch."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, y_train = branch_features(model, train_set, device, batch_size)
    dev, y_dev = branch_features(model, dev_set, device, batch_size)
    if len(y_train) == 0 or len(y_dev) == 0 or len(np.unique(y_train)) < 2:
        return {}
    if len(y_train) > max_train:  # keeps the probe to seconds on large corpora
        pick = np.random.default_rng(seed).choice(len(y_train), max_train, replace=False)
        train = {k: v[pick] for k, v in train.items()}
        y_train = y_train[pick]
    res = {}
    for name in train:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=seed))
        clf.fit(train[name], y_train)
        m = evaluate_predictions(y_dev, clf.predict(dev[name]), list(label_names))
        res[name] = {"dev_accuracy": m["accuracy"], "dev_weighted_f1": m["weighted_f1"],
                     "dim": int(train[name].shape[1])}
    return res


_CENTRES = {"a": "audio_centres", "v": "video_centres"}


class _BurstCollector:
    """Per batch: for each cue-carrying utterance, the attention mass the text frame at the text
    burst's centre puts on each audio / video burst (centre ± ``half_width`` frames), split into
    the key-matched burst and the distractors."""

    def __init__(self, truth: dict, half_width: int, peak_queries: bool = False):
        self.truth, self.half, self.peak_queries = truth, half_width, peak_queries
        self.sums: dict[str, np.ndarray] = {}  # pair -> [matched, distractor, uniform, count]

    def update(self, out, batch) -> None:
        t = self.truth
        for src, field in _CENTRES.items():
            key = f"{src}->t"
            if key not in getattr(out, "attention_qk", {}):
                continue
            q, k, cu_q, cu_s = out.attention_qk[key]
            cu_q, cu_s = cu_q.cpu(), cu_s.cpu()  # read per utterance below; q and k stay where they are
            cu_t = out.segments["t"].cu_seqlens.cpu()
            # Query rows are the text frames, or (``moa_queries="peaks"``) K peak rows per utterance.
            peaks = out.peaks["t"].cpu() if self.peak_queries else None
            rows, seg, lo, hi, true = [], [], [], [], []
            for s, uid in enumerate(batch.utterance_ids):
                u = t["row"].get(uid)
                if u is None or t["true_burst"][u] < 0 or t["text_centre"][u] < 0:
                    continue
                centres = t[field][u]
                length = int(cu_s[s + 1] - cu_s[s])
                if length == 0 or int(cu_t[s + 1] - cu_t[s]) == 0 or (centres < 0).any():
                    continue
                centre = int(cu_t[s]) + int(t["text_centre"][u])
                if peaks is None:
                    rows.append(centre)
                else:  # the peak row nearest the text burst's centre
                    dist = torch.where(peaks[s] >= 0, (peaks[s] - centre).abs(), torch.full_like(peaks[s], 1 << 40))
                    rows.append(int(cu_q[s]) + int(dist.argmin()))
                seg.append(s)
                lo.append([max(0, int(c) - self.half) for c in centres])
                hi.append([min(length, int(c) + self.half + 1) for c in centres])
                true.append(int(t["true_burst"][u]))
            if not rows:
                continue
            dev = q.device
            lo_t, hi_t = torch.tensor(lo, device=dev), torch.tensor(hi, device=dev)
            mass = range_attention_mass(q, k, cu_s.to(dev), torch.tensor(rows, device=dev),
                                        torch.tensor(seg, device=dev), lo_t, hi_t, q.shape[-1] ** -0.5).cpu()
            pick = torch.nn.functional.one_hot(torch.tensor(true), mass.shape[1]).bool()
            lengths = (cu_s[1:] - cu_s[:-1])[torch.tensor(seg)].double()
            uniform = (hi_t - lo_t).cpu()[pick].double() / lengths
            matched = mass[pick].double()
            distractor = mass.masked_fill(pick, 0).double().sum(1) / max(mass.shape[1] - 1, 1)
            acc = self.sums.setdefault(key, np.zeros(4))
            acc += [matched.sum().item(), distractor.sum().item(), uniform.sum().item(), len(rows)]

    def summary(self) -> dict:
        return {key: {"matched": float(a[0] / a[3]), "distractor": float(a[1] / a[3]), "uniform": float(a[2] / a[3]),
                      "utterances": int(a[3])} for key, a in self.sums.items() if a[3] > 0}


def matched_burst_attention(model, dataset, device, batch_size: int = 16, half_width: int = 1) -> dict | None:
    """On an alignment-story split: per pair ``a->t`` / ``v->t``, the mean attention mass (over
    heads and cue-carrying utterances) that the text burst's centre frame puts on the key-matched
    source burst (``matched``), on one distractor burst (``distractor``, mean of the others) and
    what uniform attention would put on the matched burst (``uniform``). None for other corpora,
    models without MoA, or MoA attending to hotspot windows only (``moa_keys="hotspots"``). With
    ``moa_queries="peaks"`` the query is the text peak nearest the burst's centre.
    Alignment works when ``matched`` clearly exceeds ``distractor``; both near ``uniform`` means
    the attention does not look at content at all."""
    truth = alignment_truth(dataset.corpus)
    if truth is not None:
        truth["row"] = {u: i for i, u in enumerate(dataset.corpus.utterance_ids)}
    if (truth is None or not getattr(model, "use_moa", False) or "t" not in model.modalities
            or getattr(model, "moa_keys", "all") != "all"):
        return None
    got = _BurstCollector(truth, half_width, getattr(model, "moa_queries", "frames") == "peaks")
    inspect = model.inspect
    model.inspect = True
    try:
        predict(model, dataset, device, batch_size=batch_size, diagnostics=got)
    finally:
        model.inspect = inspect
    return got.summary() or None


def context_split_accuracy(corpus, result: dict) -> dict | None:
    """On an alignment-story corpus: accuracy of ``result`` (a prediction result with
    ``utterance_ids``, ``labels``, ``preds``) on the cue-carrying and on the cue-less utterances
    (whose only evidence is the same speaker's previous utterance, reachable through the graph).
    None for other corpora. Cue-less accuracy near chance (1/6) means context is not read."""
    truth = alignment_truth(corpus)
    if truth is None:
        return None
    row = {u: i for i, u in enumerate(corpus.utterance_ids)}
    out = {}
    for name, want in (("cued", False), ("cueless", True)):
        hits = [int(p) == int(y) for u, y, p in zip(result["utterance_ids"], result["labels"], result["preds"])
                if int(y) >= 0 and u in row and bool(truth["cueless"][row[u]]) == want]
        out[name] = {"accuracy": float(np.mean(hits)) if hits else None, "utterances": len(hits)}
    return out
