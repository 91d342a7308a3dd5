"""Matcher stages, each a separate step that reports its evidence, and `run`, their sequence.

`shortlist` (embedding cosine, widened by `lbp_nearest` and keypoint `vote`s)
-> `refine` (LBP/SVC) -> `verify` (local features + RANSAC) -> `decide`
(status, label, confidence; `fuse` when verification is on). Each stage takes
plain arrays and returns a frozen dataclass that reports its own evidence, so
a stage can be tested, switched off or replaced alone; `run` (in `run.py`)
is the one place they are put in sequence.
"""

from pipeline.matcher.decide import Decision, decide
from pipeline.matcher.fuse import LabelEvidence, fuse, gather
from pipeline.matcher.refine import Refinement, refine
from pipeline.matcher.run import Outcome, Query, Ranked, Searchable, run
from pipeline.matcher.shortlist import Candidates, Shortlist, lbp_nearest, shortlist, widen
from pipeline.matcher.verify import Verified, verify

__all__ = [
    "Candidates", "Decision", "LabelEvidence", "Outcome", "Query", "Ranked", "Refinement", "Searchable", "Shortlist", "Verified",
    "decide", "fuse", "gather", "lbp_nearest", "refine", "run", "shortlist", "verify", "widen",
]
