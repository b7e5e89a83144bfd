"""What the capabilities share: configs, run folders, data resolution, progress, errors."""

from winnow.common.config import Config, apply_overrides, config_to_yaml, load_config
from winnow.common.data import dataset_path, list_datasets, verify_checksums
from winnow.common.exceptions import (
    ChecksumError,
    ConfigError,
    DataNotFoundError,
    MissingExtraError,
    WinnowError,
)
from winnow.common.progress import track_progress
from winnow.common.runs import RunDir, atomic_path, atomic_write_text

__all__ = [
    "ChecksumError",
    "Config",
    "ConfigError",
    "DataNotFoundError",
    "MissingExtraError",
    "RunDir",
    "WinnowError",
    "apply_overrides",
    "atomic_path",
    "atomic_write_text",
    "config_to_yaml",
    "dataset_path",
    "list_datasets",
    "load_config",
    "track_progress",
    "verify_checksums",
]
