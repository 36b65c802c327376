"""Zarr replay buffers: the original Diffusion Policy layout, read and written.

Layout (Diffusion Policy's ``ReplayBuffer``): ``data/<name>`` arrays of shape ``(N, ...)``, one row
per frame, all episodes back to back, and ``meta/episode_ends (E,)``, the exclusive end row of
each episode. The original datasets (for example ``pusht_cchi_v7_replay.zarr``: ``img``
``(N, 96, 96, 3)``, ``state (N, 5)``, ``action (N, 2)``, ``keypoint (N, 9, 2)``) are zarr v2
stores; the dataset cache writes the same layout as zarr v3, images as ``(N, C, H, W)`` uint8,
plus ``meta/frame_time_ns`` and its provenance in the root attributes.

``ReplaySource`` reads either into the arrays the policy eats: images ``(N, C, H, W)`` uint8 and
low-dim ``(N, D)`` float32, selected and rescaled by an ``ArrayMapping`` per key, in memory or
lazily (chunks read when a sample needs them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dp_policy.data_spec import DataSpec
from dp_policy.datasets.errors import DatasetError, EmptyDatasetError

CACHE_FORMAT = "dp_policy.replay"
CACHE_FORMAT_VERSION = 1
FRAME_TIME_ARRAY = "frame_time_ns"
IMAGE_LAYOUTS = ("chw", "hwc")
# Chunks of about this many bytes: large enough to compress well, small enough that a sample's
# window does not decompress much more than it uses.
_TARGET_CHUNK_BYTES = 2 * 1024 * 1024


def _zarr() -> Any:
    # Imported here: zarr is only needed for datasets, not for serving a policy.
    import zarr

    return zarr


@dataclass(frozen=True)
class ArrayMapping:
    """Where a key's values are in a replay buffer, and how to turn them into the key's units.

    array: name under ``data/``. layout: ``hwc`` or ``chw`` for images. columns: for low-dim,
    which entries of each row (after flattening ``(N, ...)`` to ``(N, D)``) to keep, in order.
    scale, offset: per entry (or one number), ``value * scale + offset``, e.g. pixels to metres.
    image_range: the value of full brightness in a float image array (255 or 1).
    """

    array: str
    layout: str = "chw"
    columns: tuple[int, ...] | None = None
    scale: tuple[float, ...] | None = None
    offset: tuple[float, ...] | None = None
    image_range: float = 255.0

    def __post_init__(self) -> None:
        if not isinstance(self.array, str) or not self.array:
            raise DatasetError("ArrayMapping: array must be the name of an array under data/")
        if self.layout not in IMAGE_LAYOUTS:
            raise DatasetError(
                f"ArrayMapping {self.array!r}: layout must be one of {IMAGE_LAYOUTS}"
            )
        for name in ("columns", "scale", "offset"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(value) if isinstance(value, list | tuple) else (value,)
                object.__setattr__(self, name, value)
        if self.columns is not None and not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in self.columns
        ):
            raise DatasetError(f"ArrayMapping {self.array!r}: columns must be indices >= 0")
        for name in ("scale", "offset"):
            value = getattr(self, name)
            if value is not None and not all(
                isinstance(v, int | float) and math.isfinite(v) for v in value
            ):
                raise DatasetError(f"ArrayMapping {self.array!r}: {name} must be numbers")
        if not (isinstance(self.image_range, int | float) and self.image_range > 0):
            raise DatasetError(f"ArrayMapping {self.array!r}: image_range must be positive")

    @classmethod
    def from_value(cls, value: Any) -> ArrayMapping:
        """From a config entry: an array name, or a mapping of the fields above."""
        if isinstance(value, str):
            return cls(array=value)
        if not isinstance(value, dict):
            raise DatasetError(f"a zarr key mapping must be an array name or a mapping: {value!r}")
        unknown = sorted(set(value) - set(cls.__dataclass_fields__))
        if unknown:
            raise DatasetError(f"zarr key mapping {value!r}: unknown fields {unknown}")
        return cls(**value)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"array": self.array, "layout": self.layout}
        for name in ("columns", "scale", "offset"):
            if getattr(self, name) is not None:
                data[name] = list(getattr(self, name))
        data["image_range"] = self.image_range
        return data


def chunk_frames(frame_shape: Sequence[int], itemsize: int) -> int:
    """Frames per chunk for rows of ``frame_shape``: a power of two near 2 MiB, at most 4096."""
    frame_bytes = max(1, int(np.prod(frame_shape, dtype=np.int64)) * itemsize)
    frames = max(1, _TARGET_CHUNK_BYTES // frame_bytes)
    return int(min(4096, 2 ** int(math.log2(frames))))


class _ChunkedAppender:
    """Appends rows to a zarr array in whole chunks, so no chunk is compressed twice."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.rows = 0
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._chunk = array.chunks[0]

    def append(self, rows: np.ndarray) -> None:
        self._pending.append(rows)
        self._pending_rows += rows.shape[0]
        if self._pending_rows >= self._chunk:
            self._write(whole_chunks_only=True)

    def finish(self) -> None:
        self._write(whole_chunks_only=False)

    def _write(self, whole_chunks_only: bool) -> None:
        if not self._pending_rows:
            return
        block = np.concatenate(self._pending, axis=0)
        count = block.shape[0]
        if whole_chunks_only:
            count -= count % self._chunk
        if count == 0:
            return
        self.array.resize((self.rows + count, *self.array.shape[1:]))
        self.array[self.rows : self.rows + count] = block[:count]
        self.rows += count
        rest = block[count:]
        self._pending = [rest] if rest.shape[0] else []
        self._pending_rows = rest.shape[0]


