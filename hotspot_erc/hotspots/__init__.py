"""Emotion hotspots (DESIGN §4): per-frame intensity scores and window extraction.

Scores come from the data (``Batch.intensity``), from a rule on the features
(:func:`rule_scores`) or from a :class:`LearnedScorer`; :func:`extract_hotspots` turns them into up
to K windows per utterance and builds the content C, the hotspot features H and the window mask
that :class:`hotspot_erc.nn.fusion.HotspotGatedFusion` mixes.
"""
from hotspot_erc.hotspots.extract import Hotspots, extract_hotspots, pick_peaks
from hotspot_erc.hotspots.scores import LearnedScorer, normalize_scores, rule_scores

__all__ = ["Hotspots", "LearnedScorer", "extract_hotspots", "normalize_scores", "pick_peaks", "rule_scores"]
