"""Episode names and custom data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dp_recorder import episode as ep


def test_generated_names_are_safe_directory_names() -> None:
    now = datetime(2025, 6, 1, 12, 30, 5, tzinfo=UTC)
    assert ep.episode_name("push_t", 3, now) == "push_t_20250601T123005Z_0003"
    assert ep.episode_name("pick / place!", 0, now) == "pick_place_20250601T123005Z_0000"
    assert ep.episode_name("", 1, now).startswith("episode_")
    assert ep.check_episode_name(ep.episode_name("../x", 1, now))


@pytest.mark.parametrize("name", ["../up", "a/b", "", ".hidden", "discarded", "x" * 201])
def test_unusable_names_are_refused(name: str) -> None:
    with pytest.raises(ep.EpisodeRequestError):
        ep.check_episode_name(name)


def test_custom_data_holds_task_outcome_robot_and_versions() -> None:
    info = ep.EpisodeInfo(
        2, "n", "push_t", "start note", "ur5", "abc123", "0.1.0", datetime(2025, 1, 1, tzinfo=UTC)
    )
    custom = {
        **info.custom_data(),
        **ep.end_custom_data("success", True, "end note", "start note", 0),
    }
    assert custom["task"] == "push_t"
    assert custom["outcome"] == "success"
    assert custom["success"] == "true"
    assert custom["robot"] == "ur5"
    assert custom["software_version"] == "abc123"
    assert custom["recorder"] == "dp_recorder 0.1.0"
    assert custom["episode_index"] == "2"
    assert custom["notes"] == "start note\nend note"
    assert all(isinstance(value, str) for value in custom.values())
