"""Built-in studies. `seed` is the Keras 2 notebook's 12 CNNs, layer for layer, in its order."""

from __future__ import annotations

from typing import Callable

from convstudy.spec.study import Study, build_study

# Read cell by cell from the notebook: padding, dropout rates and BatchNormalization's position differ
# per model (k7-4's last BatchNormalization sits *before* its dropout, k5-4's after).
SEED_MODELS: dict[str, list[str]] = {
    "k3-1": ["conv(32,3)", "conv(64,3)", "pool(2)", "dropout(0.25)", "flatten", "dense(128)", "dropout(0.5)", "dense(10)"],
    "k3-2": ["conv(32,3)", "pool(2)", "conv(32,3)", "pool(2)", "conv(64,3)", "pool(2)", "flatten", "dense(64)",
             "dropout(0.5)", "dense(10)"],
    "k3-3": ["conv(32,3,same)", "pool(2)", "conv(64,3)", "pool(2)", "dropout(0.25)", "flatten", "dense(128)",
             "dropout(0.5)", "dense(10)"],
    "k3-4": ["conv(32,3,same)", "pool(2)", "conv(32,3)", "pool(2)", "dropout(0.25)", "flatten", "dense(64)",
             "dropout(0.5)", "bn", "dense(10)"],
    "k5-1": ["conv(128,5)", "conv(64,5)", "pool(2)", "dropout(0.25)", "conv(32,5)", "pool(2)", "dropout(0.55)",
             "flatten", "dense(128)", "dropout(0.5)", "dense(10)"],
    "k5-2": ["conv(64,5)", "pool(2)", "dropout(0.25)", "conv(32,5)", "pool(2)", "flatten", "dense(128)",
             "dropout(0.5)", "dense(32)", "dropout(0.5)", "dense(10)"],
    "k5-3": ["conv(128,5,same)", "pool(2)", "conv(64,5,same)", "pool(2)", "dropout(0.5)", "conv(32,5,same)",
             "pool(2)", "dropout(0.25)", "flatten", "dense(64)", "dropout(0.5)", "dense(32)", "dropout(0.5)",
             "dense(10)"],
    "k5-4": ["conv(64,5,same)", "pool(2)", "conv(32,5)", "pool(2)", "dropout(0.25)", "flatten", "dense(64)",
             "dropout(0.5)", "bn", "dense(32)", "dropout(0.5)", "bn", "dense(10)"],
    "k7-1": ["conv(128,7)", "conv(64,7)", "pool(2)", "dropout(0.5)", "conv(32,7)", "pool(2)", "dropout(0.25)",
             "flatten", "dense(128)", "dropout(0.5)", "dense(10)"],
    "k7-2": ["conv(128,7,same)", "pool(2)", "dropout(0.5)", "conv(64,7,same)", "pool(2)", "dropout(0.25)",
             "flatten", "dense(64)", "dropout(0.5)", "dense(10)"],
    "k7-3": ["conv(256,7,same)", "pool(2)", "conv(64,7,same)", "pool(2)", "dropout(0.75)", "conv(32,7,same)",
             "pool(2)", "dropout(0.25)", "flatten", "dense(128)", "dropout(0.5)", "dense(32)", "dropout(0.5)",
             "dense(10)"],
    "k7-4": ["conv(64,7,same)", "pool(2)", "conv(32,7)", "pool(2)", "dropout(0.25)", "flatten", "dense(64)",
             "dropout(0.5)", "bn", "dense(32)", "bn", "dropout(0.5)", "dense(10)"],
}
# The notebook's reported test accuracies (one run each), kept for the report's comparison column.
NOTEBOOK_ACCURACY = {
    "k3-1": 0.9914, "k3-2": 0.9844, "k3-3": 0.9934, "k3-4": 0.9934, "k5-1": 0.9944, "k5-2": 0.9918,
    "k5-3": 0.9917, "k5-4": 0.9927, "k7-1": 0.9948, "k7-2": 0.9934, "k7-3": 0.9927, "k7-4": 0.9920,
}


def seed_study() -> Study:
    """The notebook's study: 12 epochs, batch 128, Adam (k3-1: Adadelta), test set as validation data."""
    return build_study(
        {
            "name": "seed",
            "description": "The Keras 2 seed notebook: 12 CNNs with 3x3, 5x5 and 7x7 kernels on MNIST.",
            "dataset": "mnist",
            "seeds": 1,
            "train": {"epochs": 12, "batch_size": 128, "optimizer": "adam", "validation": "test"},
            "models": [
                {"name": name, "layers": layers, **({"train": {"optimizer": "adadelta"}} if name == "k3-1" else {})}
                for name, layers in SEED_MODELS.items()
            ],
        },
        source="seed",
    )


BUILTIN: dict[str, Callable[[], Study]] = {"seed": seed_study}
