"""Train stage: what a trial trains with (device plan, optimiser, seeded start, the step) and its state.

The loop that runs a trial is `convstudy.executors.run_trial`; its pieces live here.
"""

from convstudy.train.data import make_trial_data
from convstudy.train.device import (
    Plan, configure_backends, default_channels_last, describe, plan, resolve_device, resolve_precision,
)
from convstudy.train.augment import Augment
from convstudy.train.loop import (
    CudaGraph, Split, TrialData, channel_stats, cpu_weights, evaluate, init_state, make_optimizer, norm_from_meta,
    norm_meta, seed_everything, to_input, train_step,
)
from convstudy.train.schedule import make_scheduler
from convstudy.train.state import EpochResult, TrainState, load_state_tensors, state_to_tensors

__all__ = [
    "Augment", "CudaGraph", "EpochResult", "Plan", "Split", "TrainState", "TrialData", "channel_stats",
    "configure_backends", "cpu_weights", "default_channels_last", "describe", "evaluate", "init_state",
    "load_state_tensors", "make_optimizer", "make_scheduler", "make_trial_data", "norm_from_meta", "norm_meta", "plan",
    "resolve_device", "resolve_precision", "seed_everything", "state_to_tensors", "to_input", "train_step",
]
