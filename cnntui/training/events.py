"""What a run reports to its callback, in order: batches, epochs, resets, the end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:

    pass


# ---- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchEnd:
    epoch: int  # 1-based
    epochs: int
    batch: int  # 1-based within the epoch
    batches: int
    step: int  # batches done in this run
    loss: float  # this batch's mean loss
    lr: float  # the rate this batch used (base rate times the schedule)
    optimizer: str
    images_per_s: float  # smoothed over the last few batches
    grad_norms: dict[str, float]  # L2 norm of the gradient of each parameter, by name


@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    epochs: int
    train_loss: float  # mean over the epoch's batches, as trained (augmented, weights moving)
    train_acc: float
    test_loss: float  # the weights at the end of the epoch on the test split
    test_acc: float
    seconds: float  # wall time of the epoch including its evaluation, pauses excluded
    images_per_s: float  # training images per second of training compute
    lr: float  # the rate at the end of the epoch


@dataclass(frozen=True)
class Reset:
    """The weights went back to the seed initialisation during a run; it restarts at epoch 1."""


@dataclass
class Evaluation:
    """Weights scored on a set of digits."""

    loss: float
    accuracy: float
    confusion: np.ndarray  # (10, 10) counts, rows the true label, columns the prediction
    indices: np.ndarray  # the digits' indices in the full set
    labels: np.ndarray
    predicted: np.ndarray

    @property
    def misclassified(self) -> list[int]:
        """Indices (in the full set, as ``cnntui --index`` takes them) of the wrong digits."""
        return [int(i) for i in self.indices[self.predicted != self.labels]]


@dataclass
class TrainResult:
    status: str  # finished | cancelled | diverged
    message: str  # one sentence for the user
    epochs_completed: int
    history: list[EpochEnd]
    evaluation: Evaluation | None  # the trainer's final weights on the test split
    seconds: float

    def to_json(self) -> dict[str, object]:
        ev = self.evaluation
        return {
            "status": self.status,
            "message": self.message,
            "epochs_completed": self.epochs_completed,
            "seconds": round(self.seconds, 3),
            "history": [asdict(e) for e in self.history],
            "test_accuracy": None if ev is None else ev.accuracy,
            "test_loss": None if ev is None else ev.loss,
            "confusion": None if ev is None else ev.confusion.tolist(),
            "misclassified": None if ev is None else ev.misclassified,
        }


@dataclass(frozen=True)
class RunEnd:
    result: TrainResult


Event = BatchEnd | EpochEnd | Reset | RunEnd
Callback = Callable[[Event], None]


