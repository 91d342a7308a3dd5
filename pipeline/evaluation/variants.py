"""Named stage variants for the ablation: each derives a `Config` from the user's.

Every variant runs on the same prepared queries (decode, LBP, keypoints and
embedding are computed once), so a variant may change only what happens after
preparation: the matcher's stages and thresholds. Each name switches every
stage explicitly on or off, so that it keeps meaning the same stages whatever
the user's config says:

============================  ================================================
embedding                     embedding cosine shortlist (no LBP second
                              source) + decide
embedding+lbp                 + LBP second shortlist source + LBP/SVC refine
                              + decide
embedding+lbp+verify          + geometric verification (local features,
                              RANSAC) + fused decision: the full pipeline
============================  ================================================

To add a stage, add one entry to `VARIANTS` and switch the new stage off in
the existing entries. A variant whose stages need more prepared data (as
verify needs keypoints) says so in `needs_local`; the shared preparation then
computes it once for all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from pipeline.config import Config, default_config


@dataclass(frozen=True)
class Variant:
    """One named set of matcher stages.

    Attributes
    ----------
    name : str
        As given to ``--stages`` and written in results and reports.
    description : str
        One line for the report.
    derive : callable
        Config -> Config; changes only `matcher` settings.
    """

    name: str
    description: str
    derive: Callable[[Config], Config]

    def needs_local(self, config: Config) -> bool:
        """Whether this variant's matcher uses local features (keypoints)."""
        return self.derive(config).matcher.verify.enabled


def stages(config: Config, lbp: bool, verify: bool) -> Config:
    """`config` with the LBP stages (second shortlist source, refine) and verify switched.

    The keypoint-vote source goes with verify (it needs its keypoints).
    """
    m = config.matcher
    shipped = default_config().matcher.shortlist
    lbp_top_k = (m.shortlist.lbp_top_k or shipped.lbp_top_k) if lbp else 0
    vote_top_k = (m.shortlist.vote_top_k or shipped.vote_top_k) if verify else 0
    return dataclasses.replace(
        config,
        matcher=dataclasses.replace(
            m,
            shortlist=dataclasses.replace(m.shortlist, lbp_top_k=lbp_top_k, vote_top_k=vote_top_k),
            refine=dataclasses.replace(m.refine, enabled=lbp),
            verify=dataclasses.replace(m.verify, enabled=verify),
        ),
    )


VARIANTS: dict[str, Variant] = {
    "embedding": Variant(
        "embedding",
        "embedding cosine shortlist + decide (LBP source, LBP/SVC refine and verify off)",
        lambda c: stages(c, lbp=False, verify=False),
    ),
    "embedding+lbp": Variant(
        "embedding+lbp",
        "embedding shortlist widened by LBP nearest + LBP/SVC refine + decide (verify off)",
        lambda c: stages(c, lbp=True, verify=False),
    ),
    "embedding+lbp+verify": Variant(
        "embedding+lbp+verify",
        "embedding+lbp + geometric verification (local features, RANSAC) + fused decision: the full pipeline",
        lambda c: stages(c, lbp=True, verify=True),
    ),
}


def parse_stages(text: str | None) -> list[Variant]:
    """Variants named in a comma-separated list (None or "" -> all, in registry order).

    Raises
    ------
    ValueError
        On an unknown name; the message lists the known ones.
    """
    if not text:
        return list(VARIANTS.values())
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown stage variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    return [VARIANTS[n] for n in dict.fromkeys(names)]
