"""The benchmark layout's answer key (BENCHMARK.md): `truth.csv`, one row per query photo."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable


def write_truth(out: Path, rows: Iterable[tuple[str, str, str]]) -> None:
    """Write `out/truth.csv`: (query file name, right label or '' for a stranger, where it was cut from), by name."""
    with open(out / "truth.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["query", "label", "source"])
        writer.writerows(sorted(rows))
