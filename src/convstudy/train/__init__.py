"""Train stage: the fit loop, optimisers, evaluation and resumable training state."""

from convstudy.train.loop import (
    Diverged, EpochResult, Split, TrainState, TrialData, evaluate, fit, init_state, make_optimizer, seed_everything,
)
from convstudy.train.state import load_state_tensors, state_to_tensors

__all__ = [
    "Diverged", "EpochResult", "Split", "TrainState", "TrialData", "evaluate", "fit", "init_state",
    "make_optimizer", "seed_everything", "load_state_tensors", "state_to_tensors",
]
