"""Errors of the search capability; each is also the built-in error it refines."""

from winnow.common.exceptions import WinnowError

__all__ = [
    "DatasetFileNotFoundError",
    "DatasetFormatError",
    "JudgeEndpointError",
    "JudgeReplyError",
    "SavedArtifactError",
    "SearchInputError",
    "ServerBusyError",
    "ServerTimeoutError",
]


class SearchInputError(WinnowError, ValueError):
    """A search parameter or input is invalid; the message names it, the value and the fix."""


class DatasetFormatError(SearchInputError):
    """A data file has a malformed line; the message names the file and the 1-based line."""

    def __init__(self, path: object, line: int, problem: str):
        self.path = str(path)
        self.line = line
        super().__init__(f"{path}:{line}: {problem}")


class DatasetFileNotFoundError(WinnowError, FileNotFoundError):
    """A file a BEIR folder must hold is missing; the message names the path expected."""


class JudgeReplyError(WinnowError, ValueError):
    """A chat judge replied with text holding no 0-3 grade; the message quotes the reply."""


class JudgeEndpointError(WinnowError, RuntimeError):
    """A chat endpoint kept failing (429, 5xx, timeouts) or refused the request (other 4xx)."""


class SavedArtifactError(SearchInputError):
    """A saved index, manifest or model folder is missing, corrupt or mismatched; the message
    names the file and the fix (rebuild the index, pass another folder)."""


class ServerBusyError(WinnowError, RuntimeError):
    """The search server's request queue is full; ``retry_after_s`` estimates when it frees."""

    def __init__(self, message: str, retry_after_s: int):
        self.retry_after_s = retry_after_s
        super().__init__(message)


class ServerTimeoutError(WinnowError, TimeoutError):
    """A request waited for and ran in the search server longer than its timeout."""
