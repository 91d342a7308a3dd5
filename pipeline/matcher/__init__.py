"""Matcher stages, each a separate step that reports its evidence.

`shortlist` (embedding cosine, widened by `lbp_nearest`) -> `refine`
(LBP/SVC) -> `verify` (local features + RANSAC) -> `decide` (status, label,
confidence; `fuse` when verification is on). Each stage takes plain arrays and returns a frozen
dataclass, so a stage can be tested, switched off or replaced alone.
"""

from pipeline.matcher.decide import Decision, decide
from pipeline.matcher.fuse import LabelEvidence, fuse, gather
from pipeline.matcher.refine import Refinement, refine
from pipeline.matcher.shortlist import Shortlist, lbp_nearest, shortlist, widen
from pipeline.matcher.verify import Verified, verify

__all__ = [
    "Decision", "LabelEvidence", "Refinement", "Shortlist", "Verified",
    "decide", "fuse", "gather", "lbp_nearest", "refine", "shortlist", "verify", "widen",
]
