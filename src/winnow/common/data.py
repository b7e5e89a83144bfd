"""Where data sets live, and whether they are intact.

A data set is a folder named after it under the data root: ``$WINNOW_DATA`` when set, otherwise
``../shared/data`` beside the repository (checked next to the source tree, then next to the
working directory). A folder with a ``SHA256SUMS`` file (``sha256sum`` format, paths relative to
the folder) is verified before use; one without is used as it is, and reported "unverified". This
is the only module that reads the environment.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from winnow.common.exceptions import ChecksumError, DataNotFoundError

__all__ = [
    "ENV_VAR",
    "SHIPPED_DATASETS",
    "ChecksumReport",
    "data_file",
    "data_roots",
    "dataset_path",
    "find_dataset",
    "list_datasets",
    "verify_checksums",
]

ENV_VAR = "WINNOW_DATA"
CHECKSUM_FILE = "SHA256SUMS"
# The data sets the shared data folder holds, each with the extra whose jobs read it.
SHIPPED_DATASETS: dict[str, str] = {
    "routing": "route",
    "search": "search",
    "ridesourcing": "explain",
}
_REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class ChecksumReport:
    """Outcome of checking one data set folder against its ``SHA256SUMS``."""

    folder: Path
    listed: int
    mismatched: tuple[str, ...] = field(default=())
    missing: tuple[str, ...] = field(default=())

    @property
    def has_sums(self) -> bool:
        return (self.folder / CHECKSUM_FILE).is_file()

    @property
    def ok(self) -> bool:
        """Usable: no listed file changed or missing (a folder without sums is usable too)."""
        return not self.mismatched and not self.missing

    @property
    def verdict(self) -> str:
        """``"ok"`` (every listed file matches), ``"unverified"`` (no sums) or ``"failed"``."""
        if not self.ok:
            return "failed"
        return "ok" if self.has_sums else "unverified"

    @property
    def status(self) -> str:
        if not self.has_sums:
            return f"unverified (no {CHECKSUM_FILE})"
        if self.ok:
            return f"ok ({self.listed} files)"
        return f"FAILED ({len(self.mismatched)} changed, {len(self.missing)} missing)"


def data_roots() -> list[Path]:
    """Folders searched for data sets, in order."""
    if os.environ.get(ENV_VAR):
        return [Path(os.environ[ENV_VAR]).expanduser()]
    candidates = [_REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    unique: list[Path] = []
    for path in candidates:
        if path.resolve() not in [known.resolve() for known in unique]:
            unique.append(path)
    return unique


def dataset_path(name: str, verify: bool = True) -> Path:
    """Folder of data set ``name`` (e.g. ``"routing"``), checked against its SHA256SUMS.

    Raises :class:`DataNotFoundError` naming every folder searched, or :class:`ChecksumError`
    naming the files that differ from their recorded checksums.
    """
    folder = find_dataset(name)
    if folder is not None:
        if verify:
            report = verify_checksums(folder)
            if not report.ok:
                raise ChecksumError(_checksum_message(name, report))
        return folder
    where = ", ".join(str(root / name) for root in data_roots())
    raise DataNotFoundError(
        f"data set {name!r} not found; searched: {where}. Fix: place the shared data folder "
        f"beside the repository (../shared/data/{name}) or set {ENV_VAR} to the folder that "
        f"holds {name}/."
    )


def find_dataset(name: str) -> Path | None:
    """The folder of data set ``name`` under the first data root that has it, unchecked."""
    return next((root / name for root in data_roots() if (root / name).is_dir()), None)


def data_file(spec: str | Path) -> Path:
    """A file named either by a path that exists or as ``"<data set>/<file inside it>"``.

    ``data_file("ridesourcing/community_area_features.csv")`` resolves the data set through
    :func:`dataset_path` (so its checksums are verified) and then the file inside it.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    name, _, inner = str(spec).partition("/")
    known = name in SHIPPED_DATASETS or (
        name not in ("", ".", "..") and find_dataset(name) is not None
    )
    if not inner or path.is_absolute() or not known:  # a plain path that does not exist
        raise DataNotFoundError(
            f"{str(spec)!r}: no such file (nor a file of a shipped data set); fix: give the path "
            "of an existing CSV or Parquet file, or '<data set>/<file>' such as "
            "'ridesourcing/community_area_features.csv'"
        )
    candidate = dataset_path(name) / inner
    if not candidate.is_file():
        raise DataNotFoundError(f"{inner!r} is not a file of data set {name!r} ({candidate})")
    return candidate


def verify_checksums(folder: str | Path) -> ChecksumReport:
    """Compare every file listed in ``folder/SHA256SUMS`` with its recorded digest."""
    folder = Path(folder)
    sums = folder / CHECKSUM_FILE
    if not sums.is_file():
        return ChecksumReport(folder=folder, listed=0)
    entries = _parse_sums(sums.read_text(encoding="utf-8"))
    signature = tuple(_stat_signature(folder / rel) for rel, _ in entries)
    mismatched, missing = _check(str(folder.resolve()), tuple(entries), signature)
    return ChecksumReport(folder, len(entries), mismatched, missing)


def list_datasets() -> list[ChecksumReport]:
    """One report per data set folder found under the first existing data root."""
    for root in data_roots():
        if root.is_dir():
            return [verify_checksums(path) for path in sorted(root.iterdir()) if path.is_dir()]
    return []


def _parse_sums(text: str) -> list[tuple[str, str]]:
    entries = []
    for line in text.splitlines():
        if line.strip():
            digest, _, rel = line.strip().partition(" ")
            entries.append((rel.strip().lstrip("*"), digest.lower()))
    return entries


def _stat_signature(path: Path) -> tuple[str, int, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return (str(path), -1, -1)
    return (str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _check(
    folder: str, entries: tuple[tuple[str, str], ...], signature: tuple
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Hash the listed files; cached on their size and mtime so a process hashes them once."""
    mismatched, missing = [], []
    for rel, digest in entries:
        path = Path(folder) / rel
        if not path.is_file():
            missing.append(rel)
        elif _sha256(path) != digest:
            mismatched.append(rel)
    return tuple(mismatched), tuple(missing)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksum_message(name: str, report: ChecksumReport) -> str:
    parts = []
    if report.mismatched:
        parts.append("changed: " + ", ".join(report.mismatched))
    if report.missing:
        parts.append("missing: " + ", ".join(report.missing))
    return (
        f"data set {name!r} at {report.folder} does not match its {CHECKSUM_FILE} ("
        + "; ".join(parts)
        + "). Fix: restore the files from the source named in its README.md, "
        f"or point {ENV_VAR} at an intact copy."
    )
