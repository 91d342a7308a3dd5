#!/usr/bin/env python3
"""What saving the keypoint vote store costs as a catalog grows: one file rewritten whole against geometric runs.

    python bench/bench_vote_runs.py WORK [--entries 200000] [--every 2000] [--per-entry 150] [--policy runs|one-file|both]

Feeds the store's own save path (`VoteStore._saved` and `_compacted`,
`Postings.merged`, the file format) with synthetic postings: `--every`
entries at a time, `--per-entry` postings each (random words of the shipped
vocabulary's size, random signatures), as `VoteStore.follow` saves them.
Prints, for the runs policy (each batch saved as a run, a run merged into
the one before once it holds 1/FANOUT of its slots) and for the policy it
replaced (every batch merged into one file, rewritten whole), the total
bytes written, the total and the largest save time, and the runs on disk
at the end. The keypoints and the catalog play no part in these costs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.search.vocabulary import Vocabulary  # noqa: E402
from pipeline.search.votes import FILE, Postings, Run, VoteStore, _save  # noqa: E402


def batch(rng: np.random.Generator, words: int, start: int, count: int, per_entry: int) -> Postings:
    n = count * per_entry
    return Postings.of(words, rng.integers(0, words, n), np.repeat(np.arange(start, start + count, dtype=np.uint32), per_entry),
                       rng.integers(0, 2**63, n, dtype=np.uint64))


def bytes_in(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("votes*.bin"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--every", type=int, default=2000)
    ap.add_argument("--per-entry", type=int, default=150)
    ap.add_argument("--policy", choices=("runs", "one-file", "both"), default="both")
    args = ap.parse_args(argv)
    vocab = Vocabulary.load()
    for policy in [p for p in ("runs", "one file") if args.policy in ("both", p.replace(" ", "-"))]:
        directory = args.work / policy.replace(" ", "_")
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        store = VoteStore(directory, vocab, per_entry=args.per_entry, merge_every=args.every)
        store._catalog_id = "bench"  # noqa: SLF001 - the saved files' catalog id
        rng = np.random.default_rng(0)
        runs: tuple[Run, ...] = ()
        base = Postings.empty(vocab.size)
        written, total, largest = 0, 0.0, 0.0
        for start in range(0, args.entries, args.every):
            count = min(args.every, args.entries - start)
            new = batch(rng, vocab.size, start, count, args.per_entry)
            t = time.perf_counter()
            if policy == "runs":
                before = {p.name: p.stat().st_mtime_ns for p in directory.glob("votes*.bin")}
                runs = store._compacted((*runs, store._saved(Run(runs[-1].stop if runs else 0, start + count, new))))  # noqa: SLF001
                after = {p.name: p.stat() for p in directory.glob("votes*.bin")}
                written += sum(s.st_size for name, s in after.items() if before.get(name) != s.st_mtime_ns)
            else:
                base = base.merged(new)
                _save(directory / FILE, base, 0, start + count, "bench", vocab.vocab_id, args.per_entry)
                written += (directory / FILE).stat().st_size
            spent = time.perf_counter() - t
            total, largest = total + spent, max(largest, spent)
        files = len(list(directory.glob("votes*.bin")))
        print(f"{policy:9s} entries {args.entries:,} every {args.every:,}: written {written / 1e9:.2f} GB, "
              f"save time total {total:.1f} s, largest {largest * 1e3:.0f} ms, files at the end {files} "
              f"({bytes_in(directory) / 1e6:.0f} MB)", flush=True)
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
