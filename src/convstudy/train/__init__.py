"""Train stage: what a trial trains with (device plan, optimiser, seeded start, the step) and its state.

The loop that runs a trial is `convstudy.executors.run_trial`; its pieces live here.
"""

from convstudy.train.data import make_trial_data
from convstudy.train.device import (
    Plan, configure_backends, default_channels_last, describe, plan, resolve_device, resolve_precision,
)
from convstudy.train.augment import Augment
from convstudy.train.loop import (
    Lone, Split, Stepper, TrialData, channel_stats, cpu_weights, epoch_means, evaluate, init_state, make_optimizer,
    norm_from_meta, norm_meta, seed_everything, to_input,
)
from convstudy.train.schedule import make_scheduler
from convstudy.train.state import EpochResult, TrainState, load_state_tensors, state_to_tensors

__all__ = [
    "Augment", "channel_stats", "make_scheduler", "to_input", "EpochResult", "Lone", "Plan", "Split", "Stepper", "TrainState", "TrialData", "configure_backends",
    "default_channels_last",
    "cpu_weights", "describe", "epoch_means", "evaluate", "init_state", "load_state_tensors", "make_optimizer",
    "make_trial_data", "norm_from_meta", "norm_meta", "plan", "resolve_device", "resolve_precision", "seed_everything",
    "state_to_tensors",
]
