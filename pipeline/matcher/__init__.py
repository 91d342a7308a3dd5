"""Matcher stages, each a separate step that reports its evidence.

`shortlist` (embedding cosine) -> `refine` (LBP/SVC) -> `decide` (status,
label, confidence). Each stage takes plain arrays and returns a frozen
dataclass, so a stage can be tested, switched off or replaced alone.
"""

from pipeline.matcher.decide import Decision, decide
from pipeline.matcher.refine import Refinement, refine
from pipeline.matcher.shortlist import Shortlist, shortlist

__all__ = ["Decision", "Refinement", "Shortlist", "decide", "refine", "shortlist"]
