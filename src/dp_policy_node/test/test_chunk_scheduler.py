"""The chunk scheduler: next request early by the p99 turnaround, so chunks never run out."""

from __future__ import annotations

import numpy as np
import pytest

from dp_policy_node.chunk_scheduler import ChunkScheduler, LatencyWindow
from dp_policy_node.trajectory_builder import plan_chunk

S = 1_000_000_000
T0 = 1_700_000_000 * S


def test_with_nothing_executing_the_request_is_immediate() -> None:
    scheduler = ChunkScheduler(dt=0.1, action_horizon=8, latency_margin=0.02)
    assert scheduler.request_at_ns() is None
    assert scheduler.decide(T0).request


def test_the_request_goes_out_p99_plus_margin_before_the_chunk_ends() -> None:
    scheduler = ChunkScheduler(dt=0.1, action_horizon=8, latency_margin=0.02)
    for latency in [0.03] * 98 + [0.08, 0.08]:
        scheduler.record_turnaround(latency)
    p99 = scheduler.turnaround.stats().p99
    assert 0.03 < p99 <= 0.08
    end = T0 + 700_000_000
    scheduler.chunk_published(end)
    request_at = end - round((p99 + 0.02) * S)
    assert scheduler.request_at_ns() == request_at
    assert not scheduler.decide(request_at - 1).request
    decision = scheduler.decide(request_at)
    assert decision.request and decision.slack_s == pytest.approx(p99 + 0.02)
    scheduler.reset()
    assert scheduler.decide(T0).request


def test_latency_window_statistics() -> None:
    window = LatencyWindow(size=10)
    assert window.stats().count == 0 and window.stats().p99 == 0.0
    for value in range(20):
        window.add(value / 100)
    window.add(float("nan"))  # ignored
    stats = window.stats()
    assert stats.count == 10 and stats.last == 0.19 and stats.max == 0.19
    assert stats.p50 == pytest.approx(np.percentile(np.arange(10, 20) / 100, 50))


def test_fits_tells_whether_the_lead_fits_in_the_executed_actions() -> None:
    scheduler = ChunkScheduler(dt=0.1, action_horizon=8, latency_margin=0.02)
    scheduler.record_turnaround(0.3)  # 2 * (0.3 + 0.02) < 0.7
    assert scheduler.fits()
    scheduler.record_turnaround(0.4)
    assert not scheduler.fits()


@pytest.mark.parametrize("latency", [0.02, 0.12, 0.3])
def test_simulated_serving_never_lets_a_chunk_run_out(latency: float) -> None:
    """Camera at 30 Hz, constant latency: each chunk replaces the previous before its end."""
    dt, To, Ta = 0.1, 2, 8
    scheduler = ChunkScheduler(dt=dt, action_horizon=Ta, latency_margin=0.02)
    scheduler.record_turnaround(latency)
    frame_ns = S // 30
    now, chunks, executed = T0, 0, []
    previous_start = previous_end = None
    sequence = np.zeros((16, 2))
    while now < T0 + 10 * S:
        if scheduler.decide(now).request:
            observation = now - now % frame_ns  # newest camera frame
            publish = now + round(latency * S)
            plan = plan_chunk(sequence, observation, dt, To, Ta, publish, 20_000_000)
            assert len(plan), "the chunk arrived after its last action"
            if previous_end is not None:
                assert publish < previous_end, "the previous chunk ran out before this one"
                executed.append((publish - previous_start) / (dt * S))
            previous_start, previous_end = publish, plan.end_ns
            scheduler.chunk_published(plan.end_ns)
            chunks += 1
            now = publish
        now += 10_000_000  # the node looks every 10 ms
    assert chunks > 5
    # About Ta actions per chunk, less what latency compensation spends.
    assert np.mean(executed) > Ta - 1 - (latency + 0.02) / dt - 1.5
