"""Keras-style plateau early stopping (pure, stdlib only).

Monitors a value to minimise (validation loss). An epoch *improves* when the
value drops below ``best - min_delta``; after ``patience`` epochs without
improvement training stops, but never before ``min_epochs``. The caller keeps a
copy of the weights whenever :attr:`EarlyStopping.improved` is true and restores
it at the end (restore-best-weights).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class EarlyStopping:
    patience: int
    min_delta: float = 0.0
    min_epochs: int = 0
    best_value: float = math.inf
    best_epoch: int = 0          # 1-based epoch of the best value; 0 = none yet
    wait: int = 0
    stopped_epoch: int = 0       # 1-based epoch at which stopping fired; 0 = not fired
    improved: bool = False
    history: list[float] = field(default_factory=list)

    def __post_init__(self):
        if self.patience < 1:
            raise ValueError("patience must be >= 1")
        if self.min_delta < 0:
            raise ValueError("min_delta must be >= 0")

    def step(self, value: float) -> bool:
        """Record one epoch's value; return True when training should stop now."""
        epoch = len(self.history) + 1
        self.history.append(float(value))
        # NaN never improves: a diverged model keeps its best weights.
        self.improved = (not math.isnan(value)) and value < self.best_value - self.min_delta
        if self.improved:
            self.best_value = float(value)
            self.best_epoch = epoch
            self.wait = 0
        else:
            self.wait += 1
        if self.wait >= self.patience and epoch >= self.min_epochs:
            self.stopped_epoch = epoch
            return True
        return False

    @property
    def fired(self) -> bool:
        return self.stopped_epoch > 0

    @property
    def epochs_run(self) -> int:
        return len(self.history)
