"""The inference node that serves a dp_policy checkpoint as JointTrajectory action chunks.

Not implemented yet: the node arrives with its own issue; this package only builds.
"""