class ReplayWriter:
    """Writes a replay buffer (zarr v3) episode by episode; ``close`` writes the metadata."""

    def __init__(
        self,
        path: str | os.PathLike,
        arrays: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    ) -> None:
        """``arrays``: name -> (frame shape, dtype) of every ``data/`` array."""
        zarr = _zarr()
        from zarr.codecs import BloscCodec

        self.path = Path(path)
        self.group = zarr.open_group(str(self.path), mode="w", zarr_format=3)
        self._appenders: dict[str, _ChunkedAppender] = {}
        for name, (frame_shape, dtype) in arrays.items():
            dtype = np.dtype(dtype)
            # Byte shuffling helps floats compress; uint8 images have nothing to shuffle.
            shuffle = "noshuffle" if dtype.itemsize == 1 else "shuffle"
            array = self.group.create_array(
                f"data/{name}",
                shape=(0, *frame_shape),
                chunks=(chunk_frames(frame_shape, dtype.itemsize), *frame_shape),
                dtype=dtype,
                compressors=BloscCodec(cname="zstd", clevel=3, shuffle=shuffle),
            )
            self._appenders[name] = _ChunkedAppender(array)
        self._frame_times = _ChunkedAppender(
            self.group.create_array(
                f"meta/{FRAME_TIME_ARRAY}", shape=(0,), chunks=(65536,), dtype=np.int64
            )
        )
        self._episode_ends: list[int] = []
        self._frames = 0

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def episodes(self) -> int:
        return len(self._episode_ends)

    def add_episode(self, frame_time_ns: np.ndarray, data: Mapping[str, np.ndarray]) -> None:
        """One episode: frame times ``(T,)`` and every array's rows ``(T, ...)``."""
        count = int(frame_time_ns.shape[0])
        if count == 0:
            raise ValueError("an episode needs at least one frame")
        if set(data) != set(self._appenders):
            raise ValueError(f"episode arrays {sorted(data)} != {sorted(self._appenders)}")
        for name, rows in data.items():
            if rows.shape[0] != count:
                raise ValueError(f"{name}: {rows.shape[0]} rows for {count} frames")
            self._appenders[name].append(rows)
        self._frame_times.append(np.asarray(frame_time_ns, dtype=np.int64))
        self._frames += count
        self._episode_ends.append(self._frames)

    def close(self, attributes: Mapping[str, Any]) -> None:
        """Flush the last chunks, write ``meta/episode_ends`` and the root attributes."""
        for appender in (*self._appenders.values(), self._frame_times):
            appender.finish()
        ends = np.asarray(self._episode_ends, dtype=np.int64)
        self.group.create_array("meta/episode_ends", data=ends, chunks=(max(1, ends.size),))
        self.group.attrs.update(
            {"format": CACHE_FORMAT, "format_version": CACHE_FORMAT_VERSION, **attributes}
        )


