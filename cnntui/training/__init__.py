"""Minibatch training of the from-scratch network on the digits' fixed split (NumPy only, no UI):
the configuration, the optimisers, the data order and augmentation, the events a run reports,
the trainer loop, and the same training in PyTorch."""

from cnntui.training.config import DTYPES, OPTIMIZERS, SCHEDULES, ConfigError, TrainConfig
from cnntui.training.events import BatchEnd, EpochEnd, Evaluation, Reset, RunEnd, TrainResult
from cnntui.training.trainer import Trainer, evaluate

__all__ = ["DTYPES", "OPTIMIZERS", "SCHEDULES", "BatchEnd", "ConfigError", "EpochEnd",
           "Evaluation", "Reset", "RunEnd", "TrainConfig", "TrainResult", "Trainer", "evaluate"]
