"""The datasets convstudy knows: where to fetch them, what they hold, and how to check them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from convstudy.errors import UserError

FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset: shape, classes, files, checksums and mirrors."""

    name: str
    input_shape: tuple[int, int, int]  # (H, W, C), Keras order
    num_classes: int
    class_names: tuple[str, ...]
    files: dict[str, str]  # FILE_KEYS -> file name as served by the mirrors (".gz")
    sha256: dict[str, str]  # FILE_KEYS -> SHA-256 of the DECOMPRESSED bytes
    mirrors: tuple[str, ...]  # base URLs, tried in order; file URL = base + file name
    homepage: str
    license: str
    # SHA-256 of the published .gz archives, for datasets whose decompressed digests are not
    # published anywhere we could check. Only a .gz file can be verified against these.
    gz_sha256: dict[str, str] = field(default_factory=dict)


# MNIST carries digests of the decompressed IDX files (from ../shared/data/mnist/SHA256SUMS),
# so any mirror or any gzip recompression of the same data verifies.
_MNIST = DatasetInfo(
    name="mnist",
    input_shape=(28, 28, 1),
    num_classes=10,
    class_names=tuple(str(digit) for digit in range(10)),
    files=dict(_IDX_FILES),
    sha256={
        "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    homepage="http://yann.lecun.com/exdb/mnist/",
    license="CC BY-SA 3.0",
)

# Fashion-MNIST and KMNIST carry SHA-256 digests of the .gz archives as published, not of the
# decompressed files: no source we could check publishes the latter, and a checksum is never
# guessed. Values from pytorch/vision torchvision/prototype/datasets/_builtin/mnist.py; several
# independent loaders pin the same ones. A hand-decompressed copy cannot be checked against them,
# so for these datasets an uncompressed file gets the IDX structure checks only.
_FASHION_MNIST = DatasetInfo(
    name="fashion-mnist",
    input_shape=(28, 28, 1),
    num_classes=10,
    class_names=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    files=dict(_IDX_FILES),
    sha256={},
    gz_sha256={
        "train_images": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train_labels": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "test_images": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "test_labels": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    license="MIT",
)

_KMNIST = DatasetInfo(
    name="kmnist",
    input_shape=(28, 28, 1),
    num_classes=10,
    class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    files=dict(_IDX_FILES),
    sha256={},
    gz_sha256={
        "train_images": "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
        "train_labels": "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
        "test_images": "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
        "test_labels": "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
    },
    # The dataset's only official host, over http and https; the checksums make either safe.
    mirrors=(
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ),
    homepage="http://codh.rois.ac.jp/kmnist/",
    license="CC BY-SA 4.0",
)

REGISTRY: dict[str, DatasetInfo] = {info.name: info for info in (_MNIST, _FASHION_MNIST, _KMNIST)}


def get_info(name: str) -> DatasetInfo:
    """The registered dataset called `name`; an unknown name is a UserError listing valid ones."""
    if name in REGISTRY:
        return REGISTRY[name]
    valid = sorted(REGISTRY)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    raise UserError(f'unknown dataset "{name}"; valid: {", ".join(valid)}{hint}')
