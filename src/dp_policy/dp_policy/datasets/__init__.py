"""Training data: rosbag2 bags or Diffusion Policy zarr replay buffers -> training windows.

    bags --(DatasetCache: BagStreamReader, cut_episodes, alignment)--> zarr replay buffer
    replay buffer --(open_replay)--> ReplayData --(SequenceSampler)--> SequenceDataset

Reading bags needs ``rosbags`` and the cache needs ``zarr``; both are imported by the modules
that use them, so ``import dp_policy.datasets`` works without them.
"""

from dp_policy.datasets.episodes import EpisodeSegment, EpisodeSelection, cut_episodes
from dp_policy.datasets.errors import (
    BagReadError,
    DatasetError,
    EmptyDatasetError,
    EpisodeTooShortError,
    MessageConversionError,
    MissingJointError,
    MissingTopicError,
)
from dp_policy.datasets.sampler import Horizons, SequenceSampler, split_episodes

__all__ = [
    "BagReadError",
    "DatasetError",
    "EmptyDatasetError",
    "EpisodeSegment",
    "EpisodeSelection",
    "EpisodeTooShortError",
    "Horizons",
    "MessageConversionError",
    "MissingJointError",
    "MissingTopicError",
    "SequenceSampler",
    "cut_episodes",
    "split_episodes",
]
