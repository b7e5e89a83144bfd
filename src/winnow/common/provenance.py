"""Provenance of saved models: a manifest in every model folder, and the checks that read it.

A bare model folder says nothing about where it came from, so a student can end up beside
teachers of another run (a ``search train`` stopped after saving its teachers) and a new model
can silently replace one that was still needed. :func:`save_model_folder` therefore writes the
model under a temporary name, adds ``winnow-manifest.json`` and renames the folder into place
(never half a model, never over an existing one unless asked); :func:`check_parents` compares
the parents a manifest names with the folders found there now.

The manifest (``format`` 1) holds::

    save_id                      random: two saves never share a manifest hash, even when
                                 made within one second from the same config
    winnow_version, created      package version, ISO time with offset
    run                          {"name", "folder"} of the run that made it, or null
    config_sha256                SHA-256 of the resolved config as canonical JSON
    data_sha256                  SHA-256 of what identifies the training data, or null
    parents                      [{"path", "relative_path", "manifest_sha256"}]: each model it
                                 was trained, distilled or pruned from; ``relative_path`` (from
                                 this folder) and the hash are null for hub ids and bundled names
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import winnow
from winnow.common.exceptions import ModelFolderExistsError, ProvenanceError
from winnow.common.inputs import read_json_object
from winnow.common.runs import atomic_write_text, to_jsonable

__all__ = [
    "MANIFEST_FILE",
    "Provenance",
    "check_new_folder",
    "check_parents",
    "content_sha256",
    "manifest_sha256",
    "read_manifest",
    "save_model_folder",
]

MANIFEST_FILE = "winnow-manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Provenance:
    """What a model was made from.

    config: the resolved config (a pydantic model or anything JSON-able); only its hash is kept.
    run: the :class:`~winnow.common.runs.RunDir` that made it; ``None`` outside a run.
    data: anything JSON-able that identifies the training data (hashed); ``None`` when none.
    parents: the models it was trained, distilled or pruned from: folders, hub ids, names.
    """

    config: Any
    run: Any = None
    data: Any = None
    parents: Sequence[str | Path] = ()


def content_sha256(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as canonical JSON (sorted keys, no spaces): equal configs or
    data give equal hashes whatever their key order."""
    text = json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest_sha256(folder: str | Path) -> str | None:
    """SHA-256 (hex) of the manifest file's bytes in ``folder``; ``None`` when it has none.

    The manifest holds a random ``save_id``, so this identifies one save of one model.
    """
    path = Path(folder) / MANIFEST_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def read_manifest(folder: str | Path) -> dict | None:
    """The manifest of ``folder``; ``None`` when it has none (saved before manifests existed).

    Raises :class:`ProvenanceError` naming the file when it is not a JSON object.
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    return read_json_object(path, ProvenanceError, "the folder is damaged: save the model again")


def check_new_folder(folder: str | Path, overwrite: bool) -> None:
    """Raise :class:`ModelFolderExistsError` when ``folder`` exists and ``overwrite`` is off.

    Call it before training, so the refusal costs nothing; :func:`save_model_folder` checks again.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise ModelFolderExistsError(
            f"{folder} already exists; pass --overwrite (overwrite=True) to replace it, or save to "
            "another folder"
        )


def save_model_folder(
    folder: str | Path,
    write: Callable[[Path], object],
    provenance: Provenance,
    overwrite: bool = False,
) -> Path:
    """Save a model into ``folder`` with its manifest, all at once; return ``folder``.

    ``write(tmp)`` fills a fresh temporary folder beside ``folder`` (e.g. ``save_pretrained``),
    the manifest is added, and the folder is renamed into place: a crash leaves the previous
    model or the new one, never a mix. The temporary folder is made with :func:`os.mkdir`, so it
    follows the umask (``tempfile.mkdtemp`` makes every folder 0700, and a rename keeps that).
    Raises :class:`ModelFolderExistsError` when ``folder`` exists and ``overwrite`` is off.
    """
    folder = Path(folder)
    check_new_folder(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.mkdir()
    try:
        write(tmp)
        manifest = _manifest(folder, provenance)
        atomic_write_text(tmp / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
        _move_into_place(tmp, folder, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def check_parents(folder: str | Path, fix: str, only: Iterable[str | Path] | None = None) -> None:
    """Raise :class:`ProvenanceError` when a parent named by ``folder``'s manifest is in its
    place (``relative_path`` from ``folder``) but holds another model than the one ``folder``
    was made from; ``fix`` ends the message.

    ``only`` limits the check to those parent folders (e.g. the teacher a student is trained
    with now). Parents that are gone, hub ids, and folders without a manifest pass: a model
    stands alone; what this catches is a set of models that claims to belong together but
    does not.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return
    wanted = None if only is None else {Path(p).resolve() for p in only}
    for parent in manifest.get("parents", []):
        relative = parent.get("relative_path")
        if relative is None:
            continue
        place = (folder / relative).resolve()
        if (wanted is not None and place not in wanted) or not place.is_dir():
            continue
        expected, found = parent.get("manifest_sha256"), manifest_sha256(place)
        if found != expected:
            raise ProvenanceError(
                f"{folder} was made from {place} (manifest {_short(expected)}), but {place} now "
                f"holds another model (manifest {_short(found)}); {fix}"
            )


def _manifest(folder: Path, provenance: Provenance) -> dict:
    run = provenance.run
    return {
        "format": MANIFEST_FORMAT,
        "save_id": uuid.uuid4().hex,
        "winnow_version": winnow.__version__,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "run": None if run is None else {"name": run.name, "folder": str(Path(run.path).resolve())},
        "config_sha256": content_sha256(provenance.config),
        "data_sha256": None if provenance.data is None else content_sha256(provenance.data),
        "parents": [_parent(location, folder) for location in provenance.parents],
    }


def _parent(location: str | Path, child: Path) -> dict:
    local = Path(location).expanduser()
    if not local.is_dir():  # a hub id or a bundled name: nothing on disk to compare later
        return {"path": str(location), "relative_path": None, "manifest_sha256": None}
    resolved = local.resolve()
    return {
        "path": str(resolved),
        "relative_path": os.path.relpath(resolved, child.resolve()),
        "manifest_sha256": manifest_sha256(resolved),
    }


def _move_into_place(tmp: Path, folder: Path, overwrite: bool) -> None:
    """Rename ``tmp`` onto ``folder``; an existing one (``overwrite``) is moved aside first and
    deleted only once the new one is in place."""
    if not folder.exists():
        tmp.rename(folder)
        return
    check_new_folder(folder, overwrite)  # it may have appeared while the model was written
    old = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:12]}.old")
    folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old)


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12]
