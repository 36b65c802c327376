"""The demonstration recorder: episodes to rosbag2 (MCAP), one bag per episode.

Not implemented yet: the node arrives with its own issue; this package only builds.
"""
