"""The catalog lane's scheduler: every rule on exact states, no processes, no clock."""

from __future__ import annotations

import pytest

from pipeline.daemon.scheduler import (
    IDLE_WAIT_S, PUBLISH_COST_RATIO, BatchPolicy, Collect, Commit, LaneState, Publish, Submit, Wait, next_step,
)

POLICY = BatchPolicy(base=32, most=256, wait_s=0.5, workers=2)


def test_batches_grow_with_the_backlog_within_bounds() -> None:
    assert POLICY.target(1) == 32
    assert POLICY.target(200) == 50
    assert POLICY.target(1000) == 250
    assert POLICY.target(10_000) == 256
    assert POLICY.pool_limit(1000) == 254  # a whole batch, and work for both workers while it commits


def test_finished_photos_are_collected_before_anything_else() -> None:
    assert next_step(LaneState(waiting=5, inflight=3, finished=1, batch=300), POLICY) == Collect()


def test_the_pool_is_filled_to_its_limit_and_one_at_a_time_with_suspects() -> None:
    assert next_step(LaneState(waiting=1000), POLICY) == Submit(254)
    assert next_step(LaneState(waiting=740, inflight=250, batch=10), POLICY) == Submit(4)  # backlog 1000
    assert next_step(LaneState(waiting=5, inflight=1, suspects=True), POLICY) == Wait(0.02)
    assert next_step(LaneState(waiting=5, suspects=True), POLICY) == Submit(1)


def test_a_batch_commits_when_it_reaches_the_target() -> None:
    # backlog 31 + 1 + 32 = 64: target 32, reached.
    assert next_step(LaneState(waiting=0, inflight=32, batch=32, batch_age_s=0.1), POLICY) == Commit()
    # Under a burst the target is a quarter of the backlog: 40 of 200 is not yet 50.
    state = LaneState(inflight=160, batch=40, batch_age_s=0.1)
    assert isinstance(next_step(state, POLICY), Wait)
    assert next_step(LaneState(inflight=150, batch=50, batch_age_s=0.1), POLICY) == Commit()


def test_a_batch_commits_when_nothing_more_is_coming() -> None:
    assert next_step(LaneState(batch=3, batch_age_s=0.0), POLICY) == Commit()


def test_a_short_batch_waits_for_its_deadline_unless_the_pool_will_fill_it() -> None:
    young = LaneState(inflight=4, batch=3, batch_age_s=0.2)
    assert next_step(young, POLICY) == Wait(pytest.approx(0.02))  # photos in flight: look again soon
    assert next_step(LaneState(inflight=4, batch=3, batch_age_s=0.5), POLICY) == Commit()
    # The photos in flight will fill it: no deadline, wait for them.
    assert isinstance(next_step(LaneState(inflight=30, batch=3, batch_age_s=5.0), POLICY), Wait)


def test_publication_right_after_the_last_commit_and_rate_limited_under_load() -> None:
    assert next_step(LaneState(unpublished=True, since_publish_s=0.0, publish_cost_s=5.0), POLICY) == Publish()
    busy = LaneState(inflight=100, batch=10, unpublished=True, since_publish_s=1.0, publish_cost_s=0.5)
    step = next_step(busy, POLICY)
    assert isinstance(step, Wait) and step.seconds == pytest.approx(0.02)  # in flight: look again soon
    later = LaneState(inflight=100, batch=10, unpublished=True, since_publish_s=PUBLISH_COST_RATIO * 0.5, publish_cost_s=0.5)
    assert next_step(later, POLICY) == Publish()


def test_an_idle_lane_waits_for_events() -> None:
    assert next_step(LaneState(), POLICY) == Wait(IDLE_WAIT_S)
    # A commit to publish later: wake when it is due.
    step = next_step(LaneState(waiting=0, inflight=300, unpublished=True, since_publish_s=1.0, publish_cost_s=1.0), POLICY)
    assert step == Wait(pytest.approx(0.02))
