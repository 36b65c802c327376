"""Dataset building from real rosbag2 bags (MCAP and sqlite3) written in the test with rosbags."""

from __future__ import annotations

import numpy as np
import pytest

from dp_policy.data_spec import DataSpec
from dp_policy.datasets.cache import DatasetCache
from dp_policy.datasets.episodes import EpisodeSelection
from dp_policy.datasets.replay_store import open_replay
from dp_testing import demonstration_bags as bf

SPEC = DataSpec.from_dict(bf.PUSHT_SPEC)


def _build(tmp_path, bags, spec=SPEC, selection=None):
    cache = DatasetCache(tmp_path / "cache")
    built = cache.get_or_build(bags, spec, selection, show_progress=False)
    return built, open_replay(built.path, spec)


def _frame_numbers(replay) -> np.ndarray:
    """The global frame number g of every row, read back from agent_pos x = 0.001 g."""
    return np.rint(replay.arrays["agent_pos"][:, 0] / 0.001).astype(int)


def _check_alignment(replay, image_tolerance: int = 0) -> None:
    g = _frame_numbers(replay)
    agent = np.stack([bf.expected_agent(i) for i in g])
    action = np.stack([bf.expected_action(i) for i in g])
    np.testing.assert_allclose(replay.arrays["agent_pos"], agent, atol=1e-6)
    # The action of frame g is the command that answered frame g - 1 (received 5 ms after it).
    np.testing.assert_allclose(replay.arrays["action"], action, atol=1e-6)
    red = replay.arrays["image"][:, 0].reshape(len(g), -1).astype(int)
    expected = np.array([bf.expected_image_value(i) for i in g])[:, None]
    assert np.all(np.abs(red - expected) <= image_tolerance)
    green = replay.arrays["image"][:, 1].astype(int)
    assert np.all(np.abs(green - 40) <= image_tolerance)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bags_become_aligned_episodes(tmp_path, storage) -> None:
    bag = bf.write_pusht_bag(
        tmp_path / "bags" / "session",
        [bf.EpisodePlan(12), bf.EpisodePlan(10, end="failure"), bf.EpisodePlan(9, end="discard")],
        storage=storage,
    )
    built, replay = _build(tmp_path, [bag])
    # Only the successful episode; its first frame has no command yet (trimmed, reported).
    assert replay.num_episodes == 1
    assert replay.num_frames == 11
    _check_alignment(replay)
    assert list(_frame_numbers(replay)) == list(range(1, 12))
    episodes = built.report["episodes"]
    assert [e["outcome"] for e in episodes] == ["success", "failure", "discarded"]
    assert "include_failed" in episodes[1]["skipped"]
    assert episodes[0]["alignment"]["trimmed_start"] == 1
    times = replay.attributes["episodes"][0]
    assert times["name"] == "push_t_0000" and times["outcome"] == "success"


def test_selection_flags_bring_back_failed_and_discarded_episodes(tmp_path) -> None:
    bag = bf.write_pusht_bag(
        tmp_path / "bags" / "session",
        [bf.EpisodePlan(12), bf.EpisodePlan(10, end="failure"), bf.EpisodePlan(9, end="discard")],
    )
    selection = EpisodeSelection(include_failed=True, include_discarded=True)
    _, replay = _build(tmp_path, [bag], selection=selection)
    assert replay.episode_lengths().tolist() == [11, 9, 8]
    _check_alignment(replay)


def test_sqlite3_bag_without_stored_definitions_uses_installed_types(tmp_path, monkeypatch) -> None:
    """Humble-era sqlite3 bags store no definitions: rosbags' types, dp_msgs from share/."""
    bag = bf.write_pusht_bag(tmp_path / "bags" / "old", [bf.EpisodePlan(10)], storage="sqlite3")
    bf.strip_definitions(bag)
    share = tmp_path / "prefix" / "share" / "dp_msgs" / "msg"
    share.mkdir(parents=True)
    (share / "EpisodeEvent.msg").write_text(bf.EPISODE_EVENT_MSG.read_text())
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "prefix"))
    built, replay = _build(tmp_path, [bag])
    assert replay.num_frames == 9
    assert built.report["episodes"][0]["name"] == "push_t_0000"
    _check_alignment(replay)


