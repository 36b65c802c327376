"""Errors of dataset building and loading: each names the bag, topic or episode at fault."""

from __future__ import annotations


class DatasetError(ValueError):
    """Input that cannot become a training dataset; the message says what and where."""


class BagReadError(DatasetError):
    """A bag that cannot be read: missing files, corrupt or truncated storage, unknown types."""


class MissingTopicError(DatasetError):
    """A topic of the data spec is not in a bag, or has another message type there."""


class MissingJointError(DatasetError):
    """A joint named by the data spec is not in the bag's JointState or JointTrajectory."""


class MessageConversionError(DatasetError):
    """A message that cannot become the array the spec asks for (encoding, size, NaN...)."""


class EpisodeTooShortError(DatasetError):
    """An episode has fewer frames than one training sample needs with the chosen horizons."""


class EmptyDatasetError(DatasetError):
    """No bag, no episode or no frame is left to train on."""
