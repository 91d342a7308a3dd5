"""Files shipped inside the package, found with `importlib.resources`.

* `default.yaml` - every setting with its default (the only place defaults live);
* `result.schema.json` - the result contract;
* `models/` - the shipped encoder (`.keras`, its `.json` metadata, the `.tflite` export).

They travel with the package, so `pip install .` (not only an editable
checkout) gives a `teaprint` that finds its settings, schema and model from
any working directory.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped(*parts: str) -> Path:
    """The filesystem path of a shipped file (`shipped("models", "x.keras")`).

    Raises
    ------
    RuntimeError
        When the package is not installed as plain files (e.g. run from a zip):
        the model runtimes need real paths.
    """
    root = files(__name__)
    if not isinstance(root, Path):
        raise RuntimeError(f"teaprint's data files are not on the filesystem ({root!r}); install the package unzipped")
    return root.joinpath(*parts)


DEFAULT_CONFIG = shipped("default.yaml")
RESULT_SCHEMA = shipped("result.schema.json")
