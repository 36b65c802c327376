"""Observation buffers: the dataset's alignment on the dt grid, and refused stamps."""

from __future__ import annotations

import numpy as np
import pytest

from dp_policy import ObservationHistory
from dp_policy_node.observation_buffers import (
    READY,
    STALE,
    WAITING,
    ObservationBuffers,
    StreamTiming,
    to_ns,
)
from dp_policy_node.observation_conversion import (
    FUTURE_STAMP,
    OUT_OF_ORDER,
    ObservationRejectedError,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S  # a plausible epoch stamp: integer arithmetic must stay exact


def buffers(
    streams=(("camera", 0.25, 0.5), ("joints", 0.25, 0.5)), horizon=3, dt=0.1, reference="camera"
) -> ObservationBuffers:
    timings = [StreamTiming(key, f"/{key}", align, stale) for key, align, stale in streams]
    return ObservationBuffers(timings, reference, dt, horizon, future_tolerance=0.05)


def test_a_single_stream_matches_the_runtime_history_of_dp_policy() -> None:
    """Same rule as dp_policy.runtime.ObservationHistory (and so as the dataset builder)."""
    ours = buffers(streams=(("v", 1.0, 1.0),), reference="v")
    theirs = ObservationHistory(observation_horizon=3, dt=0.1)
    # A 30 Hz stream sampled on a 10 Hz grid: stamps rarely land on grid times.
    for k in range(40):
        stamp_ns = T0 + round(k * S / 30)
        ours.add("v", stamp_ns, np.array([k]), now_ns=stamp_ns)
        theirs.add((stamp_ns - T0) / S, {"v": np.array([k])})
        history = ours.history(stamp_ns)
        expected = theirs.at()["v"]
        np.testing.assert_array_equal(history.observations["v"], expected)
        assert history.stamp_ns == stamp_ns


def test_each_stream_contributes_its_latest_message_at_or_before_each_grid_time() -> None:
    obs = buffers()
    # Camera at 10 Hz, joints at 100 Hz starting 3 ms after the first frame.
    for k in range(30):
        obs.add("joints", T0 + 3_000_000 + k * 10_000_000, np.array([k]), T0 + S)
    for k in range(3):
        obs.add("camera", T0 + k * 100_000_000, np.array([10 * k]), T0 + S)
    history = obs.history(T0 + 210_000_000)
    t = T0 + 200_000_000
    assert history.stamp_ns == t  # the newest camera frame ends the grid
    np.testing.assert_array_equal(history.grid_ns, [t - 200_000_000, t - 100_000_000, t])
    np.testing.assert_array_equal(history.observations["camera"][:, 0], [0, 10, 20])
    # Joint message k is stamped 3 ms + 10k ms: at or before 100 ms is k = 9, before 0 none.
    np.testing.assert_array_equal(history.observations["joints"][:, 0], [0, 9, 19])
    assert np.all(history.source_stamps_ns["joints"][1:] <= history.grid_ns[1:])
    # Grid times before a stream's first message repeat its earliest (episode-start padding).
    assert history.source_stamps_ns["joints"][0] == T0 + 3_000_000


def test_out_of_order_and_future_stamps_are_refused_and_leave_the_buffer_unchanged() -> None:
    obs = buffers()
    obs.add("camera", T0, np.array([1]), now_ns=T0)
    with pytest.raises(ObservationRejectedError) as refused:
        obs.add("camera", T0 - 1, np.array([2]), now_ns=T0)
    assert refused.value.cause == OUT_OF_ORDER and "/camera" in refused.value.message
    with pytest.raises(ObservationRejectedError):
        obs.add("camera", T0, np.array([2]), now_ns=T0)  # equal is not after
    with pytest.raises(ObservationRejectedError) as refused:
        obs.add("camera", T0 + to_ns(0.5), np.array([3]), now_ns=T0 + to_ns(0.1))
    assert refused.value.cause == FUTURE_STAMP and "0.400 s in the future" in str(refused.value)
    # Within the tolerance (0.05 s) a slightly early clock is accepted.
    obs.add("camera", T0 + to_ns(0.14), np.array([4]), now_ns=T0 + to_ns(0.1))
    assert obs.latest_ns("camera") == T0 + to_ns(0.14)


def test_a_gap_longer_than_max_age_restarts_the_history_like_an_episode_start() -> None:
    obs = buffers(streams=(("camera", 0.25, 0.5),), reference="camera")
    for k in range(5):
        obs.add("camera", T0 + k * 100_000_000, np.array([k]), T0 + S)
    obs.add("camera", T0 + 1_000_000_000, np.array([99]), T0 + S)  # 0.6 s of silence
    history = obs.history(T0 + S)
    np.testing.assert_array_equal(history.observations["camera"][:, 0], [99, 99, 99])


def test_a_clock_that_jumps_back_starts_over_instead_of_refusing_everything() -> None:
    obs = buffers(streams=(("camera", 0.25, 0.5),), reference="camera")
    obs.add("camera", T0 + 10 * S, np.array([1]), now_ns=T0 + 10 * S)
    # The simulation restarted: the node clock and the stamps are back at T0.
    obs.add("camera", T0, np.array([2]), now_ns=T0)
    assert obs.latest_ns("camera") == T0


def test_readiness_waits_for_every_stream_and_stops_on_stale_ones() -> None:
    obs = buffers()
    readiness = obs.check(T0)
    assert readiness.state == WAITING and "/camera" in readiness.message
    obs.add("camera", T0, np.array([0]), T0)
    assert obs.check(T0).state == WAITING and obs.check(T0).key == "joints"
    obs.add("joints", T0 - 10_000_000, np.array([0]), T0)
    assert obs.check(T0 + 100_000_000).state == READY
    stale = obs.check(T0 + to_ns(0.51))
    assert stale.state == STALE and "/camera" in stale.message and "0.50" in stale.message
    with pytest.raises(ValueError, match="no fresh message"):
        obs.history(T0 + to_ns(0.51))


def test_a_stream_lagging_the_reference_by_more_than_its_max_age_is_stale() -> None:
    obs = buffers(streams=(("camera", 0.25, 1.0), ("joints", 0.25, 1.0)))
    obs.add("joints", T0, np.array([0]), T0)
    obs.add("camera", T0 + to_ns(0.3), np.array([0]), T0 + to_ns(0.3))
    readiness = obs.check(T0 + to_ns(0.3))
    assert readiness.state == STALE and readiness.key == "joints"
    assert "lags" in readiness.message


def test_a_stream_with_nothing_at_or_before_the_reference_stamp_is_waited_for() -> None:
    obs = buffers()
    obs.add("camera", T0, np.array([0]), T0)
    obs.add("joints", T0 + 5_000_000, np.array([0]), T0 + 5_000_000)
    readiness = obs.check(T0 + 5_000_000)
    assert readiness.state == WAITING and readiness.key == "joints"


def test_old_messages_are_pruned() -> None:
    obs = buffers(streams=(("joints", 0.2, 0.2),), reference="joints")
    for k in range(2000):
        obs.add("joints", T0 + k * 1_000_000, np.array([k]), T0 + k * 1_000_000)
    # Window (To-1)*dt = 0.2 s plus twice the max age: at 1 kHz about 600 messages.
    assert len(obs._buffers["joints"]) < 700
    history = obs.history(T0 + 1999 * 1_000_000)
    np.testing.assert_array_equal(history.observations["joints"][:, 0], [1799, 1899, 1999])
