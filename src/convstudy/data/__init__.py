"""Datasets: registered ones (MNIST-like IDX, CIFAR binary archives, verified, mirrored), described sources
(image folder, NPZ, CSV) decoded once into a cache, and splits."""

from convstudy.data.load import Dataset, dataset_status, load_dataset, resolve_data_dir
from convstudy.data.registry import REGISTRY, DatasetInfo, get_info
from convstudy.data.sources import Source, canonical_source, is_source, parse_source
from convstudy.data.split import stratified_indices, stratified_split

__all__ = [
    "REGISTRY",
    "Source",
    "canonical_dataset",
    "canonical_source",
    "is_source",
    "parse_source",
    "Dataset",
    "DatasetInfo",
    "dataset_status",
    "get_info",
    "load_dataset",
    "resolve_data_dir",
    "stratified_indices",
    "stratified_split",
]


def canonical_dataset(value: object) -> str:
    """A study's `dataset` as stored: a registered name as is, a source as its canonical compact string."""
    from convstudy.errors import UserError

    if is_source(value):
        return canonical_source(value)
    if not isinstance(value, str):
        raise UserError(f"dataset must be a registered name or a source table (kind, path, ...), "
                        f"not {type(value).__name__}")
    return value
