"""Training samples/s of the seed models in Keras 2 on TensorFlow (tf_keras, default settings), as JSON.

    /work/helpers/h28-keras-venv/bin/python bench/keras_tf.py [--models k3-2,k7-3] [--seconds 10]

The other side of issue 26's acceptance 1 (`convstudy bench` is convstudy's). It runs in its own venv
with tensorflow-cpu 2.21 and tf_keras 2.21 (`pip install 'tensorflow-cpu==2.21.*' 'tf_keras==2.21.*'`;
not a convstudy dependency) and imports nothing from convstudy: the 12 architectures are read from
src/convstudy/spec/builtin.py (SEED_MODELS) and built as the notebook builds them: ReLU convs and dense
layers, a softmax classifier, categorical cross-entropy on one-hot labels, batch 128, Adam (k3-1:
Adadelta), `model.fit` with TensorFlow's default threads, on synthetic 28x28x1 images /255 (float32).
Each model trains for `--seconds` after two warm-up batches (graph tracing), timed from batch ends.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import sys
import time
from pathlib import Path

BUILTIN = Path(__file__).resolve().parents[1] / "src/convstudy/spec/builtin.py"
BATCH = 128
WARM = 2  # batches before timing starts: the first one traces the training graph


def seed_models() -> dict[str, list[str]]:
    """SEED_MODELS from builtin.py, read as a literal (no convstudy import: this venv has no torch)."""
    for node in ast.parse(BUILTIN.read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "SEED_MODELS":
            return ast.literal_eval(node.value)
    raise SystemExit(f"{BUILTIN}: no SEED_MODELS")


def build(layers: list[str]):
    """The Keras Sequential model for convstudy's layer strings (the seed models' kinds only)."""
    import tf_keras as keras

    model = keras.Sequential([keras.Input((28, 28, 1))])
    for i, text in enumerate(layers):
        kind, _, rest = text.partition("(")
        args = [a.strip() for a in rest.rstrip(")").split(",") if a.strip()]
        if kind == "conv":
            padding = args[2] if len(args) > 2 else "valid"
            model.add(keras.layers.Conv2D(int(args[0]), int(args[1]), padding=padding, activation="relu"))
        elif kind == "pool":
            model.add(keras.layers.MaxPooling2D(int(args[0])))
        elif kind == "dropout":
            model.add(keras.layers.Dropout(float(args[0])))
        elif kind == "flatten":
            model.add(keras.layers.Flatten())
        elif kind == "bn":
            model.add(keras.layers.BatchNormalization())
        elif kind == "dense":
            last = i == len(layers) - 1
            model.add(keras.layers.Dense(int(args[0]), activation="softmax" if last else "relu"))
        else:
            raise SystemExit(f"layer {text!r}: not a seed-model layer kind")
    return model


def samples_per_s(name: str, layers: list[str], seconds: float) -> dict:
    """Train `name` on synthetic data for about `seconds` after WARM batches; samples/s from batch ends."""
    import numpy as np
    import tf_keras as keras

    model = build(layers)
    optimizer = keras.optimizers.Adadelta() if name == "k3-1" else keras.optimizers.Adam()
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    n = 32 * BATCH
    x = (rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8) / 255.0).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, n), 10)
    ends: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())
            if len(ends) > WARM and ends[-1] - ends[WARM - 1] >= seconds:
                self.model.stop_training = True

    model.fit(x, y, batch_size=BATCH, epochs=10_000, verbose=0, callbacks=[Clock()])
    timed = len(ends) - WARM
    return {"name": name, "samples_per_s": round(timed * BATCH / (ends[-1] - ends[WARM - 1]), 1),
            "timed_batches": timed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated seed models (default: all 12)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per model (default: 10)")
    args = parser.parse_args()
    models = seed_models()
    wanted = args.models.split(",") if args.models else list(models)
    unknown = [m for m in wanted if m not in models]
    if unknown:
        raise SystemExit(f"--models: no seed model {', '.join(unknown)}; models: {', '.join(models)}")
    import tensorflow as tf
    import tf_keras

    load = [round(os.getloadavg()[0], 2)]
    results = []
    for m in wanted:  # one line per model on stderr, so a slow run shows where it is
        start = time.perf_counter()
        results.append(samples_per_s(m, models[m], args.seconds))
        print(f"{m}: {results[-1]['samples_per_s']} samples/s ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr, flush=True)
    print(json.dumps({
        "tensorflow": tf.__version__, "tf_keras": tf_keras.__version__, "cpus": os.cpu_count(),
        "platform": platform.platform(), "threads": "TensorFlow's defaults (intra- and inter-op: 0, all cores)",
        "batch_size": BATCH, "seconds_per_model": args.seconds,
        "load": load + [round(os.getloadavg()[0], 2)],  # 1-minute load average, start and end
        "models": results,
    }, indent=2))


if __name__ == "__main__":
    main()