class LazyArray:
    """A zarr array read on demand, transformed into the key's units; indexed like numpy."""

    def __init__(self, array: Any, transform: Any, frame_shape: tuple[int, ...], dtype: Any):
        self._array = array
        self._transform = transform
        self.shape = (array.shape[0], *frame_shape)
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            return self._transform(self._array[index])
        rows = np.asarray(index)
        if rows.ndim == 2:
            # A batch of windows: each window is a short contiguous range, read on its own.
            return np.stack([self._read(row) for row in rows]) if len(rows) else self._read(rows)
        return self._read(rows)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        flat = rows.reshape(-1)
        if flat.size == 0:
            return np.zeros((*rows.shape, *self.shape[1:]), dtype=self.dtype)
        low, high = int(flat.min()), int(flat.max()) + 1
        block = self._transform(self._array[low:high])
        return block[flat - low].reshape(*rows.shape, *self.shape[1:])


@dataclass
class ReplayData:
    """Frames of every key, back to back, and where each episode ends.

    arrays: key -> ``(N, C, H, W)`` uint8 images or ``(N, D)`` float32 low-dim/action rows
    (numpy arrays, or LazyArray when not loaded in memory). episode_ends: ``(E,)``.
    episodes: a description per episode (name, source, outcome...), for reports.
    """

    arrays: dict[str, Any]
    episode_ends: np.ndarray
    episodes: list[dict[str, Any]]
    attributes: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return int(self.episode_ends[-1]) if self.episode_ends.size else 0

    @property
    def num_episodes(self) -> int:
        return int(self.episode_ends.size)

    def episode_bounds(self, index: int) -> tuple[int, int]:
        start = int(self.episode_ends[index - 1]) if index > 0 else 0
        return start, int(self.episode_ends[index])

    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self.episode_ends])).astype(np.int64)


def identity_mappings(spec: DataSpec) -> dict[str, ArrayMapping]:
    """The mappings of a dataset cache: every key is the array of the same name, images CHW."""
    return {stream.key: ArrayMapping(array=stream.key, layout="chw") for stream in spec.streams}


def open_replay(
    path: str | os.PathLike,
    spec: DataSpec,
    mappings: Mapping[str, ArrayMapping] | None = None,
    in_memory: bool = True,
) -> ReplayData:
    """Read the keys of ``spec`` from the replay buffer at ``path`` (zarr v2 or v3).

    ``mappings`` says where each key is (default: the dataset cache's names). Shapes are
    checked against the spec, so a buffer that does not fit fails here with the key named.
    """
    zarr = _zarr()
    path = Path(path).expanduser()
    try:
        group = zarr.open_group(str(path), mode="r")
        ends = np.asarray(group["meta/episode_ends"][:], dtype=np.int64)
    except Exception as error:
        raise DatasetError(
            f"{path}: not a replay buffer (a zarr group with data/<key> arrays and "
            f"meta/episode_ends): {error}"
        ) from error
    mappings = dict(mappings or identity_mappings(spec))
    missing = [stream.key for stream in spec.streams if stream.key not in mappings]
    if missing:
        raise DatasetError(f"{path}: no zarr array mapped to key(s) {missing}")
    if ends.ndim != 1 or ends.size == 0:
        raise EmptyDatasetError(f"{path}: meta/episode_ends is empty: no episode to train on")
    if np.any(np.diff(np.concatenate([[0], ends])) <= 0):
        raise DatasetError(f"{path}: meta/episode_ends must increase strictly from above 0")
    arrays: dict[str, Any] = {}
    for stream in spec.streams:
        mapping = mappings[stream.key]
        name = f"data/{mapping.array}"
        if name not in group:
            available = sorted(group["data"].array_keys()) if "data" in group else []
            raise DatasetError(
                f"{path}: key {stream.key!r} maps to {name}, which is not in the buffer "
                f"(it has {available})"
            )
        array = group[name]
        if array.shape[0] < ends[-1]:
            raise DatasetError(
                f"{path}: {name} has {array.shape[0]} rows, episode_ends needs {int(ends[-1])}"
            )
        if stream.kind == "image":
            transform, frame_shape, dtype = _image_transform(
                path, stream.key, stream.shape, array, mapping
            )
        else:
            transform, frame_shape, dtype = _low_dim_transform(
                path, stream.key, stream.size, array, mapping
            )
        if in_memory:
            arrays[stream.key] = _load(array, transform, int(ends[-1]))
        else:
            arrays[stream.key] = LazyArray(array, transform, frame_shape, dtype)
    attributes = dict(group.attrs)
    episodes = attributes.get("episodes") or [
        {"name": f"episode_{i}", "source": str(path)} for i in range(ends.size)
    ]
    return ReplayData(arrays, ends, list(episodes), attributes)


