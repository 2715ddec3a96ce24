"""Spec stage: what a study trains, validated before any tensor exists."""

from convstudy.spec.builtin import BUILTIN, NOTEBOOK_ACCURACY, seed_study
from convstudy.spec.files import load_study_file, resolve_study
from convstudy.spec.layers import (
    ACTIVATIONS, LAYERS, Activation, BatchNorm, Conv, Dense, DepthwiseConv, Dropout, Flatten, GlobalAvgPool,
    GlobalMaxPool, GroupNorm, Layer, LayerError, LayerNorm, Pool, Residual, SeparableConv, Shape, SqueezeExcite,
    canonical_act, fmt_shape, parse_layer, pydantic_reason,
)
from convstudy.spec.memory import check_memory, machine_memory, training_bytes
from convstudy.spec.overrides import retarget, with_overrides
from convstudy.spec.recipe import check_schedule_keys
from convstudy.spec.space import FloatRange, IntRange, Levels, Space, expand, select_models, space_model
from convstudy.spec.models import (
    AUGMENTS, OPTIMIZERS, ModelSpec, OptimizerSpec, TrainOverrides, TrainSettings, parse_augment, summarize,
)
from convstudy.spec.study import Study, build_study

__all__ = [
    "ACTIVATIONS", "Layer", "Shape", "pydantic_reason", "BUILTIN", "NOTEBOOK_ACCURACY", "seed_study", "load_study_file", "resolve_study", "LAYERS", "Activation",
    "BatchNorm", "Conv", "Dense", "Dropout", "Flatten", "LayerError", "Pool", "fmt_shape", "parse_layer",
    "DepthwiseConv", "SeparableConv", "GlobalAvgPool", "GlobalMaxPool", "LayerNorm", "GroupNorm", "SqueezeExcite",
    "Residual", "canonical_act",
    "OPTIMIZERS", "ModelSpec", "OptimizerSpec", "Study", "TrainOverrides", "TrainSettings", "build_study",
    "summarize", "with_overrides", "retarget", "check_memory", "check_schedule_keys", "machine_memory", "training_bytes",
    "AUGMENTS",
    "parse_augment", "FloatRange", "IntRange", "Levels", "Space", "expand", "select_models", "space_model",
]
