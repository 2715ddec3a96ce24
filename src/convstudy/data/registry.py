"""The datasets convstudy knows: where to fetch them, what they hold, and how to check them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from convstudy.errors import UserError

FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

# 60000 train and 10000 test 28x28 images: a 16-byte header plus pixels, 8 bytes plus labels.
_IDX_SIZES = {
    "train_images": 16 + 60000 * 28 * 28,
    "train_labels": 8 + 60000,
    "test_images": 16 + 10000 * 28 * 28,
    "test_labels": 8 + 10000,
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
    # published anywhere we could check. Only a byte-identical .gz can be verified against these.
    gz_sha256: dict[str, str] = field(default_factory=dict)
    # FILE_KEYS -> size in bytes of the DECOMPRESSED file: the cap when decompressing (a gzip bomb
    # stops there), and the size an unverifiable copy must have.
    sizes: dict[str, int] = field(default_factory=dict)
    # MD5 of published archives (CIFAR's Toronto page publishes only MD5), and how the files are laid out.
    md5: dict[str, str] = field(default_factory=dict)
    format: str = "idx"


def _idx(**fields: Any) -> DatasetInfo:
    """An MNIST-like dataset: 28x28 greyscale, 10 classes, the four IDX files of MNIST's names and sizes."""
    return DatasetInfo(input_shape=(28, 28, 1), num_classes=10, files=dict(_IDX_FILES), sizes=dict(_IDX_SIZES), **fields)


# MNIST carries digests of the decompressed IDX files (from ../shared/data/mnist/SHA256SUMS),
# so any mirror or any gzip recompression of the same data verifies.
_MNIST = _idx(
    name="mnist",
    class_names=tuple(str(digit) for digit in range(10)),
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

# Fashion-MNIST carries digests of the decompressed IDX files too, so Debian's recompressed
# `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist) verifies like any mirror.
# Computed from that package's files (0.0~git20200523.55506a9-1) decompressed; several independent
# loaders pin the same values for the upstream archives.
_FASHION_MNIST = _idx(
    name="fashion-mnist",
    class_names=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    sha256={
        "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    license="MIT",
)

# KMNIST carries SHA-256 digests of the .gz archives as published, not of the decompressed files:
# no source we could check publishes the latter, and a checksum is never guessed. Values from
# pytorch/vision torchvision/prototype/datasets/_builtin/mnist.py; several independent loaders pin
# the same ones. Any other copy (decompressed by hand, recompressed) cannot be checked against
# them, so it is accepted with a warning if its IDX structure and sizes are right.
_KMNIST = _idx(
    name="kmnist",
    class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
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

# CIFAR-10/100: the binary archives, checked by the MD5 the Toronto page publishes (data.cifar reads them).
_MIRRORS = ("https://www.cs.toronto.edu/~kriz/", "http://www.cs.toronto.edu/~kriz/", "http://www.cs.utoronto.ca/~kriz/")
_CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
_CIFAR10 = DatasetInfo(
    name="cifar10", input_shape=(32, 32, 3), num_classes=10,
    class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    files={"archive": "cifar-10-binary.tar.gz"}, sha256={}, mirrors=_MIRRORS,
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html", license="no license stated; cite Krizhevsky 2009",
    md5={"archive": "c32a1d4ab5d03f1284b67883e8d87530"}, sizes={"archive": 170052171}, format="cifar10",
)
_CIFAR100 = DatasetInfo(
    name="cifar100", input_shape=(32, 32, 3), num_classes=100, class_names=tuple(_CIFAR100_FINE),
    files={"archive": "cifar-100-binary.tar.gz"}, sha256={}, mirrors=_MIRRORS,
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html", license="no license stated; cite Krizhevsky 2009",
    md5={"archive": "03b5dce01913d631647c71ecec9e9cb8"}, sizes={"archive": 168513733}, format="cifar100",
)
# Every registered dataset, one table: IDX files (`format` idx) and CIFAR archives.
REGISTRY: dict[str, DatasetInfo] = {info.name: info for info in (_MNIST, _FASHION_MNIST, _KMNIST, _CIFAR10, _CIFAR100)}


def get_info(name: str | dict) -> DatasetInfo:
    """The registered dataset called `name`, or a described source's facts (shape, classes), read only if undeclared."""
    from convstudy.data.sources import is_source, resolve, parse_source

    if is_source(name):
        src = resolve(parse_source(name))
        assert src.size is not None and src.channels is not None and src.classes is not None
        return DatasetInfo(name=src.canonical(), input_shape=(*src.size, src.channels), num_classes=len(src.classes),
                           class_names=src.classes, files={}, sha256={}, mirrors=(), homepage=src.path, license="",
                           format=src.kind)
    if not isinstance(name, str):
        raise UserError(f"dataset must be a registered name or a source table, not {type(name).__name__}")
    if name in REGISTRY:
        return REGISTRY[name]
    valid = sorted(REGISTRY)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    raise UserError(f'unknown dataset "{name}"; valid: {", ".join(valid)}{hint}')
