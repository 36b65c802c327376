"""Training windows: padding by repetition, window counts, the validation split by episode."""

from __future__ import annotations

import numpy as np
import pytest

from dp_policy.datasets import EmptyDatasetError, Horizons, SequenceSampler, split_episodes


def test_windows_pad_by_repeating_the_first_and_last_frames() -> None:
    horizons = Horizons(observation=2, prediction=4, action=2)  # pad 1 before, 1 after
    ends = np.array([5, 8])  # episodes [0, 5) and [5, 8)
    sampler = SequenceSampler(ends, horizons, [0, 1])
    # L - Tp + pad_before + pad_after + 1 windows: 5 - 4 + 2 + 1 = 4 and 3 - 4 + 3 = 2.
    assert len(sampler) == 6
    rows = sampler.frame_indices(np.arange(6))
    assert rows.tolist() == [
        [0, 0, 1, 2],
        [0, 1, 2, 3],
        [1, 2, 3, 4],
        [2, 3, 4, 4],
        [5, 5, 6, 7],
        [5, 6, 7, 7],
    ]
    observations = sampler.frame_indices(np.array([0, 3]), length=horizons.observation)
    assert observations.tolist() == [[0, 0], [2, 3]]


def test_every_window_stays_in_its_episode() -> None:
    horizons = Horizons(observation=2, prediction=16, action=8)
    ends = np.cumsum([30, 8, 50])
    sampler = SequenceSampler(ends, horizons, [0, 1, 2])
    rows = sampler.frame_indices(np.arange(len(sampler)))
    episode_of = np.searchsorted(ends, rows, side="right")
    assert np.all(episode_of == episode_of[:, :1])
    assert np.all(np.diff(rows, axis=1) >= 0) and np.all(np.diff(rows, axis=1) <= 1)
    # An 8-frame episode is exactly long enough for one window.
    assert len(SequenceSampler(ends, horizons, [1])) == 1


def test_too_short_episodes_are_listed_or_skipped() -> None:
    horizons = Horizons(observation=2, prediction=16, action=8)
    ends = np.array([20, 27])
    with pytest.raises(Exception, match=r"b \(7 frames\)"):
        SequenceSampler(ends, horizons, [0, 1], ["a", "b"])
    assert SequenceSampler(ends, horizons, [0, 1], tolerated_short=[1]).skipped == [(1, 7)]
    with pytest.raises(EmptyDatasetError):
        SequenceSampler(ends, horizons, [1], skip_short=True)


def test_split_is_by_whole_episodes_and_seeded() -> None:
    train, val = split_episodes(20, 0.2, seed=3)
    assert len(val) == 4 and sorted(train + val) == list(range(20))
    assert split_episodes(20, 0.2, seed=3) == (train, val)
    assert split_episodes(20, 0.2, seed=4) != (train, val)
    assert split_episodes(2, 0.01, seed=0)[1] != []  # at least one held out
    assert split_episodes(1, 0.5, seed=0) == ([0], [])  # but never the only episode
    assert len(split_episodes(100, 0.5, seed=0, max_val_episodes=3)[1]) == 3
    assert split_episodes(5, 0.0, seed=0) == ([0, 1, 2, 3, 4], [])
