"""The demonstration recorder: episodes to rosbag2 (MCAP or sqlite3), one bag per episode.

Modules: ``recorder_node`` (the node), ``topic_subscriptions`` and ``qos_matching`` (what is
recorded, with which QoS), ``episode_recording`` and ``episode_writer`` (the bag, written by a
thread of its own; no ROS), ``episode`` (names, custom data, events), ``message_definitions``
(types stored in the bag), ``recover`` and ``mcap_repair`` (bags whose recorder died),
``bag_metadata`` (metadata.yaml), ``testing`` (a pattern publisher for tests and benchmarks).
"""
