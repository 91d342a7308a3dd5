"""The one writer of the catalog: register, rename, remove, reembed.

Every front-end (CLI, daemon, server) changes the catalog through these four
operations, each taking whole entries: no caller builds an entry field by
field, and a rename is `dataclasses.replace` of the stored entry, so it keeps
every descriptor (keypoints included) and its registration time. Entries are
checked at the door (`check_entry`), so a writer cannot store one the matcher
could not use.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from pipeline.catalog.entries import CatalogEntry, EntryError, NewEntry, check_entry
from pipeline.catalog.record import CatalogIndex
from pipeline.catalog.snapshot import CatalogSnapshot


@dataclass(frozen=True)
class Registered:
    """What a registration did.

    Attributes
    ----------
    added : tuple of CatalogEntry
        The entries stored by this call, as stored.
    duplicates : tuple of CatalogEntry
        For photos whose bytes were already registered: the entries already
        stored (one per duplicate photo given).
    generation : int
        The catalog generation after the call.
    """

    added: tuple[CatalogEntry, ...]
    duplicates: tuple[CatalogEntry, ...]
    generation: int


class CatalogWriter:
    """Changes the catalog held by `record`; safe to share between threads.

    Parameters
    ----------
    record : CatalogIndex
        The record to write (readers may share it: its snapshots stay valid).
    model_id : str
        The loaded encoder's id, stored with every registered entry.
    require_local : bool
        Refuse entries without keypoints (`local.enabled` is on).
    features : dict or None
        The settings that shaped the descriptors (`pipeline.prepare.feature_settings`),
        recorded in the manifest by `reembed` (a commit records the record's own).
    """

    def __init__(self, record: CatalogIndex, model_id: str, require_local: bool, features: dict | None = None) -> None:
        self.record = record
        self.model_id = model_id
        self.require_local = require_local
        self.features = features

    def register(self, entries: Sequence[NewEntry], place: Callable[[NewEntry], NewEntry] | None = None) -> Registered:
        """Store new photos in one commit; photos already registered are reported, not stored again.

        Parameters
        ----------
        entries : sequence of NewEntry
        place : callable, optional
            Called, under the writer lock, for each entry that will really be
            added; returns the entry as it must be stored (the server puts the
            uploaded file in the catalog folder here and returns the entry
            with that path). Duplicates are never placed.

        Raises
        ------
        EntryError
            When an entry (before or after `place`) could not serve the matcher.
        """
        for entry in entries:
            check_entry(entry, self.require_local)

        def placed(fresh: list[NewEntry]) -> list[NewEntry]:
            out = [place(e) for e in fresh] if place else fresh
            for before, after in zip(fresh, out):
                if after.sha256 != before.sha256:
                    raise EntryError(f"{before.path}: placing the photo changed its sha256")
                check_entry(after, self.require_local)
            return out

        result = self.record.commit(entries, model_id=self.model_id, before_write=placed)
        stored = self.record.get
        added = tuple(e for e in map(stored, result.added) if e is not None)
        duplicates = tuple(e for e in map(stored, result.duplicates) if e is not None)
        return Registered(added, duplicates, result.generation)

    def rename(self, entry: CatalogEntry, path: str | Path, label: str) -> CatalogEntry:
        """Move `entry` to `path` with `label`, keeping every descriptor and its registration time."""
        moved = replace(entry, path=str(path), label=label)
        check_entry(moved, self.require_local)
        self.record.commit([moved], removes=[entry.sha256], model_id=self.model_id)
        return self.record.get(entry.sha256) or moved

    def remove(self, entries: Sequence[CatalogEntry]) -> tuple[str, ...]:
        """Remove `entries`; returns the sha256 of those that were still registered."""
        if not entries:
            return ()
        return self.record.commit(removes=[e.sha256 for e in entries]).removed

    def reembed(self, entries: Sequence[NewEntry], model_id: str) -> None:
        """Replace the whole catalog by `entries`, re-described with the encoder `model_id` and this writer's features, in one step."""
        for entry in entries:
            check_entry(entry, self.require_local)
        self.record.replace_all(entries, model_id, self.features)
        self.model_id = model_id

    def snapshot(self) -> CatalogSnapshot:
        """The catalog as it stands now (after this writer's last change)."""
        return self.record.snapshot()
