"""Receding-horizon runtime: history on the dt grid and chunk timing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dp_policy import ObservationHistory, time_chunk


def observation(value: float) -> dict[str, np.ndarray]:
    return {"joints": np.array([value, -value]), "image": np.full((1, 2, 2), value)}


def test_episode_start_is_padded_with_the_earliest_observation():
    history = ObservationHistory(observation_horizon=3, dt=0.1, keys=("joints", "image"))
    history.add(5.0, observation(1.0))
    snapshot = history.snapshot()
    np.testing.assert_allclose(snapshot.grid_times, [4.8, 4.9, 5.0])
    np.testing.assert_array_equal(snapshot.source_stamps, [5.0, 5.0, 5.0])
    assert snapshot.observations["joints"].shape == (3, 2)
    assert snapshot.observations["image"].shape == (3, 1, 2, 2)
    np.testing.assert_array_equal(snapshot.observations["joints"][:, 0], [1.0, 1.0, 1.0])

    history.add(5.1, observation(2.0))
    np.testing.assert_array_equal(history.at()["joints"][:, 0], [1.0, 1.0, 2.0])


def test_history_takes_the_latest_observation_at_or_before_each_grid_time():
    history = ObservationHistory(observation_horizon=3, dt=0.1)
    # A 30 Hz stream sampled on a 10 Hz grid: stamps do not land on the grid.
    for k in range(30):
        history.add(round(k / 30, 9), {"v": np.array([k])})
    snapshot = history.snapshot(t=29 / 30)
    expected_grid = 29 / 30 - np.array([0.2, 0.1, 0.0])
    np.testing.assert_allclose(snapshot.grid_times, expected_grid)
    expected_index = np.floor(expected_grid * 30 + 1e-6).astype(int)
    np.testing.assert_array_equal(snapshot.observations["v"][:, 0], expected_index)
    assert np.all(snapshot.source_stamps <= snapshot.grid_times + 1e-6)
    # A stamp exactly on a grid time counts, despite floating-point grid arithmetic.
    history = ObservationHistory(observation_horizon=2, dt=0.1)
    history.add(0.1, {"v": np.array([1])})
    history.add(0.2, {"v": np.array([2])})
    assert 0.3 - 0.1 < 0.2  # the first grid time of t=0.3 lands just before the stamp 0.2
    np.testing.assert_array_equal(history.at(0.3)["v"][:, 0], [2, 2])
    history.add(0.35, {"v": np.array([3])})
    np.testing.assert_array_equal(history.at(0.35)["v"][:, 0], [2, 3])
    assert len(history) == 2  # the observation at 0.1 is no longer needed


def test_history_refuses_out_of_order_stale_and_empty():
    history = ObservationHistory(observation_horizon=2, dt=0.1, max_age=0.25)
    with pytest.raises(ValueError, match="empty"):
        history.at()
    history.add(1.0, {"v": np.zeros(1)})
    with pytest.raises(ValueError, match="not after"):
        history.add(0.9, {"v": np.zeros(1)})
    with pytest.raises(ValueError, match="max_age"):
        history.at(1.3)
    with pytest.raises(ValueError, match="precedes"):
        history.at(0.5)
    history.reset()
    history.add(0.5, {"v": np.ones(1)})  # a new episode may start earlier
    assert history.latest_stamp == 0.5


def test_chunk_timing_drops_actions_already_in_the_past():
    To, Ta, dt = 2, 8, 0.1
    sequence = torch.arange(16, dtype=torch.float32)[:, None].repeat(1, 2)  # (Tp, Da)
    obs_stamp = 10.0
    latency = 0.25
    chunk = time_chunk(sequence, obs_stamp, dt, To, Ta, now=obs_stamp + latency)
    # Executable actions are sequence[1:9], due at 10.0, 10.1, ..., 10.7; those after 10.25 stay.
    np.testing.assert_array_equal(chunk.indices, [4, 5, 6, 7, 8])
    np.testing.assert_allclose(chunk.due_times, [10.3, 10.4, 10.5, 10.6, 10.7])
    np.testing.assert_allclose(chunk.time_from_now, [0.05, 0.15, 0.25, 0.35, 0.45])
    np.testing.assert_array_equal(chunk.actions[:, 0], [4, 5, 6, 7, 8])
    assert np.all(chunk.time_from_now > 0)


def test_chunk_timing_never_keeps_an_action_due_now_and_handles_edges():
    sequence = np.zeros((16, 3))
    at_once = time_chunk(sequence, 1.0, 0.1, 2, 8, now=1.0)
    assert at_once.indices[0] == 2 and len(at_once) == 7  # index 1 is due exactly now
    too_late = time_chunk(sequence, 1.0, 0.1, 2, 8, now=2.0)
    assert len(too_late) == 0 and too_late.actions.shape == (0, 3)
    lead = time_chunk(sequence, 1.0, 0.1, 2, 8, now=1.0, min_lead=0.15)
    assert lead.indices[0] == 3
    with pytest.raises(ValueError, match="precedes"):
        time_chunk(sequence, 1.0, 0.1, 2, 8, now=0.5)
    with pytest.raises(ValueError, match="do not fit"):
        time_chunk(sequence, 1.0, 0.1, 2, 16, now=1.0)
