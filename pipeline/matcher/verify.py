"""Stage 3: geometric verification of the top candidates with local features."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from pipeline.features.local import LocalFeatures, Verification, verify_pair
from pipeline.features.surface import SurfaceSpectrum, correlate, spectrum


@dataclass(frozen=True)
class Verified:
    """Verification of the first candidates, in the order given.

    Attributes
    ----------
    positions : tuple of int
        Positions (in the caller's candidate order) that were verified.
    results : tuple of Verification
        One per position; an entry without stored keypoints gets 0 inliers.
    query_keypoints : int
    deepened : int
        How many of the positions a second pass verified.
    inverted : int
        How many results are the light-inverted query's (`verify`'s `inverted`).
    tries : int
        Homographies fitted per candidate: 2 when the light-inverted keypoints were verified too.
    surfaces : int
        How many candidates' reliefs were correlated with the query's (`Verification.surface_peak`).
    correlated : tuple of (int, float)
        (position, relief peak) of candidates past the verified ones whose relief alone was correlated
        (`correlate_reliefs`): no keypoints were matched, so they are not among `positions`.
    """

    positions: tuple[int, ...]
    results: tuple[Verification, ...]
    query_keypoints: int
    deepened: int = 0
    inverted: int = 0
    tries: int = 1
    surfaces: int = 0
    correlated: tuple[tuple[int, float], ...] = ()

    def result_at(self, position: int) -> Verification | None:
        for p, r in zip(self.positions, self.results):
            if p == position:
                return r
        return None

    def peak_at(self, position: int) -> float | None:
        """The relief peak measured for `position`, by a verification or by `correlate_reliefs`; None: not correlated."""
        found = self.result_at(position)
        if found is not None:
            return found.surface_peak
        return next((peak for p, peak in self.correlated if p == position), None)

    def report(self) -> dict[str, Any]:
        """The stage's evidence for `stages.verify` of the result."""
        return {"enabled": True, "query_keypoints": self.query_keypoints, "verified": len(self.positions),
                "deepened": self.deepened, "light_inverted": self.inverted, "tries_per_candidate": self.tries,
                "max_inliers": max((r.inliers for r in self.results), default=0), "surfaces": self.surfaces + len(self.correlated),
                "correlated_only": len(self.correlated)}

    def extended(self, more: "Verified") -> "Verified":
        """These results and `more`'s (verified in a second pass, positions already past these)."""
        return Verified(self.positions + more.positions, self.results + more.results, self.query_keypoints,
                        self.deepened + len(more.positions), self.inverted + more.inverted, max(self.tries, more.tries),
                        self.surfaces + more.surfaces, self.correlated + more.correlated)

    def with_correlated(self, correlated: Sequence[tuple[int, float]]) -> "Verified":
        """These results and the relief peaks of later positions correlated alone (`correlate_reliefs`)."""
        return dataclasses.replace(self, correlated=self.correlated + tuple(correlated))


VERIFY_OFF = {"enabled": False, "query_keypoints": 0, "verified": 0, "deepened": 0, "light_inverted": 0, "tries_per_candidate": 0,
              "max_inliers": 0, "surfaces": 0, "correlated_only": 0}
"""`stages.verify` when verification is switched off."""


def verify(
    query: LocalFeatures | None,
    candidates: Sequence[LocalFeatures | None],
    max_candidates: int = 5,
    ratio: float = 0.8,
    ransac_px: float = 8.0,
    min_matches: int = 8,
    guided_ratio: float = 0.0,
    first_position: int = 0,
    inverted: LocalFeatures | None = None,
    surface: SurfaceSpectrum | None = None,
) -> Verified:
    """Verify the first `max_candidates` candidates against the query.

    The cap bounds the cost: each verification is one ratio-test matching and
    one RANSAC fit (a few ms each); `guided_ratio` > 0 adds guided matching
    under the first fit (`pipeline.features.local.verify_pair`).
    `first_position` is the position of `candidates[0]` in the caller's
    candidate order (a second pass over later candidates). `inverted`: the
    query's light-inverted keypoints (`pipeline.features.local.light_inverted`),
    verified against each candidate too; the candidate keeps the result with
    more inliers. `surface`: the query's relief (`pipeline.features.surface.spectrum`),
    correlated with each candidate's that kept one (`Verification.surface_peak`).
    """
    if query is None or len(query) == 0:
        return Verified((), (), 0 if query is None else len(query))
    positions, results, flipped, correlated = [], [], 0, 0
    for position, candidate in enumerate(candidates[:max_candidates]):
        if candidate is None:
            continue
        positions.append(first_position + position)
        found = verify_pair(query, candidate, ratio=ratio, ransac_px=ransac_px, min_matches=min_matches, guided_ratio=guided_ratio)
        if inverted is not None:
            other = verify_pair(inverted, candidate, ratio=ratio, ransac_px=ransac_px, min_matches=min_matches, guided_ratio=guided_ratio)
            if other.inliers > found.inliers:
                found, flipped = other, flipped + 1
        if surface is not None and candidate.surface is not None:
            found = dataclasses.replace(found, surface_peak=correlate(surface, spectrum(candidate.surface)).peak)
            correlated += 1
        results.append(found)
    return Verified(tuple(positions), tuple(results), len(query), inverted=flipped, tries=1 if inverted is None else 2,
                    surfaces=correlated)


def correlate_reliefs(surface: SurfaceSpectrum, candidates: Sequence[LocalFeatures | None],
                      first_position: int = 0) -> tuple[tuple[int, float], ...]:
    """The relief peak of each candidate that kept a relief, without matching keypoints: (position, peak).

    A correlation (~2 ms) is a few times cheaper than a verification, and
    on a relit bare surface it is the evidence that finds the right one
    (`pipeline.features.surface`); `first_position` is the position of
    `candidates[0]` in the caller's candidate order.
    """
    return tuple((first_position + i, correlate(surface, spectrum(c.surface)).peak)
                 for i, c in enumerate(candidates) if c is not None and c.surface is not None)
