"""The catalog lane's next move: a pure function of what it holds and how long it has waited.

The daemon runs two lanes (see `pipeline.daemon.service`): queries are
answered in one, catalog photos are decoded, embedded and committed in the
other. Queries go first by construction, not by turns: the query lane shares
no lock with this one and runs at a higher CPU priority, so the catalog lane
need not pause for queries (it did, in an earlier version, and a steady
query stream then stalled indexing whenever the backlog was below a full
batch). Each catalog commit becomes visible to queries when the catalog
lane *publishes* a snapshot (an immutable generation with everything the
matcher derives from it already built). This module decides, for the catalog
lane, what to do now: collect finished photos from the worker pool, give it
more, embed and commit a batch, publish, or wait. It reads no clock and
touches no file: every input is in a `LaneState`, so the rules are tested
exactly (tests/test_scheduler.py).

Rules, in order:

1. Collect photos the pool has finished (cheap; frees pool slots).
2. Keep the pool full: up to `BatchPolicy.pool_limit` photos in flight (one
   at a time while the suspects of a worker crash are re-run).
3. Commit the batch when it reached the target size; when nothing more is
   coming (no photo waiting or in flight); or when its first photo waited
   `wait_s` and the photos in flight cannot fill it.
4. Publish a committed generation when no catalog work is left, or once the
   time since the last publication is `PUBLISH_COST_RATIO` times what that
   publication cost: building the derived data of a big catalog (the
   keypoint vote index) then takes at most ~1/(1 + ratio) of the lane.
5. Otherwise wait, until the batch's deadline or for new events.

Batching adapts to load: the target batch grows with the backlog (photos
waiting, in flight or prepared), from `base` for a trickle to `most` for a
burst, so a burst pays the per-commit costs (segment write and fsync, the
snapshot, the derived index) a few times instead of once per 32 photos,
while a single photo is visible within `wait_s` plus one commit.
"""

from __future__ import annotations

from dataclasses import dataclass

PUBLISH_COST_RATIO = 4.0
IDLE_WAIT_S = 0.25  # nothing to do: wake this often to check for other writers' commits


@dataclass(frozen=True)
class BatchPolicy:
    """How the catalog lane batches.

    Attributes
    ----------
    base : int
        Batch size for a trickle (`daemon.catalog_batch_size`).
    most : int
        Largest batch, reached under a burst (`daemon.catalog_batch_max`).
    wait_s : float
        Seconds a batch's first photo waits for others (`daemon.catalog_batch_wait_s`).
    workers : int
        Worker processes (`daemon.workers`).
    """

    base: int
    most: int
    wait_s: float
    workers: int

    def target(self, backlog: int) -> int:
        """Batch size for `backlog` photos known and not yet committed.

        A quarter of the backlog, within [base, most]: a burst of 1000 gives
        batches of `most`, the tail of a burst shrinks back towards `base`.
        """
        return max(self.base, min(self.most, backlog // 4))

    def pool_limit(self, backlog: int) -> int:
        """Photos in the pool at once: a whole batch, plus work for every worker while it is committed."""
        return self.target(backlog) + 2 * self.workers


@dataclass(frozen=True)
class LaneState:
    """What the catalog lane holds at one instant.

    Attributes
    ----------
    waiting : int
        Ready catalog photos not yet given to the pool.
    inflight : int
        Photos in the pool (finished or not).
    finished : int
        Of those, photos the pool has finished (collectable now).
    batch : int
        Prepared photos waiting to be embedded and committed.
    batch_age_s : float
        Seconds since the batch's first photo was prepared (0 when empty).
    suspects : bool
        Files in flight when a worker died are being re-run one at a time.
    unpublished : bool
        A committed generation is not yet visible to queries.
    since_publish_s : float
        Seconds since the last publication.
    publish_cost_s : float
        What the last publication cost (building the derived data), in s.
    """

    waiting: int = 0
    inflight: int = 0
    finished: int = 0
    batch: int = 0
    batch_age_s: float = 0.0
    suspects: bool = False
    unpublished: bool = False
    since_publish_s: float = 0.0
    publish_cost_s: float = 0.0

    @property
    def backlog(self) -> int:
        return self.waiting + self.inflight + self.batch


@dataclass(frozen=True)
class Collect:
    """Take the photos the pool has finished."""


@dataclass(frozen=True)
class Submit:
    """Give `count` waiting photos to the pool."""

    count: int


@dataclass(frozen=True)
class Commit:
    """Embed and commit the batch."""


@dataclass(frozen=True)
class Publish:
    """Build the latest generation's derived data and make it the one queries read."""


@dataclass(frozen=True)
class Wait:
    """Nothing to do for `seconds` (or until an event arrives)."""

    seconds: float


Step = Collect | Submit | Commit | Publish | Wait


def next_step(state: LaneState, policy: BatchPolicy) -> Step:
    """The catalog lane's next move (see the module's rules)."""
    if state.finished:
        return Collect()
    limit = 1 if state.suspects else policy.pool_limit(state.backlog)
    if state.waiting and state.inflight < limit:
        return Submit(min(state.waiting, limit - state.inflight))
    commit, deadline = _commit_now(state, policy)
    if commit:
        return Commit()
    if state.unpublished and _publish_now(state):
        return Publish()
    waits = [IDLE_WAIT_S if not state.inflight else 0.02]
    if deadline is not None:
        waits.append(deadline)
    if state.unpublished:
        waits.append(max(0.0, PUBLISH_COST_RATIO * state.publish_cost_s - state.since_publish_s))
    return Wait(max(0.005, min(waits)))


def _commit_now(state: LaneState, policy: BatchPolicy) -> tuple[bool, float | None]:
    """Whether to commit now, else in how many seconds the batch's deadline falls (None: no deadline)."""
    if not state.batch:
        return False, None
    if state.batch >= policy.most:
        return True, None
    target = policy.target(state.backlog)
    nothing_coming = not state.inflight and not state.waiting
    waited = state.batch_age_s >= policy.wait_s
    more_coming = state.batch + state.inflight >= target
    due = state.batch >= target or nothing_coming or (waited and not more_coming)
    if due:
        return True, None
    return False, max(0.0, policy.wait_s - state.batch_age_s) if not more_coming else None


def _publish_now(state: LaneState) -> bool:
    if not state.backlog:
        return True
    return state.since_publish_s >= PUBLISH_COST_RATIO * state.publish_cost_s
