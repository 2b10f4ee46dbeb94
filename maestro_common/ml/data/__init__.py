"""Datasets, IDX file I/O and federated partitioning for Maestro-FL."""

from maestro_common.ml.data.arrays import DATASET_INFO, ArrayDataset, DatasetInfo
from maestro_common.ml.data.datasets import (
    DatasetUnavailableError,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
)
from maestro_common.ml.data.hub import hf_to_array_dataset
from maestro_common.ml.data.idx import read_idx, write_idx
from maestro_common.ml.data.partition import SCHEMES, partition_indices, train_val_split

__all__ = [
    "DATASET_INFO",
    "SCHEMES",
    "ArrayDataset",
    "DatasetInfo",
    "DatasetUnavailableError",
    "hf_to_array_dataset",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "partition_indices",
    "read_idx",
    "train_val_split",
    "write_idx",
]
