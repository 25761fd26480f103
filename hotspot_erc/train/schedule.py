"""Learning-rate schedule: linear warm-up, then cosine, linear or constant, per optimiser step."""
from __future__ import annotations

import math


def lr_lambda(total_steps: int, warmup: float, schedule: str):
    warm = max(1, int(round(warmup * total_steps))) if warmup > 0 else 0

    def fn(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "linear":
            return 1.0 - progress
        return 1.0

    return fn
