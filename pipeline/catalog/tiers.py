"""Which of the newest segments a commit merges: a levelled policy with bounded work.

A commit appends one small segment. Merging every small segment whenever
there are too many (the policy before this one) rewrote the whole tail of
the catalog in one commit: at 10k entries the ninth daemon batch took 11.8 s
to rewrite 10,300 entries' keypoints, and at 1M, with the big segments
filling the segment budget, every commit would have rewritten a tail that
only grows. Here segments live on levels (level = floor(log_factor(size))),
`factor` segments of one level (or below) are merged into one of the next,
as in Lucene's log merge policy: an entry is rewritten about once per level
(log_factor(big / batch) times), and a merge never writes more than `big`
entries. Segments over `big / factor` entries are never merged by a commit.
Simulated over 1M entries (25,000 commits of 40, factor 8, 16 small
segments at most): each entry is written 3.0 times, the largest merge writes
20,480 entries, 59 segments remain; in commits of one photo: 9.7 times,
39,777 entries at most, 37 segments.
"""

from __future__ import annotations

import math
from typing import Sequence


def level(size: int, factor: int) -> int:
    """The level of a segment of `size` entries (plus tombstones): floor(log_factor(size)), 0 for 0 or 1."""
    return int(math.log(max(size, 1), factor) + 1e-9)


def merge_count(sizes: Sequence[int], big: int, factor: int = 8, max_small: int = 16) -> int:
    """How many of the newest segments one merge takes (0: none).

    Parameters
    ----------
    sizes : sequence of int
        Entries plus tombstones of each live segment, oldest first.
    big : int
        No merge writes more than this; segments over ``big / factor`` (of which
        `factor` together would pass it) are never merged again.
    factor : int
        Segments of one level merged together (>= 2).
    max_small : int
        Mergeable segments kept before the newest run of the lowest levels is
        merged even with fewer than `factor` of a level.

    Returns
    -------
    int
        0, or n >= 2: merge the newest n segments into one. Apply again after
        a merge (one merge may complete a run on the next level).
    """
    if factor < 2:
        raise ValueError(f"factor must be at least 2, not {factor}")
    tail = 0  # the newest segments a merge may take: those of which `factor` together stay within `big`
    while tail < len(sizes) and sizes[len(sizes) - 1 - tail] * factor <= big:
        tail += 1
    small = list(sizes[len(sizes) - tail:])
    crowded = tail > max_small
    for lv in range(level(max(small, default=1), factor) + 1):
        run = peers = 0  # the newest segments of level <= lv, and how many of them are of level lv
        while run < tail and (seg := level(small[tail - 1 - run], factor)) <= lv:
            run += 1
            peers += seg == lv
        if peers >= factor or (crowded and run >= 2):
            # Too many small segments: the newest run of the lowest levels goes first (the cheapest merge).
            return run if sum(small[tail - run:]) <= big else 0
    return 0
