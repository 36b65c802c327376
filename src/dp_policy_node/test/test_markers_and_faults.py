"""Marker paths for RViz, and once-per-cause fault bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from dp_policy_node.faults import FaultBook
from dp_policy_node.markers import EXECUTED_COLOUR, marker_paths


def test_one_path_per_sample_from_now_to_the_end_of_the_prediction() -> None:
    samples = np.random.default_rng(0).normal(size=(4, 16, 3))
    paths = marker_paths(samples, dims=(0, 2), observation_horizon=2)
    assert [path.sample for path in paths] == [0, 1, 2, 3]
    for path, sample in zip(paths, samples, strict=True):
        assert path.points.shape == (15, 3)
        np.testing.assert_array_equal(path.points[:, 0], sample[1:, 0])
        np.testing.assert_array_equal(path.points[:, 1], sample[1:, 2])
        np.testing.assert_array_equal(path.points[:, 2], 0.0)
    assert paths[0].rgba == EXECUTED_COLOUR
    assert len({path.rgba for path in paths}) == 4
    assert all(path.rgba[3] < 1.0 for path in paths[1:])


def test_three_dims_fill_z_and_broken_samples_are_not_drawn() -> None:
    samples = np.ones((2, 8, 3))
    samples[1, 4, 0] = np.nan
    paths = marker_paths(samples, dims=(0, 1, 2), observation_horizon=1)
    assert len(paths) == 1 and np.all(paths[0].points[:, 2] == 1.0)
    with pytest.raises(ValueError):
        marker_paths(samples, dims=(3,), observation_horizon=1)


def test_a_fault_is_logged_once_while_it_persists_and_once_per_cause() -> None:
    clock = [0.0]
    book = FaultBook(relog_after=60.0, clock=lambda: clock[0])
    assert book.report("/cam", "encoding", "bad encoding")
    assert book.get("/cam").logged
    assert not any(book.report("/cam", "encoding", f"again {i}") for i in range(50))
    assert book.get("/cam").count == 51 and book.get("/cam").message == "bad encoding"
    assert book.report("/cam", "image", "wrong size")  # another cause: logged
    assert book.report("/joints", "encoding", "x")  # another subject: logged
    assert book.clear("/cam") is not None and book.clear("/cam") is None
    # Flapping: the same cause again soon after is counted, not logged again ...
    assert not book.report("/cam", "encoding", "bad encoding")
    # ... and its end is not news either: the node logs "valid again" only for logged faults.
    assert not book.clear("/cam").logged
    # ... but after relog_after seconds it is news again.
    clock[0] = 61.0
    assert book.report("/cam", "encoding", "bad encoding")
    assert {fault.subject for fault in book.active()} == {"/cam", "/joints"}
    book.reset()
    assert book.active() == []
