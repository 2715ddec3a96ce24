"""A trained trial out as ONNX (checked against PyTorch with onnxruntime) or as safetensors with its spec."""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import convstudy
from convstudy.data import get_info, load_dataset
from convstudy.errors import UserError
from convstudy.deploy.predict import Trained, deployed
from convstudy.model import build_model, predict_proba
from convstudy.spec import ModelSpec
from convstudy.store import StudyStore, atomic_write, load_tensors, save_tensors, umask_mode
from convstudy.train import norm_from_meta, norm_meta, to_input

OPSET = 17
TOLERANCE = 1e-4  # max abs difference of probabilities between onnxruntime and PyTorch
CHECK_IMAGES = 256
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"


@dataclass(frozen=True)
class Parity:
    """How the exported file's outputs compare with PyTorch's on the same inputs."""

    n: int
    source: str  # "test images" or a sentence on why random inputs were used
    max_abs_diff: float
    argmax_same: int

    @property
    def passed(self) -> bool:
        return self.max_abs_diff < TOLERANCE and self.argmax_same == self.n

    def sentence(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"parity check {verdict}: onnxruntime vs PyTorch on {self.n} {self.source}: max abs difference of "
                f"probabilities {self.max_abs_diff:.2e} (limit {TOLERANCE:g}), same argmax on {self.argmax_same}/{self.n}")


class ExportCheckFailed(Exception):
    """The exported model does not compute what the PyTorch model computes: a bug, not a user mistake."""


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxruntime: pip install 'convstudy[onnx]'") from None
    return onnx, onnxruntime


def with_softmax(module: nn.Module) -> nn.Module:
    """The classifier as deployed: probabilities out, since the spec's softmax lives in the loss."""
    return nn.Sequential(module, nn.Softmax(dim=1)).eval()


def onnx_bytes(module: nn.Module, input_shape: tuple[int, int, int]) -> bytes:
    """ONNX (opset 17) of `module` + softmax; input images [batch, C, H, W] float in [0, 1] (pass a
    `Trained.deployed` module: a "channel" model's standardisation is then part of the graph)."""
    _onnx_modules()
    h, w, c = input_shape
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in torch >= 2.9 but exact for these Sequential CNNs, needs no
        # onnxscript, and takes a tenth of the time of the dynamo exporter; the parity check guards it.
        warnings.simplefilter("ignore")
        torch.onnx.export(with_softmax(module), (torch.zeros(2, c, h, w),), buf, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return buf.getvalue()


def ort_session(data: bytes, threads: int | None = None):
    """An onnxruntime CPU session over ONNX bytes (`threads` intra-op threads; default: onnxruntime's)."""
    _, ort = _onnx_modules()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting on shared CPUs
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


@torch.inference_mode()
def check_onnx(data: bytes, module: nn.Module, x: torch.Tensor, source: str) -> Parity:
    """Run the ONNX bytes with onnxruntime on `x` (float NCHW) and compare with PyTorch's probabilities."""
    onnx, _ = _onnx_modules()
    onnx.checker.check_model(onnx.load_from_string(data))
    theirs = ort_session(data).run([OUTPUT_NAME], {INPUT_NAME: x.numpy().astype(np.float32)})[0]
    ours = predict_proba(module.eval(), x).numpy()
    return Parity(n=len(x), source=source, max_abs_diff=float(np.abs(theirs - ours).max()),
                  argmax_same=int((theirs.argmax(1) == ours.argmax(1)).sum()))


def check_inputs(store: StudyStore, data_dir: str | None = None, n: int = CHECK_IMAGES) -> tuple[torch.Tensor, str]:
    """The first `n` test images of the study's dataset scaled /255 as in training, or seeded random inputs
    if unloadable."""
    runs = store.db.runs()
    data_dir = data_dir or (runs[-1].get("data_dir") if runs else None)
    try:
        ds = load_dataset(store.study.dataset, data_dir, download=False)
    except UserError as exc:
        h, w, c = get_info(store.study.dataset).input_shape
        x = torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0))
        return x, f"random inputs (test set not loadable: {exc})"
    return to_input(ds.x_test[:n], channels_last=False), "test images"


def export_onnx(trained: Trained, path: Path, x: torch.Tensor, source: str) -> Parity:
    """Write `path` only if onnxruntime agrees with PyTorch on `x`; raises ExportCheckFailed otherwise."""
    module = trained.deployed  # with a "channel" model's standardisation: the file takes pixel / 255
    data = onnx_bytes(module, trained.info.input_shape)
    parity = check_onnx(data, module, x, source)
    if not parity.passed:
        raise ExportCheckFailed(parity.sentence())
    atomic_write(path, data, umask_mode())  # exports are for others to read
    return parity


def spec_metadata(trained: Trained, store: StudyStore) -> dict[str, str]:
    """What a safetensors reader needs to rebuild and feed the model, as safetensors' string metadata."""
    return {
        "format": "convstudy-model",
        "convstudy": convstudy.__version__,
        "model": trained.spec.name,
        "spec": json.dumps(trained.spec.to_dict()),
        "input_shape": json.dumps(list(trained.info.input_shape)),
        "dataset": trained.info.name,
        "class_names": json.dumps(list(trained.info.class_names)),
        "input": "float32 [batch, C, H, W], pixel / 255" + (", then (x - mean) / std per channel with `normalize`"
                                                            if trained.norm is not None else "")
                 + "; outputs are logits (softmax gives probabilities)",
        **norm_meta(trained.norm),
        "study": store.study.name,
        "study_fingerprint": store.study.fingerprint(),
        "seed": str(trained.seed),
    }


def export_safetensors(trained: Trained, path: Path, store: StudyStore) -> None:
    """The trial's state_dict plus spec metadata; read back and compared before returning."""
    weights = {k: v.detach().cpu().contiguous() for k, v in trained.module.state_dict().items()}
    save_tensors(path, weights, spec_metadata(trained, store))
    path.chmod(umask_mode())
    back, meta = load_tensors(path)
    if set(back) != set(weights) or any(not torch.equal(back[k], weights[k]) for k in weights) or "spec" not in meta:
        raise ExportCheckFailed(f"{path}: the written file does not read back as the weights")


def load_exported(path: str | Path) -> tuple[nn.Module, dict[str, str]]:
    """A module rebuilt from an exported safetensors file alone (spec from its metadata), in eval mode, fed
    images scaled /255 (a "channel" model's recorded standardisation included)."""
    tensors, meta = load_tensors(Path(path))
    if meta.get("format") != "convstudy-model":
        raise UserError(f"{path}: not a convstudy model export (no spec in its metadata)")
    module = build_model(ModelSpec.model_validate(json.loads(meta["spec"])), tuple(json.loads(meta["input_shape"])))
    module.load_state_dict(tensors)
    return deployed(module.eval(), norm_from_meta(meta)), meta