@pytest.mark.parametrize("encoding", ["bgr8", "jpeg", "png"])
def test_raw_and_compressed_images_are_decoded(tmp_path, encoding) -> None:
    bag = bf.write_pusht_bag(tmp_path / "bags" / "cam", [bf.EpisodePlan(6)], image=encoding)
    spec = bf.PUSHT_SPEC | {"observations": [dict(o) for o in bf.PUSHT_SPEC["observations"]]}
    if encoding in ("jpeg", "png"):
        spec["observations"][0]["message_type"] = "sensor_msgs/msg/CompressedImage"
    _, replay = _build(tmp_path, [bag], spec=DataSpec.from_dict(spec))
    assert replay.arrays["image"].shape == (5, 3, 32, 32)
    _check_alignment(replay, image_tolerance=3 if encoding == "jpeg" else 0)


def test_whole_bag_without_events_is_one_episode_with_its_custom_outcome(tmp_path) -> None:
    plain = bf.write_pusht_bag(tmp_path / "bags" / "plain", [bf.EpisodePlan(8)], events=False)
    failed = bf.write_pusht_bag(
        tmp_path / "bags" / "recorded",
        [bf.EpisodePlan(8)],
        events=False,
        custom_data={"outcome": "failure", "task": "push_t"},
        first_frame=50,
    )
    built, replay = _build(tmp_path, [plain, failed])
    by_bag = {e["bag"]: e for e in built.report["episodes"]}
    assert by_bag["plain"]["outcome"] == "unknown" and "skipped" not in by_bag["plain"]
    assert by_bag["recorded"]["outcome"] == "failure" and by_bag["recorded"]["skipped"]
    assert replay.num_episodes == 1


def test_a_camera_gap_is_reported_and_splits_the_episode(tmp_path) -> None:
    bag = bf.write_pusht_bag(tmp_path / "bags" / "gap", [bf.EpisodePlan(20, camera_gap=(8, 3))])
    built, replay = _build(tmp_path, [bag])
    (episode,) = built.report["episodes"]
    (gap,) = episode["alignment"]["gaps"]
    assert gap["frames"] == 3 and gap["streams"] == ["image"]
    assert episode["fragments"] == 2
    # Frames 1-7 and 11-19: the gap's frames are dropped, never filled with older images.
    assert replay.episode_lengths().tolist() == [7, 9]
    assert list(_frame_numbers(replay)) == [*range(1, 8), *range(11, 20)]
    _check_alignment(replay)


def test_second_build_is_a_cache_hit_and_content_changes_miss(tmp_path) -> None:
    bags = tmp_path / "bags"
    bf.write_pusht_bag(bags / "a", [bf.EpisodePlan(8)])
    bf.write_pusht_bag(bags / "b", [bf.EpisodePlan(8)], first_frame=20, seed=1)
    first, replay = _build(tmp_path, [bags])
    second, again = _build(tmp_path, [bags])
    assert not first.hit and second.hit
    assert second.path == first.path and second.build_seconds == 0.0
    assert np.array_equal(replay.arrays["image"], again.arrays["image"])
    # The key follows content, not names: a renamed copy of the same bags hits too.
    bf.copy_bag(bags / "a", tmp_path / "elsewhere" / "x")
    bf.copy_bag(bags / "b", tmp_path / "elsewhere" / "y")
    assert _build(tmp_path, [tmp_path / "elsewhere"])[0].hit
    # Another spec or another bag content is another dataset.
    lowdim = dict(bf.PUSHT_SPEC, reference="agent_pos")
    assert not _build(tmp_path, [bags], spec=DataSpec.from_dict(lowdim))[0].hit
    bf.write_pusht_bag(bags / "c", [bf.EpisodePlan(8)], first_frame=40, seed=2)
    third, replay3 = _build(tmp_path, [bags])
    assert not third.hit and replay3.num_episodes == 3
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_cache_is_chunked_compressed_zarr_and_lazily_readable(tmp_path) -> None:
    import zarr

    bag = bf.write_pusht_bag(tmp_path / "bags" / "a", [bf.EpisodePlan(30)])
    built, in_memory = _build(tmp_path, [bag])
    group = zarr.open_group(str(built.path), mode="r")
    assert group.metadata.zarr_format == 3
    images = group["data/image"]
    assert images.chunks[0] >= 1 and images.compressors
    assert group["meta/episode_ends"][:].tolist() == [29]
    lazy = open_replay(built.path, SPEC, in_memory=False)
    rows = np.array([[0, 1], [27, 28]])
    np.testing.assert_array_equal(lazy.arrays["image"][rows], in_memory.arrays["image"][rows])
    np.testing.assert_array_equal(lazy.arrays["action"][rows], in_memory.arrays["action"][rows])
