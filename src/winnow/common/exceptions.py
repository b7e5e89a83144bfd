"""Errors raised on bad input, each also a built-in error so callers may catch either."""


class WinnowError(Exception):
    """Base of every error winnow raises on purpose; its message says what to do."""


class ConfigError(WinnowError, ValueError):
    """A configuration value or key is invalid; the message names its dotted path and the fix."""


class InputError(WinnowError, ValueError):
    """A parameter of a helper shared by the capabilities is invalid; the message says the fix."""


class InputFileError(WinnowError, ValueError):
    """A user's file is empty, binary, not UTF-8, not CSV/Parquet, or lacks a column; the message
    names the file, the setting or flag it came from, and the fix."""


class DataNotFoundError(WinnowError, FileNotFoundError):
    """A data set is not where winnow looked; the message names every path searched."""


class ChecksumError(WinnowError, ValueError):
    """A data file's SHA-256 differs from its SHA256SUMS entry, or a listed file is missing."""


class MissingExtraError(WinnowError, ImportError):
    """An optional dependency is absent; the message names the extra that installs it."""


class ModelFolderExistsError(WinnowError, FileExistsError):
    """A model would be saved over an existing folder; the message names it and ``--overwrite``."""


class ProvenanceError(WinnowError, ValueError):
    """A saved model's manifest disagrees with the models beside it, or cannot be read; the
    message names both folders and the fix."""
