"""A scripted PushT expert: pushes the T to its goal the way a person with a joystick would.

ROS-free. Everything here is in the task's pixel frame (x right, y down, angles as the task
reports them); ``dp_sim.pusht_robot`` converts to and from SI units at the edges.

How it works, in the words a person would use:

1. Look at where the T is and where it must go (position of its centre of mass and angle).
2. Pick the face and the spot on it to push, and how far: the push that removes the most pose
   error per second, counting the time to walk there. A push is predicted with the contact
   model of the task: the pusher is a disc, the contact is frictionless and the block keeps no
   momentum, so a push along a face's inward normal moves the block along that normal and
   turns it by an amount set by the lever arm (see :func:`push_response`).
3. Walk the pusher around the T (never through it) to just outside that spot.
4. Push, sliding along the face to keep the best lever arm as the T turns, and slow down as
   the remaining error on that face shrinks (the pusher target leads the contact point by at
   most the remaining push distance, so the PD-controlled pusher never overshoots).
5. When that face has done what it can, go back to 2.

The pusher's commanded target moves at a bounded speed and stays inside the workspace, like
a joystick setpoint.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

import numpy as np

# The T in its own frame, in task pixels (the frame of the task's block pose: origin at the
# middle of the crossbar's outer edge, y along the stem). Both parts as (x_min, x_max, y_min,
# y_max). These and the mass properties below are facts of the PushT task.
CROSSBAR = (-60.0, 60.0, 0.0, 30.0)
STEM = (-15.0, 15.0, 30.0, 120.0)
CENTER_OF_MASS = np.array([0.0, 45.0])
BLOCK_MASS = 1.0
BLOCK_MOMENT = 3000.0
PUSHER_RADIUS = 15.0
# Walls of the task at 5 and 506 px (2 px thick); the pusher centre must stay one radius away.
WORKSPACE_MIN = 5.0 + 2.0 + PUSHER_RADIUS
WORKSPACE_MAX = 506.0 - 2.0 - PUSHER_RADIUS
DEFAULT_GOAL = np.array([256.0, 256.0, math.pi / 4.0])
# The task's pusher is PD-controlled (k_p = 100, k_v = 20): a target that leads the pusher by
# L px moves it at L * k_p / k_v px/s in steady state.
SPEED_PER_LEAD = 5.0


@dataclass(frozen=True)
class ExpertConfig:
    """Tuning of the expert; defaults are the ones measured in bench/expert_success.py."""

    # Weight of the angle error against the position error (px per rad): a T turned by 1 rad
    # uncovers about as much of the goal as one moved by this many pixels.
    angle_weight: float = 47.0
    # Pusher speed when walking around the block, px/s.
    travel_speed: float = 250.0
    # Largest pushing speed, px/s (the target leads the contact by at most speed / 5 px).
    push_speed: float = 100.0
    # Longest push considered in one plan, px (longer pushes continue after replanning).
    max_push: float = 60.0
    # A face is given up when its best remaining push is shorter than this, px.
    min_push: float = 0.4
    # Clearance from the T kept when walking around it, besides the pusher radius, px.
    clearance: float = 6.0
    # Gap between pusher and face where a push starts, px.
    standoff: float = 8.0
    # Fixed cost of starting a new push (settling, turning), s.
    push_overhead_s: float = 0.4
    # Spacing of candidate contact points along a face, px.
    contact_spacing: float = 6.0
    # Distance from the start of a push at which walking ends and pushing begins, px.
    arrival_tolerance: float = 6.0

    def __post_init__(self) -> None:
        for name in ("angle_weight", "travel_speed", "push_speed", "max_push", "min_push"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"ExpertConfig.{name} must be positive")
        if not self.standoff > self.clearance >= 0.0:
            # The start of a push must lie outside the band that walking keeps clear.
            raise ValueError("ExpertConfig needs standoff > clearance >= 0")


@dataclass(frozen=True)
class Face:
    """A straight piece of the T's outline that the pusher can reach, in the T's frame."""

    start: np.ndarray
    end: np.ndarray
    normal: np.ndarray  # outward

    def points(self, spacing: float) -> np.ndarray:
        count = max(2, math.ceil(float(np.linalg.norm(self.end - self.start)) / spacing) + 1)
        fractions = np.linspace(0.0, 1.0, count)[:, None]
        return self.start + fractions * (self.end - self.start)


def _faces(reach: float) -> list[Face]:
    """The reachable faces; in the notches under the crossbar the pusher stops ``reach`` short
    of the inner corner, where it would touch both faces at once."""
    v = np.array
    inner = 15.0 + reach  # first reachable x on the crossbar's underside
    low = 30.0 + reach  # first reachable y on the stem's sides
    return [
        Face(v([-60.0, 0.0]), v([60.0, 0.0]), v([0.0, -1.0])),  # crossbar top
        Face(v([60.0, 0.0]), v([60.0, 30.0]), v([1.0, 0.0])),  # crossbar right end
        Face(v([60.0, 30.0]), v([inner, 30.0]), v([0.0, 1.0])),  # crossbar underside, right
        Face(v([15.0, low]), v([15.0, 120.0]), v([1.0, 0.0])),  # stem right side
        Face(v([15.0, 120.0]), v([-15.0, 120.0]), v([0.0, 1.0])),  # stem end
        Face(v([-15.0, 120.0]), v([-15.0, low]), v([-1.0, 0.0])),  # stem left side
        Face(v([-inner, 30.0]), v([-60.0, 30.0]), v([0.0, 1.0])),  # crossbar underside, left
        Face(v([-60.0, 30.0]), v([-60.0, 0.0]), v([-1.0, 0.0])),  # crossbar left end
    ]


def rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def to_world(pose: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Points in the T's frame -> task frame, for a block pose (x, y, angle)."""
    return local @ rotation(float(pose[2])).T + pose[:2]