def _load(array: Any, transform: Any, rows: int) -> np.ndarray:
    # Chunk by chunk, so a float32 image array becomes uint8 without a full float copy.
    step = max(array.chunks[0], 1) * max(1, 256 // max(array.chunks[0], 1))
    parts = [transform(array[start : min(start + step, rows)]) for start in range(0, rows, step)]
    return np.ascontiguousarray(np.concatenate(parts, axis=0))


def _image_transform(
    path: Path, key: str, shape: tuple[int, ...], array: Any, mapping: ArrayMapping
) -> tuple[Any, tuple[int, ...], Any]:
    channels, height, width = shape
    expected = (channels, height, width) if mapping.layout == "chw" else (height, width, channels)
    if tuple(array.shape[1:]) != expected:
        raise DatasetError(
            f"{path}: data/{mapping.array} frames are {tuple(array.shape[1:])}, the spec's image "
            f"{key!r} needs {expected} ({mapping.layout})"
        )
    integer = np.issubdtype(array.dtype, np.integer)
    scale = 255.0 / mapping.image_range

    def transform(block: np.ndarray) -> np.ndarray:
        if mapping.layout == "hwc":
            block = np.moveaxis(block, -1, -3)
        if integer and mapping.image_range == 255.0:
            return np.ascontiguousarray(block, dtype=np.uint8)
        return np.clip(np.rint(block.astype(np.float32) * scale), 0, 255).astype(np.uint8)

    return transform, (channels, height, width), np.uint8


def _low_dim_transform(
    path: Path, key: str, size: int, array: Any, mapping: ArrayMapping
) -> tuple[Any, tuple[int, ...], Any]:
    width = int(np.prod(array.shape[1:], dtype=np.int64))
    columns = np.asarray(mapping.columns if mapping.columns is not None else range(width))
    if columns.size and columns.max() >= width:
        raise DatasetError(
            f"{path}: key {key!r} selects columns {list(columns)} of data/{mapping.array}, "
            f"which has {width} per frame"
        )
    if columns.size != size:
        raise DatasetError(
            f"{path}: key {key!r} needs {size} values per frame, data/{mapping.array} gives "
            f"{columns.size} (shape {tuple(array.shape)}; select them with columns)"
        )
    scale = np.asarray(mapping.scale if mapping.scale is not None else (1.0,), np.float64)
    offset = np.asarray(mapping.offset if mapping.offset is not None else (0.0,), np.float64)
    for name, value in (("scale", scale), ("offset", offset)):
        if value.size not in (1, size):
            raise DatasetError(f"{path}: key {key!r}: {name} needs 1 or {size} numbers")

    def transform(block: np.ndarray) -> np.ndarray:
        flat = np.asarray(block, dtype=np.float64).reshape(block.shape[0], width)[:, columns]
        return (flat * scale + offset).astype(np.float32)

    return transform, (size,), np.float32
