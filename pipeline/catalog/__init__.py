"""The catalog: the record on disk, its one writer, and snapshots for readers.

- `entries`: `NewEntry` (a photo to register), `CatalogEntry` (one stored),
  `label_from_path`, and the door check every stored entry passes.
- `record`: `CatalogIndex`, immutable HDF5 segments + an atomic manifest,
  crash-safe at any instant.
- `writer`: `CatalogWriter`, the only way entries change (register, rename,
  remove, reembed; whole entries only).
- `snapshot`: `CatalogSnapshot`, one committed generation, immutable: entries,
  their embedding and LBP matrices, keypoints, and what the matcher derives.
"""

from pipeline.catalog.entries import CatalogEntry, EntryError, NewEntry, check_entry, label_from_path
from pipeline.catalog.record import CatalogError, CatalogIndex, CommitResult, FeatureMismatchError, ModelMismatchError, features_agree
from pipeline.catalog.snapshot import CatalogSnapshot
from pipeline.catalog.writer import CatalogWriter, Registered

__all__ = [
    "CatalogEntry", "CatalogError", "CatalogIndex", "CatalogSnapshot", "CatalogWriter", "CommitResult", "EntryError", "FeatureMismatchError",
    "ModelMismatchError", "NewEntry", "Registered", "check_entry", "features_agree", "label_from_path",
]