def to_local(pose: np.ndarray, world: np.ndarray) -> np.ndarray:
    """Points in the task frame -> the T's frame."""
    return (world - pose[:2]) @ rotation(float(pose[2]))


def distance_to_t(local: np.ndarray) -> np.ndarray:
    """Distance of points (in the T's frame, shape (..., 2)) to the T; 0 inside."""
    result = None
    for x_min, x_max, y_min, y_max in (CROSSBAR, STEM):
        dx = np.maximum(np.maximum(x_min - local[..., 0], local[..., 0] - x_max), 0.0)
        dy = np.maximum(np.maximum(y_min - local[..., 1], local[..., 1] - y_max), 0.0)
        distance = np.hypot(dx, dy)
        result = distance if result is None else np.minimum(result, distance)
    return result


def wrap_angle(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def push_response(contacts: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Motion of the T per pixel that the pusher advances along ``direction`` (T frame).

    The contact is frictionless and the block keeps no momentum (the task damps all velocity
    every physics step), so the pusher's impulse acts along the face normal and the block
    moves just enough that the contact point keeps pace with the pusher: an impulse J with
    J (1/m + (r x d)^2 / I) = 1 per pixel. Returns the centre-of-mass displacement (N, 2) in
    the T's frame and the rotation (N,) in rad.
    """
    lever = contacts - CENTER_OF_MASS
    cross = lever[:, 0] * direction[1] - lever[:, 1] * direction[0]
    impulse = 1.0 / (1.0 / BLOCK_MASS + cross**2 / BLOCK_MOMENT)
    return (impulse / BLOCK_MASS)[:, None] * direction, impulse * cross / BLOCK_MOMENT


@dataclass
class _Push:
    face: int
    contact: np.ndarray  # T frame
    distance: float  # px still to push
    gain: float  # squared-error reduction predicted


class PathPlanner:
    """Shortest collision-free paths for the pusher around the T (a visibility graph)."""

    def __init__(self, pose: np.ndarray, clearance: float, sample_spacing: float = 4.0) -> None:
        self.pose = pose
        self.keep_out = PUSHER_RADIUS + clearance
        self.spacing = sample_spacing
        # Waypoints off the convex corners and in the notches, a little wider than keep_out.
        wide = self.keep_out + 3.0
        # (corner x, corner y, direction x, direction y) in the T's frame.
        corners = np.array(
            [
                *[[-60, 0, -1, -1], [60, 0, 1, -1], [60, 30, 1, 1], [-60, 30, -1, 1]],
                *[[15, 120, 1, 1], [-15, 120, -1, 1], [15, 30, 1, 1], [-15, 30, -1, 1]],
            ],
            dtype=float,
        )
        local = corners[:, :2] + corners[:, 2:] * wide
        nodes = to_world(pose, local)
        inside = np.all((nodes >= WORKSPACE_MIN) & (nodes <= WORKSPACE_MAX), axis=1)
        self.nodes = nodes[inside]
        count = len(self.nodes)
        pairs = [(i, j) for i in range(count) for j in range(i + 1, count)]
        clear = self.segments_clear(
            np.array([self.nodes[i] for i, _ in pairs]).reshape(-1, 2),
            np.array([self.nodes[j] for _, j in pairs]).reshape(-1, 2),
        )
        self.edges: dict[int, list[tuple[int, float]]] = {i: [] for i in range(count)}
        for (i, j), ok in zip(pairs, clear, strict=True):
            if ok:
                length = float(np.linalg.norm(self.nodes[i] - self.nodes[j]))
                self.edges[i].append((j, length))
                self.edges[j].append((i, length))

    def clearance_of(self, points: np.ndarray) -> np.ndarray:
        return distance_to_t(to_local(self.pose, points))

    def segments_clear(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Whether each segment keeps the pusher clear of the T and inside the workspace."""
        if len(starts) == 0:
            return np.zeros(0, dtype=bool)
        lengths = np.linalg.norm(ends - starts, axis=1)
        samples = max(2, math.ceil(float(lengths.max()) / self.spacing) + 1)
        fractions = np.linspace(0.0, 1.0, samples)[None, :, None]
        points = starts[:, None, :] + fractions * (ends - starts)[:, None, :]
        clear = self.clearance_of(points) >= self.keep_out - 1e-6
        inside = np.all((points >= WORKSPACE_MIN) & (points <= WORKSPACE_MAX), axis=2)
        return np.all(clear & inside, axis=1)

    def path_lengths(self, start: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """Length of the shortest path from ``start`` to each goal (inf where there is none)."""
        from_start = self._dijkstra(start)[0]
        count = len(self.nodes)
        direct = self.segments_clear(np.repeat(start[None], len(goals), 0), goals)
        result = np.where(direct, np.linalg.norm(goals - start, axis=1), np.inf)
        if count == 0:
            return result
        to_nodes = self.segments_clear(
            np.repeat(goals, count, axis=0), np.tile(self.nodes, (len(goals), 1))
        ).reshape(len(goals), count)
        legs = np.linalg.norm(goals[:, None, :] - self.nodes[None, :, :], axis=2)
        via = np.where(to_nodes, legs + from_start[None, :], np.inf).min(axis=1)
        return np.minimum(result, via)

    def path(self, start: np.ndarray, goal: np.ndarray) -> list[np.ndarray] | None:
        """Waypoints from ``start`` (excluded) to ``goal`` (included), or None."""
        if self.segments_clear(start[None], goal[None])[0]:
            return [goal]
        distances, previous = self._dijkstra(start)
        count = len(self.nodes)
        if count == 0:
            return None
        to_goal = self.segments_clear(np.repeat(goal[None], count, 0), self.nodes)
        totals = np.where(to_goal, distances + np.linalg.norm(self.nodes - goal, axis=1), np.inf)
        best = int(np.argmin(totals))
        if not np.isfinite(totals[best]):
            return None
        route = [goal]
        node = best
        while node >= 0:
            route.append(self.nodes[node])
            node = previous[node]
        return route[::-1]

    def _dijkstra(self, start: np.ndarray) -> tuple[np.ndarray, list[int]]:
        count = len(self.nodes)
        distances = np.full(count, np.inf)
        previous = [-1] * count
        if count == 0:
            return distances, previous
        visible = self.segments_clear(np.repeat(start[None], count, 0), self.nodes)
        queue: list[tuple[float, int]] = []
        for i in np.flatnonzero(visible):
            distances[i] = float(np.linalg.norm(self.nodes[i] - start))
            queue.append((distances[i], int(i)))
        heapq.heapify(queue)
        while queue:
            distance, node = heapq.heappop(queue)
            if distance > distances[node]:
                continue
            for neighbour, length in self.edges[node]:
                if distance + length < distances[neighbour]:
                    distances[neighbour] = distance + length
                    previous[neighbour] = node
                    heapq.heappush(queue, (distances[neighbour], neighbour))
        return distances, previous


class PushTExpert:
    """The scripted expert. Call :meth:`act` once per 10 Hz step with the observed state."""

    def __init__(self, config: ExpertConfig | None = None) -> None:
        self.config = config or ExpertConfig()
        self._faces = _faces(PUSHER_RADIUS + self.config.clearance)
        self.reset()

    def reset(self) -> None:
        """Forget the current plan (call at the start of an episode)."""
        self._push: _Push | None = None
        self._pushing = False
        # What the expert is doing, for logs and tests: plan, travel, push or hold.
        self.mode = "plan"

    # -- the step -----------------------------------------------------------------------------

    def act(
        self,
        agent_position: np.ndarray,
        block_pose: np.ndarray,
        goal_pose: np.ndarray = DEFAULT_GOAL,
    ) -> np.ndarray:
        """The pusher target (task pixels) for this step, from the observed state."""
        agent = np.asarray(agent_position, dtype=float)
        pose = np.asarray(block_pose, dtype=float)
        goal = np.asarray(goal_pose, dtype=float)
        error = self._error(pose, goal)
        planner = PathPlanner(pose, self.config.clearance)

        if self._pushing and self._push is not None:
            push = self._best_on_face(self._push.face, pose, error)
            if self._still_pushing(push, agent, pose):
                self._push = push
                self.mode = "push"
                return self._command(self._push_target(push, pose))
            self._pushing = False
            self._push = None

        if self._push is None:
            self._push = self._plan(agent, pose, error, planner)
            if self._push is None:  # nothing useful to do: stay put
                self.mode = "hold"
                return self._command(agent)

        # Walking to the spot where the push starts (the T does not move meanwhile).
        approach = self._approach_point(self._push, pose)
        if np.linalg.norm(agent - approach) < self.config.arrival_tolerance:
            self._pushing = True
            self.mode = "push"
            return self._command(self._push_target(self._push, pose))
        self.mode = "travel"
        if planner.clearance_of(agent[None])[0] < planner.keep_out:
            # Still touching the T after the last push: back away first.
            return self._command(self._escape(agent, pose))
        route = planner.path(agent, approach)
        if route is None:  # boxed in by the walls: back away, then plan again
            self._push = None
            return self._command(self._escape(agent, pose))
        return self._command(self._carrot(agent, route, planner))

    # -- planning -----------------------------------------------------------------------------

    def _error(self, pose: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """(dx, dy, w * dangle): centre-of-mass offset to the goal and weighted angle error."""
        com = pose[:2] + rotation(float(pose[2])) @ CENTER_OF_MASS
        goal_com = goal[:2] + rotation(float(goal[2])) @ CENTER_OF_MASS
        angle = wrap_angle(float(goal[2] - pose[2]))
        return np.array([*(goal_com - com), self.config.angle_weight * angle])

    def _evaluate(
        self, face_index: int, pose: np.ndarray, error: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Contacts on a face, the distance to push at each, and the predicted gain."""
        face = self._faces[face_index]
        contacts = face.points(self.config.contact_spacing)
        com_motion, turn = push_response(contacts, -face.normal)
        world_motion = com_motion @ rotation(float(pose[2])).T
        response = np.column_stack([world_motion, self.config.angle_weight * turn])
        along = response @ error
        squared = np.einsum("ij,ij->i", response, response)
        distance = np.clip(along / squared, 0.0, self.config.max_push)
        gain = 2.0 * distance * along - distance**2 * squared
        # A contact where the pusher would have to stand outside the walls is no use.
        pusher = to_world(pose, contacts + face.normal * PUSHER_RADIUS)
        reachable = np.all((pusher >= WORKSPACE_MIN) & (pusher <= WORKSPACE_MAX), axis=1)
        distance = np.where(reachable, distance, 0.0)
        gain = np.where(reachable, gain, 0.0)
        return contacts, distance, gain

    def _best_on_face(self, face_index: int, pose: np.ndarray, error: np.ndarray) -> _Push:
        contacts, distance, gain = self._evaluate(face_index, pose, error)
        best = int(np.argmax(gain))
        return _Push(face_index, contacts[best], float(distance[best]), float(gain[best]))

    def _plan(
        self, agent: np.ndarray, pose: np.ndarray, error: np.ndarray, planner: PathPlanner
    ) -> _Push | None:
        cfg = self.config
        start = agent
        if planner.clearance_of(agent[None])[0] < planner.keep_out:
            start = self._escape(agent, pose)
        best: _Push | None = None
        best_rate = 0.0
        for index, face in enumerate(self._faces):
            contacts, distance, gain = self._evaluate(index, pose, error)
            useful = distance >= cfg.min_push
            if not np.any(useful):
                continue
            approach = to_world(pose, contacts + face.normal * (PUSHER_RADIUS + cfg.standoff))
            travel = planner.path_lengths(start, approach) + np.linalg.norm(start - agent)
            seconds = travel / cfg.travel_speed + distance / cfg.push_speed + cfg.push_overhead_s
            rate = np.where(useful & np.isfinite(travel), gain / seconds, 0.0)
            i = int(np.argmax(rate))
            if rate[i] > best_rate:
                best_rate = float(rate[i])
                best = _Push(index, contacts[i], float(distance[i]), float(gain[i]))
        return best

    def _still_pushing(self, push: _Push, agent: np.ndarray, pose: np.ndarray) -> bool:
        if push.distance < self.config.min_push:
            return False
        face = self._faces[push.face]
        local = to_local(pose, agent[None])[0]
        gap = float((local - face.start) @ face.normal) - PUSHER_RADIUS
        # Lost the face: pushed off its end, or fell back from it.
        return -2.0 < gap < self.config.standoff + 6.0 and distance_to_t(local) < (
            PUSHER_RADIUS + self.config.standoff + 6.0
        )

    # -- motion -------------------------------------------------------------------------------

    def _approach_point(self, push: _Push, pose: np.ndarray) -> np.ndarray:
        face = self._faces[push.face]
        offset = face.normal * (PUSHER_RADIUS + self.config.standoff)
        return to_world(pose, (push.contact + offset)[None])[0]

    def _push_target(self, push: _Push, pose: np.ndarray) -> np.ndarray:
        face = self._faces[push.face]
        lead = min(push.distance, self.config.push_speed / SPEED_PER_LEAD)
        local = push.contact + face.normal * (PUSHER_RADIUS - lead)
        return to_world(pose, local[None])[0]

    def _escape(self, agent: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """The closest point (16 directions, growing steps) where the pusher is clear of the T."""
        local = to_local(pose, agent[None])[0]
        directions = np.array([[math.cos(a), math.sin(a)] for a in np.linspace(0, 2 * math.pi, 16)])
        keep_out = PUSHER_RADIUS + self.config.clearance + 1.0
        best = agent
        for step in (4.0, 8.0, 16.0, 24.0, 32.0):
            candidates = local + directions * step
            clearance = distance_to_t(candidates)
            world = to_world(pose, candidates)
            inside = np.all((world >= WORKSPACE_MIN) & (world <= WORKSPACE_MAX), axis=1)
            ok = (clearance >= keep_out) & inside
            if np.any(ok):
                best = world[int(np.argmax(np.where(ok, clearance, -1.0)))]
                break
        return best

    def _carrot(
        self, agent: np.ndarray, route: list[np.ndarray], planner: PathPlanner
    ) -> np.ndarray:
        """The farthest point along the route, within the travel lead, that the pusher can head
        for in a straight line (so it cuts no corner into the T)."""
        lead = self.config.travel_speed / SPEED_PER_LEAD
        points = [agent, *route]
        samples = [agent]
        for a, b in itertools.pairwise(points):
            count = max(1, math.ceil(float(np.linalg.norm(b - a)) / 4.0))
            samples.extend(a + (b - a) * (k / count) for k in range(1, count + 1))
        samples_array = np.array(samples)
        steps = np.linalg.norm(np.diff(samples_array, axis=0), axis=1)
        along = np.concatenate([[0.0], np.cumsum(steps)])
        within = np.flatnonzero(along <= lead)
        candidates = samples_array[within]
        visible = planner.segments_clear(np.repeat(agent[None], len(candidates), 0), candidates)
        # The pusher itself may graze the keep-out band while turning a corner: then trust the
        # route and head for its next sample.
        index = int(np.flatnonzero(visible)[-1]) if np.any(visible[1:]) else min(1, len(within) - 1)
        return candidates[index]

    @staticmethod
    def _command(target: np.ndarray) -> np.ndarray:
        return np.clip(target, WORKSPACE_MIN, WORKSPACE_MAX)
