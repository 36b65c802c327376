"""Units of dataset building: the reference grid, latest-at-or-before, gaps, commands, episodes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dp_policy.datasets.alignment import latest_at_or_before, reference_grid, valid_runs
from dp_policy.datasets.bag_streams import cdr_header_stamp_ns
from dp_policy.datasets.episodes import (
    EVENT_DISCARD,
    EVENT_START,
    EVENT_STOP,
    EpisodeSelection,
    EventRecord,
    cut_episodes,
)
from dp_policy.datasets.errors import MissingJointError
from dp_policy.datasets.trajectory import RejectedCommandError, evaluate_commands, parse_trajectory

MS = 1_000_000
DT = 100 * MS


def test_grid_snaps_to_a_jittery_reference_without_reusing_old_frames() -> None:
    rng = np.random.default_rng(0)
    stamps = np.arange(50) * DT + rng.integers(-5 * MS, 5 * MS, 50)
    stamps.sort()
    frames, index, valid = reference_grid(stamps, DT)
    assert valid.all()
    assert index.tolist() == list(range(50))  # every image once: no duplicate, no skip
    np.testing.assert_array_equal(frames, stamps)


def test_faster_reference_is_subsampled_to_dt() -> None:
    stamps = (np.arange(90) * (DT / 3)).astype(np.int64)  # a 30 Hz camera for 3 s
    frames, _, valid = reference_grid(stamps, DT)
    assert valid.all() and frames.size == 30
    np.testing.assert_allclose(np.diff(frames), DT, atol=1)


def test_silent_reference_makes_invalid_frames() -> None:
    stamps = np.array([0, 1, 2, 6, 7], dtype=np.int64) * DT
    _, _, valid = reference_grid(stamps, DT)
    assert valid.tolist() == [True, True, True, False, False, False, True, True]


def test_latest_at_or_before_respects_max_age() -> None:
    stamps = np.array([0, 90, 100, 300], dtype=np.int64) * MS
    frames = np.array([-10, 0, 95, 100, 250, 310], dtype=np.int64) * MS
    index, valid = latest_at_or_before(stamps, frames, 150 * MS)
    assert valid.tolist() == [False, True, True, True, True, True]
    assert index[1:].tolist() == [0, 1, 2, 2, 3]
    _, valid = latest_at_or_before(stamps, frames, 100 * MS)
    assert valid.tolist() == [False, True, True, True, False, True]


def test_gaps_split_runs_and_are_reported_with_their_streams() -> None:
    frames = np.arange(10, dtype=np.int64) * DT
    image = np.array([0, 1, 1, 1, 0, 0, 1, 1, 1, 0], dtype=bool)
    joints = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1, 1], dtype=bool)
    runs, report = valid_runs(frames, {"image": image, "joints": joints})
    assert runs == [(1, 4), (6, 9)]
    assert report.trimmed_start == 1 and report.trimmed_end == 1
    (gap,) = report.gaps
    assert (gap.time_ns, gap.frames, gap.streams) == (4 * DT, 2, ("image", "joints"))
    assert report.dropped == 4


def _trajectory(stamp_ns, points, names=("a", "b")):
    def point(t, values):
        return SimpleNamespace(
            positions=np.array(values, dtype=float),
            velocities=np.zeros(0),
            effort=np.zeros(0),
            time_from_start=SimpleNamespace(sec=int(t // 1e9), nanosec=int(t % 1e9)),
        )

    return SimpleNamespace(
        header=SimpleNamespace(
            stamp=SimpleNamespace(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        ),
        joint_names=list(names),
        points=[point(t, v) for t, v in points],
    )


def test_trajectory_is_evaluated_like_the_controller() -> None:
    # Stamp zero: starts when received (1 s); points at +0.2 s and +0.4 s; joints reordered.
    message = _trajectory(0, [(200 * MS, [1.0, 10.0]), (400 * MS, [3.0, 30.0])])
    command = parse_trajectory(message, received_ns=1000 * MS, joints=("b", "a"))
    frames = np.array([1000, 1100, 1300, 1400, 1500, 1700], dtype=np.int64) * MS
    values, valid = evaluate_commands([command], frames, max_age_ns=200 * MS, dim=2)
    # Before the first point: the first point; between: linear; after the last: the last.
    np.testing.assert_allclose(values[:5, 0], [10.0, 10.0, 20.0, 30.0, 30.0])
    np.testing.assert_allclose(values[:5, 1], [1.0, 1.0, 2.0, 3.0, 3.0])
    # Fresh until the last point (1.4 s) + max_age: stale at 1.7 s.
    assert valid.tolist() == [True, True, True, True, True, False]


def test_stamped_trajectory_starts_at_its_stamp_and_newest_command_wins() -> None:
    first = parse_trajectory(_trajectory(0, [(0, [0.0, 0.0])]), 1000 * MS, ("a", "b"))
    second = parse_trajectory(
        _trajectory(1300 * MS, [(0, [1.0, 1.0]), (100 * MS, [2.0, 2.0])]), 1200 * MS, ("a", "b")
    )
    frames = np.array([1100, 1200, 1350, 1400], dtype=np.int64) * MS
    values, valid = evaluate_commands([first, second], frames, max_age_ns=200 * MS, dim=2)
    assert valid.all()
    np.testing.assert_allclose(values[:, 0], [0.0, 1.0, 1.5, 2.0])


def test_rejected_and_mismatched_trajectories() -> None:
    with pytest.raises(MissingJointError, match="lacks joint"):
        parse_trajectory(_trajectory(0, [(0, [1.0, 2.0])]), 0, ("a", "c"))
    with pytest.raises(RejectedCommandError):
        parse_trajectory(_trajectory(0, []), 0, ("a",))
    with pytest.raises(RejectedCommandError):
        parse_trajectory(_trajectory(0, [(100 * MS, [1, 2]), (100 * MS, [1, 2])]), 0, ("a",))


def test_cdr_header_stamp_is_read_without_decoding() -> None:
    raw = bytes([0, 1, 0, 0]) + (1234).to_bytes(4, "little") + (56789).to_bytes(4, "little")
    assert cdr_header_stamp_ns(raw) == 1234 * 10**9 + 56789
    big = bytes([0, 0, 0, 0]) + (7).to_bytes(4, "big") + (8).to_bytes(4, "big")
    assert cdr_header_stamp_ns(big) == 7 * 10**9 + 8


def _event(t, kind, success=False, name=""):
    return EventRecord(time_ns=t, event=kind, success=success, task="push_t", name=name)


def test_episode_cutting_rules() -> None:
    events = [
        _event(5, EVENT_STOP, True),  # began before the recording
        _event(10, EVENT_START, name="one"),
        _event(20, EVENT_STOP, True),
        _event(20, EVENT_STOP, True),  # a second publisher repeating it: ignored
        _event(30, EVENT_START, name="two"),
        _event(40, EVENT_START, name="three"),  # "two" never ended
        _event(50, EVENT_DISCARD),
        _event(60, EVENT_START, name="four"),  # the bag ends during it
    ]
    segments = cut_episodes(events, {}, "bag")
    summary = [(s.start_ns, s.end_ns, s.outcome, s.name) for s in segments]
    assert summary == [
        (None, 5, "success", "bag#0"),
        (10, 20, "success", "one"),
        (30, 40, "incomplete", "two"),
        (40, 50, "discarded", "three"),
        (60, None, "incomplete", "four"),
    ]
    selection = EpisodeSelection()
    assert [selection.rejects(s) is None for s in segments] == [True, True, False, False, False]
    everything = EpisodeSelection(include_discarded=True, include_incomplete=True)
    assert all(everything.rejects(s) is None for s in segments)
    assert EpisodeSelection(tasks=("stack",)).rejects(segments[1]).startswith("task")


@pytest.mark.parametrize(
    ("custom", "outcome"),
    [
        ({}, "unknown"),
        ({"outcome": "success"}, "success"),
        ({"outcome": "timeout"}, "failure"),
        ({"outcome": "discarded"}, "discarded"),
        ({"outcome": "interrupted"}, "incomplete"),
        ({"success": "true"}, "success"),
    ],
)
def test_bag_without_events_takes_its_outcome_from_custom_data(custom, outcome) -> None:
    (segment,) = cut_episodes([], custom, "bag")
    assert (segment.start_ns, segment.end_ns, segment.outcome) == (None, None, outcome)
