"""Bad input to dataset building: clear errors naming the culprit, nothing half-written."""

from __future__ import annotations

import pytest

from dp_policy.data_spec import DataSpec
from dp_policy.datasets import (
    BagReadError,
    EmptyDatasetError,
    EpisodeTooShortError,
    Horizons,
    MessageConversionError,
    MissingJointError,
    MissingTopicError,
    SequenceSampler,
)
from dp_policy.datasets.cache import DatasetCache
from dp_policy.datasets.replay_store import open_replay
from dp_testing import demonstration_bags as bf

SPEC = DataSpec.from_dict(bf.PUSHT_SPEC)


def _build(tmp_path, bags, spec=SPEC):
    return DatasetCache(tmp_path / "cache").get_or_build(bags, spec, show_progress=False)


def _assert_nothing_written(tmp_path) -> None:
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_missing_topic_names_the_bag_and_what_it_has(tmp_path) -> None:
    bag = bf.write_pusht_bag(
        tmp_path / "bags" / "nocam", topics=(bf.JOINT_TOPIC, bf.BLOCK_TOPIC, bf.COMMAND_TOPIC)
    )
    with pytest.raises(
        MissingTopicError, match=r"nocam: topic /camera/image_raw .* not in the bag"
    ):
        _build(tmp_path, [bag])
    _assert_nothing_written(tmp_path)


def test_topic_of_another_type_is_refused(tmp_path) -> None:
    bag = bf.write_pusht_bag(tmp_path / "bags" / "jpeg", image="jpeg")
    with pytest.raises(MissingTopicError, match="CompressedImage, the data spec's stream 'image'"):
        _build(tmp_path, [bag])


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_is_a_clear_error_and_leaves_no_cache(tmp_path, storage) -> None:
    good = bf.write_pusht_bag(tmp_path / "bags" / "good", storage=storage)
    bad = bf.write_pusht_bag(tmp_path / "bags" / "killed", storage=storage, first_frame=40)
    bf.truncate_storage(bad, keep=0.5)
    with pytest.raises(BagReadError, match=r"killed: the bag cannot be read .*dp_recorder.recover"):
        _build(tmp_path, [good.parent])
    _assert_nothing_written(tmp_path)


def test_storage_without_metadata_is_an_unfinished_bag(tmp_path) -> None:
    bag = bf.write_pusht_bag(tmp_path / "bags" / "unfinished")
    (bag / "metadata.yaml").unlink()
    with pytest.raises(BagReadError, match=r"without metadata\.yaml: the recording did not finish"):
        _build(tmp_path, [tmp_path / "bags"])


def test_missing_path_and_empty_folder(tmp_path) -> None:
    with pytest.raises(BagReadError, match="no such bag or folder"):
        _build(tmp_path, [tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyDatasetError, match="no rosbag2 bag"):
        _build(tmp_path, [tmp_path / "empty"])


def test_joint_state_without_a_spec_joint(tmp_path) -> None:
    bag = bf.write_pusht_bag(tmp_path / "bags" / "onejoint", joints=("pusher_x_joint",))
    with pytest.raises(MissingJointError, match=r"lacks joint\(s\) \['pusher_y_joint'\]"):
        _build(tmp_path, [bag])
    _assert_nothing_written(tmp_path)


def test_trajectory_without_a_spec_joint(tmp_path) -> None:
    bag = bf.write_pusht_bag(tmp_path / "bags" / "a")
    spec = dict(bf.PUSHT_SPEC)
    spec["action"] = dict(spec["action"], joints=["pusher_x_joint", "elbow_joint"])
    with pytest.raises(
        MissingJointError, match=r"JointTrajectory lacks joint\(s\) \['elbow_joint'\]"
    ):
        _build(tmp_path, [bag], spec=DataSpec.from_dict(spec))


def test_image_of_another_size_than_the_spec(tmp_path) -> None:
    bag = bf.write_pusht_bag(tmp_path / "bags" / "big", image_size=(40, 32))
    with pytest.raises(MessageConversionError, match="the policy expects 32x32"):
        _build(tmp_path, [bag])


def test_every_episode_skipped_is_an_empty_dataset(tmp_path) -> None:
    bag = bf.write_pusht_bag(
        tmp_path / "bags" / "bad",
        [bf.EpisodePlan(8, end="discard"), bf.EpisodePlan(8, end="failure")],
    )
    with pytest.raises(EmptyDatasetError, match=r"discarded by the operator.*unsuccessful"):
        _build(tmp_path, [bag])
    _assert_nothing_written(tmp_path)


def test_episode_shorter_than_the_horizons(tmp_path) -> None:
    bag = bf.write_pusht_bag(tmp_path / "bags" / "short", [bf.EpisodePlan(20), bf.EpisodePlan(5)])
    built = _build(tmp_path, [bag])
    replay = open_replay(built.path, SPEC)
    horizons = Horizons(observation=2, prediction=16, action=8)  # needs 16 - 1 - 7 = 8 frames
    with pytest.raises(EpisodeTooShortError, match=r"push_t_0001 \(4 frames\).*at least .* = 8"):
        SequenceSampler(replay.episode_ends, horizons, [0, 1], ["push_t_0000", "push_t_0001"])
    sampler = SequenceSampler(replay.episode_ends, horizons, [0, 1], skip_short=True)
    assert sampler.skipped == [(1, 4)]
