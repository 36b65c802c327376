"""The scripted expert: its model of the T, its paths, and that it solves easy seeds."""

from __future__ import annotations

import itertools

import gym_pusht  # noqa: F401
import gymnasium as gym
import numpy as np
import pytest

from dp_sim.expert import (
    CENTER_OF_MASS,
    PUSHER_RADIUS,
    WORKSPACE_MAX,
    WORKSPACE_MIN,
    ExpertConfig,
    PathPlanner,
    PushTExpert,
    _faces,
    distance_to_t,
    push_response,
    to_local,
    to_world,
)

# Seeds that the expert solves in well under 300 steps (bench/expert_success.py).
EASY_SEEDS = (100002, 100018)


def test_faces_lie_on_the_outline_with_outward_normals() -> None:
    for face in _faces(reach=PUSHER_RADIUS + 6.0):
        points = face.points(5.0)
        assert distance_to_t(points) == pytest.approx(0.0)
        assert distance_to_t(points + face.normal * 3.0) == pytest.approx(3.0)


def test_pose_transforms_are_inverse() -> None:
    pose = np.array([200.0, 300.0, 2.0])
    points = np.array([[0.0, 0.0], [10.0, -4.0], [60.0, 30.0]])
    assert to_local(pose, to_world(pose, points)) == pytest.approx(points)
    assert to_world(pose, np.zeros((1, 2)))[0] == pytest.approx([200.0, 300.0])


def test_push_response_follows_the_lever_arm() -> None:
    # Through the centre of mass: pure translation by the pushed distance.
    centre_line = np.array([[CENTER_OF_MASS[0], 120.0]])
    motion, turn = push_response(centre_line, np.array([0.0, -1.0]))
    assert motion[0] == pytest.approx([0.0, -1.0]) and turn[0] == pytest.approx(0.0)
    # Off-centre pushes turn the T, opposite ends opposite ways, and translate it less.
    ends = np.array([[-60.0, 0.0], [60.0, 0.0]])
    motion, turn = push_response(ends, np.array([0.0, 1.0]))
    assert turn[0] == pytest.approx(-turn[1]) and turn[1] > 0.0
    assert 0.0 < motion[0, 1] < 1.0


def test_the_task_agrees_with_the_push_model_for_a_short_push() -> None:
    env = gym.make("gym_pusht/PushT-v0", obs_type="state", disable_env_checker=True)
    # Pusher left of the crossbar's left end, T unrotated at (200, 200): push 10 px to the right.
    _, info = env.reset(options={"reset_to_state": [125.0, 215.0, 200.0, 200.0, 0.0]})
    for _ in range(15):
        _, _, _, _, info = env.step(np.array([135.0, 215.0]))
    _, turn = push_response(np.array([[-60.0, 15.0]]), np.array([1.0, 0.0]))
    assert info["block_pose"][2] == pytest.approx(10.0 * turn[0], rel=0.15)
    env.close()


def test_paths_go_around_the_t() -> None:
    pose = np.array([256.0, 256.0, 0.4])
    planner = PathPlanner(pose, clearance=6.0)
    start = to_world(pose, np.array([[0.0, -60.0]]))[0]  # above the crossbar
    goal = to_world(pose, np.array([[0.0, 170.0]]))[0]  # below the stem
    route = planner.path(start, goal)
    assert route is not None and len(route) >= 2
    points = np.array([start, *route])
    for a, b in itertools.pairwise(points):
        samples = a + np.linspace(0.0, 1.0, 50)[:, None] * (b - a)
        assert np.all(planner.clearance_of(samples) >= PUSHER_RADIUS + 6.0 - 1e-6)
    assert planner.path_lengths(start, goal[None])[0] == pytest.approx(
        np.sum(np.linalg.norm(np.diff(points, axis=0), axis=1))
    )


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="standoff"):
        ExpertConfig(standoff=2.0, clearance=6.0)
    with pytest.raises(ValueError, match="push_speed"):
        ExpertConfig(push_speed=0.0)


@pytest.mark.parametrize("latency_steps", [0, 1])
@pytest.mark.parametrize("seed", EASY_SEEDS)
def test_the_expert_solves_easy_seeds_like_a_joystick_operator(seed, latency_steps) -> None:
    env = gym.make("gym_pusht/PushT-v0", obs_type="state", disable_env_checker=True)
    _, info = env.reset(seed=seed)
    expert = PushTExpert()
    pending = [info["pos_agent"]] * latency_steps
    speeds = []
    for _ in range(300):
        target = expert.act(info["pos_agent"], info["block_pose"], info["goal_pose"])
        assert np.all(target >= WORKSPACE_MIN) and np.all(target <= WORKSPACE_MAX)
        pending.append(target)
        _, _, terminated, _, info = env.step(pending.pop(0))
        speeds.append(np.linalg.norm(info["vel_agent"]))
        if terminated:
            break
    env.close()
    assert info["is_success"], f"seed {seed}: coverage {info['coverage']:.3f} after 300 steps"
    # Like a person: a bounded pusher speed (px/s; 1 px = 1 mm).
    assert max(speeds) < 300.0
