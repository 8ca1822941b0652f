"""The data layer: datasets by name and their train / val / test splits (IDX files found where they are, torchvision,
image folders), batches on the device or streamed, and the preparation of an uploaded or drawn picture as a model
input. Imports core.model (for UNLABELED) and nothing above it.
"""
from __future__ import annotations

from core.data.idx import (
    IdxError, IDX_FILES, SYSTEM_DIRS, TORCHVISION_FOLDERS, read_idx, find_idx, idx_file, load_idx_split,
    idx_search_dirs,
)
from core.data.sources import (
    DatasetUnavailable, ArrayDataset, official_split, folder_dataset, INSTALL_HINTS, missing_files,
)
from core.data.splits import holdout, keep_labels, subset_index, one_per_class, balanced_counts
from core.data.datasets import (
    DataConfig, DATASETS, NATIVE_SHAPES, SPLITS, CLASS_NAMES, VAL_HOLDOUT, MNIST5K_VAL_PER_CLASS, LabeledSubset,
    load_mnist5k, load_split, open_split, materialize, convert_images, fits_in_memory, class_names,
)
from core.data.batches import epoch_order, random_shift, random_flip, as_float_images, DeviceBatches, StreamBatches
from core.data.images import (
    MAX_PIXELS, MAX_ASPECT, MNIST_FRAME, ImageDecodeError, NoInkError, decode_image, read_pixels, to_model_input,
    decode_digit, prepare_digit, prepare_product, decode_prepared, PREPARATIONS, preparation_for, enlarge,
)
from core.data.examples import EXAMPLES_DIR, SHIPPED_EXAMPLES, MAX_EXAMPLES, ExampleSet, load_examples

__all__ = [
    "IdxError", "IDX_FILES", "SYSTEM_DIRS", "TORCHVISION_FOLDERS", "read_idx", "find_idx", "idx_file",
    "load_idx_split", "idx_search_dirs", "DatasetUnavailable", "ArrayDataset", "official_split", "folder_dataset",
    "INSTALL_HINTS", "missing_files", "holdout", "keep_labels", "subset_index", "one_per_class", "balanced_counts",
    "DataConfig", "DATASETS", "NATIVE_SHAPES", "SPLITS", "CLASS_NAMES", "VAL_HOLDOUT", "MNIST5K_VAL_PER_CLASS",
    "LabeledSubset", "load_mnist5k", "load_split", "open_split", "materialize", "convert_images", "fits_in_memory",
    "class_names", "epoch_order", "random_shift", "random_flip", "as_float_images", "DeviceBatches",
    "StreamBatches", "MAX_PIXELS", "MAX_ASPECT", "MNIST_FRAME", "ImageDecodeError", "NoInkError", "decode_image",
    "read_pixels", "to_model_input", "decode_digit", "prepare_digit", "prepare_product", "decode_prepared",
    "PREPARATIONS", "preparation_for", "enlarge", "EXAMPLES_DIR", "SHIPPED_EXAMPLES", "MAX_EXAMPLES", "ExampleSet",
    "load_examples",
]
