"""Datasets: a registry of MNIST-like datasets, verified IDX loading, mirrored download, splits."""

from convstudy.data.load import Dataset, dataset_status, load_dataset, resolve_data_dir
from convstudy.data.registry import REGISTRY, DatasetInfo, get_info
from convstudy.data.split import stratified_indices, stratified_split

__all__ = [
    "REGISTRY",
    "Dataset",
    "DatasetInfo",
    "dataset_status",
    "get_info",
    "load_dataset",
    "resolve_data_dir",
    "stratified_indices",
    "stratified_split",
]
