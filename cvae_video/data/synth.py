"""The synthetic push world: a procedural stand-in for the BAIR robot-pushing data.

The scene
---------
A top-down view of a table, ``image_size`` pixels square (64 by default), drawn with soft (antialiased) edges:

- the table: a static procedural texture (value noise, wood grain, checker or plain) with a random tint, new for
  every trajectory;
- the gripper: a light disc with a dark rim and two dark jaw marks, at the end-effector position. Its height z makes
  it slightly larger and moves its soft shadow away from it; the jaw marks sit apart while the gripper is open and
  together while it is closed;
- ``min_objects`` to ``max_objects`` objects (discs and squares of distinct saturated colours). They move only when
  the lowered gripper pushes them (or a pushed object pushes another) and then slide on, losing a fraction
  ``friction`` of their velocity every frame. ``friction`` is drawn per trajectory from ``friction_range`` and is
  not visible in the first frames, so the future is not a function of past frames alone.

Coordinates and the CSV rows
----------------------------
Positions are table coordinates: x and y in [-1, 1] span the image from left to right and from top to bottom
(x maps to the continuous pixel column ``(x + 1) / 2 * image_size`` measured from the image's left edge, y likewise
to the row), z in [0, 1] is the gripper's height above the table. The gripper's x and y stay in [-0.9, 0.9].

Row t of ``endeffector_positions.csv`` is the gripper position (x, y, z) in frame t. Row t of ``actions.csv`` is the
command (dx, dy, dz, grip) issued at frame t; it acts between frame t and frame t + 1:

    position[t + 1] = clip(position[t] + ACTION_SCALE * action[t, :3], POSITION_LOW, POSITION_HIGH)  # in float32
    opening[t + 1]  = clip(opening[t] + GRIP_RATE * action[t, 3], 0, 1)

so the last row's command acts beyond the end of the sequence. grip is +1 (open) or -1 (close); the jaw opening is
drawn but not stored. The gripper pushes only while it is low (z < CONTACT_HEIGHT); higher up it passes over objects.

Determinism
-----------
Trajectory i of a split is generated from ``default_rng(SeedSequence([seed, split_index, i]))`` (train 0,
validate 1, test 2) and depends on nothing else, so writing in parallel or in any order gives identical files.

On disk
-------
``write_dataset`` writes the BAIR layout (:mod:`cvae_video.data.layout`: groups of 256 trajectories,
``traj_0_to_255``, ...) into a temporary folder, writes ``synth_config.json`` (generator version, config, seed,
counts) last, and renames the folder into place, so a folder at the destination is never a half-written data set.

API
---
``generate_trajectory(rng, cfg)`` -> frames, actions, positions; ``simulate`` and ``render`` are its two halves
(``simulate`` also returns the hidden state: object paths, friction). ``trajectory_rng(seed, split, i)``,
``write_dataset``, ``is_complete``, ``ensure_synth_dataset`` (generate once into a cache folder, reuse after), and
the ``cvae-data synth`` verb (``add_parser``, ``run``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, DataError
from ..fileio import atomic_folder
from . import layout
from ._pool import run_with_progress

# bump when a change to the generator changes its output, so cached data sets are regenerated
GENERATOR_VERSION = 1
CONFIG_FILE = "synth_config.json"

# default data set sizes; generating and writing them takes roughly half a minute on one free core (PNG writes
# are about three quarters of that), and `workers` divides it
N_TRAIN = 2048
N_VALIDATE = 256
N_TEST = 256
GROUP_SIZE = 256  # trajectories per group folder, as in BAIR

TEXTURES = ("noise", "wood", "checker", "plain")
TEXTURE_CHOICES = ("mixed",) + TEXTURES
MIXED_TEXTURES = ("noise", "wood", "checker")

# gripper kinematics (table units; one pixel is 2 / image_size, 0.03125 at 64x64)
ACTION_SCALE = 0.1
GRIP_RATE = 0.5
POSITION_LOW = np.array([-0.9, -0.9, 0.0], dtype=np.float32)
POSITION_HIGH = np.array([0.9, 0.9, 1.0], dtype=np.float32)
BASE_SPEED = 0.1          # mean commanded gripper speed per frame at speed 1.0 (about 3 px)
CONTACT_HEIGHT = 0.5      # the gripper pushes only below this height

# look of the gripper
GRIP_RADIUS = 0.15        # at z = 0; drawn radius is GRIP_RADIUS * (1 + GRIP_GROWTH * z)
GRIP_GROWTH = 0.3
SHADOW_OFFSET = 0.12      # gripper shadow shift at z = 1, towards +x and +y
RIM_WIDTH = 0.035
JAW_HALF = (0.03, 0.075)  # half width, half height of one jaw mark
JAW_GAP = (0.03, 0.05)    # jaw offset from the centre: closed + opening * extra
GRIP_BODY = np.array([0.93, 0.91, 0.86], dtype=np.float32)
GRIP_RIM = np.array([0.10, 0.10, 0.12], dtype=np.float32)
GRIP_JAW = np.array([0.28, 0.28, 0.33], dtype=np.float32)

# objects
OBJECT_RADIUS = (0.13, 0.2)
PALETTE = np.array([
    [0.86, 0.16, 0.14],  # red
    [0.16, 0.68, 0.22],  # green
    [0.16, 0.32, 0.90],  # blue
    [0.96, 0.80, 0.10],  # yellow
    [0.80, 0.22, 0.78],  # magenta
    [0.10, 0.76, 0.80],  # cyan
    [0.96, 0.52, 0.10],  # orange
    [0.45, 0.22, 0.70],  # purple
], dtype=np.float32)
MAX_OBJECTS = len(PALETTE)
SUBSTEP = 0.05            # longest move (table units) resolved in one physics substep
STOP_SPEED = 2e-3         # objects slower than this come to rest

SPLIT_INDEX = {split: i for i, split in enumerate(layout.SPLITS)}


@dataclass(frozen=True)
class SynthConfig:
    """What varies between push worlds; the defaults are the built-in data set."""

    seq_len: int = 30
    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 3
    speed: float = 1.0                                # multiplier on the gripper's commanded speed
    texture: str = "mixed"                            # one of TEXTURE_CHOICES
    friction_range: tuple[float, float] = (0.1, 0.5)  # fraction of object velocity lost per frame

    def __post_init__(self):
        for key in ("seq_len", "image_size", "min_objects", "max_objects"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"synth {key}: expected an integer, got {value!r}")
        if self.seq_len < 2:
            raise ConfigError(f"synth seq_len must be at least 2, got {self.seq_len}")
        if self.image_size < 32:
            raise ConfigError(f"synth image_size must be at least 32, got {self.image_size}")
        if not 0 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
            raise ConfigError(f"synth objects: need 0 <= min_objects <= max_objects <= {MAX_OBJECTS}, "
                              f"got min_objects={self.min_objects}, max_objects={self.max_objects}")
        if isinstance(self.speed, bool) or not isinstance(self.speed, (int, float)) or not 0 < self.speed <= 10:
            raise ConfigError(f"synth speed must be a number in (0, 10], got {self.speed!r}")
        object.__setattr__(self, "speed", float(self.speed))
        if self.texture not in TEXTURE_CHOICES:
            raise ConfigError(f"synth texture must be one of {', '.join(TEXTURE_CHOICES)}, got {self.texture!r}")
        try:
            lo, hi = (float(v) for v in self.friction_range)
        except (TypeError, ValueError):
            raise ConfigError(f"synth friction_range must be two numbers, got {self.friction_range!r}") from None
        if not 0.0 <= lo <= hi < 1.0:
            raise ConfigError(f"synth friction_range must satisfy 0 <= low <= high < 1, got ({lo}, {hi})")
        object.__setattr__(self, "friction_range", (lo, hi))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["friction_range"] = list(self.friction_range)
        return d

    @classmethod
    def from_dict(cls, values: dict) -> SynthConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"synth config: unknown key(s) {', '.join(unknown)}")
        return cls(**values)


@dataclass
class Episode:
    """Everything about one simulated trajectory; ``render`` turns it into frames."""

    actions: np.ndarray        # (T, 4) float32
    positions: np.ndarray      # (T, 3) float32, gripper (x, y, z) per frame
    opening: np.ndarray        # (T,) jaw opening in [0, 1]
    object_pos: np.ndarray     # (T, K, 2) object centres per frame
    object_radius: np.ndarray  # (K,) contact radius
    object_square: np.ndarray  # (K,) bool: square (else disc)
    object_color: np.ndarray   # (K, 3)
    friction: float            # hidden: fraction of object velocity lost per frame
    background: np.ndarray     # (S, S, 3) float32 in [0, 1]


# ----------------------------------------------------------------------------------------------------------------
# randomness


def trajectory_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for trajectory ``index`` of ``split``: depends only on (seed, split, index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_INDEX[split], int(index)]))


# ----------------------------------------------------------------------------------------------------------------
# physics (plain Python floats: with at most a few objects this is faster than small NumPy arrays)


def grip_radius(z: float) -> float:
    """Drawn and contact radius of the gripper at height z (table units)."""
    return GRIP_RADIUS * (1.0 + GRIP_GROWTH * z)


def step_objects(pos: list, vel: list, r: list, grip_from: list, grip_to: list, friction: float
                 ) -> tuple[list, list]:
    """Advance the objects by one frame while the gripper moves from ``grip_from`` to ``grip_to`` (x, y, z).

    ``pos`` ([[x, y], ...], one per object) are the object centres, ``vel`` their displacement over the previous
    frame and ``r`` their contact radii, as plain floats. Each object first slides by ``vel * (1 - friction)``; a
    low gripper (z < CONTACT_HEIGHT) that overlaps an object pushes it out to touching distance; overlapping
    objects push each other apart; objects stay on the table. The move is cut into substeps so a fast gripper cannot
    jump over an object. An object at rest that nothing touches stays exactly where it is. Returns the new centres
    and their displacements, [[x, y], ...] each.
    """
    p = [[x, y] for x, y in pos]
    keep = 1.0 - friction
    drift = [(vx * keep, vy * keep) for vx, vy in vel]
    gx0, gy0, gz0 = grip_from
    gx1, gy1, gz1 = grip_to
    longest = max([math.hypot(gx1 - gx0, gy1 - gy0)] + [max(abs(dx), abs(dy)) for dx, dy in drift])
    n_sub = max(1, math.ceil(longest / SUBSTEP))
    for s in range(1, n_sub + 1):
        f = s / n_sub
        gx, gy, gz = gx0 + (gx1 - gx0) * f, gy0 + (gy1 - gy0) * f, gz0 + (gz1 - gz0) * f
        for q, (dx, dy) in zip(p, drift):
            q[0] += dx / n_sub
            q[1] += dy / n_sub
        if gz < CONTACT_HEIGHT:
            rg = grip_radius(gz)
            for q, rq in zip(p, r):
                dx, dy = q[0] - gx, q[1] - gy
                dist, reach = math.hypot(dx, dy), rq + rg
                if dist < reach:
                    if dist < 1e-9:  # centred exactly under the gripper: push along +x
                        dx, dy, dist = 1.0, 0.0, 1.0
                    q[0], q[1] = gx + dx * reach / dist, gy + dy * reach / dist
        _separate(p, r)
        for q, rq in zip(p, r):
            q[0] = min(max(q[0], rq - 1.0), 1.0 - rq)
            q[1] = min(max(q[1], rq - 1.0), 1.0 - rq)
    new_vel = []
    for q, (x, y) in zip(p, pos):
        dx, dy = q[0] - x, q[1] - y
        new_vel.append([dx, dy] if math.hypot(dx, dy) >= STOP_SPEED else [0.0, 0.0])
    return p, new_vel


def _separate(p: list, r: list) -> None:
    """Push overlapping objects apart, half the overlap each (in place)."""
    for i in range(len(p)):
        for j in range(i + 1, len(p)):
            dx, dy = p[j][0] - p[i][0], p[j][1] - p[i][1]
            dist = math.hypot(dx, dy)
            overlap = r[i] + r[j] - dist
            if overlap > 0:
                nx, ny = (dx / dist, dy / dist) if dist > 1e-9 else (1.0, 0.0)
                half = overlap / 2
                p[i][0] -= nx * half
                p[i][1] -= ny * half
                p[j][0] += nx * half
                p[j][1] += ny * half


# ----------------------------------------------------------------------------------------------------------------
# simulation: the gripper's command process and the objects


def simulate(rng: np.random.Generator, cfg: SynthConfig) -> Episode:
    """Draw one trajectory's scene, commands, gripper path and object paths."""
    T, S = cfg.seq_len, cfg.image_size
    style = cfg.texture if cfg.texture != "mixed" else MIXED_TEXTURES[rng.integers(len(MIXED_TEXTURES))]
    background = _table(rng, style, S)

    k = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    radius = rng.uniform(*OBJECT_RADIUS, size=k)
    square = rng.random(k) < 0.5
    color = np.clip(PALETTE[rng.choice(len(PALETTE), size=k, replace=False)]
                    + rng.uniform(-0.05, 0.05, size=(k, 3)), 0.0, 1.0).astype(np.float32)
    friction = float(rng.uniform(*cfg.friction_range))

    positions = np.empty((T, 3), dtype=np.float32)
    positions[0] = (*rng.uniform(-0.7, 0.7, size=2), rng.uniform(0.05, 0.3))
    opening = np.empty(T, dtype=np.float32)
    opening[0] = float(rng.integers(2))
    object_pos = np.empty((T, k, 2), dtype=np.float64)
    object_pos[0] = _place_objects(rng, radius, positions[0, :2])
    actions = np.empty((T, 4), dtype=np.float32)
    noise = rng.normal(size=(T, 2))

    obj, obj_vel, obj_radius = object_pos[0].tolist(), [[0.0, 0.0]] * k, radius.tolist()
    scale = np.float32(ACTION_SCALE)
    cx = cy = 0.0            # smoothed planar velocity command
    seg_left, target = 0, (0.0, 0.0)
    for t in range(T):
        here = positions[t].tolist()
        x, y, z = here
        dist = math.hypot(target[0] - x, target[1] - y)
        if seg_left <= 0 or dist < 0.03:
            target, seg_speed, z_target, grip = _new_segment(rng, (x, y), obj, cfg.speed)
            seg_left = int(rng.integers(5, 13))
            dist = math.hypot(target[0] - x, target[1] - y)
        seg_left -= 1
        # head for the target (without overshooting it), smoothed, with some jitter
        gain = min(seg_speed, dist) / max(dist, 1e-9)
        cx = 0.6 * cx + 0.4 * gain * (target[0] - x) + 0.15 * seg_speed * noise[t, 0]
        cy = 0.6 * cy + 0.4 * gain * (target[1] - y) + 0.15 * seg_speed * noise[t, 1]
        dz = min(max(0.5 * (z_target - z), -0.12), 0.12)
        actions[t] = (cx / ACTION_SCALE, cy / ACTION_SCALE, dz / ACTION_SCALE, grip)
        if t + 1 < T:
            positions[t + 1] = np.minimum(np.maximum(positions[t] + actions[t, :3] * scale, POSITION_LOW),
                                          POSITION_HIGH)
            opening[t + 1] = min(max(opening[t] + GRIP_RATE * grip, 0.0), 1.0)
            obj, obj_vel = step_objects(obj, obj_vel, obj_radius, here, positions[t + 1].tolist(), friction)
            if k:
                object_pos[t + 1] = obj
    return Episode(actions, positions, opening, object_pos, radius, square, color, friction, background)


def _new_segment(rng: np.random.Generator, here: tuple[float, float], obj: list, speed: float):
    """A new stretch of motion: where to go, how fast, at what height, with the gripper open or closed."""
    if len(obj) and rng.random() < 0.7:
        # sweep through an object so that pushes are frequent
        ox, oy = obj[rng.integers(len(obj))]
        dx, dy = ox - here[0], oy - here[1]
        beyond = rng.uniform(0.1, 0.4) / max(math.hypot(dx, dy), 1e-9)
        tx, ty = ox + dx * beyond, oy + dy * beyond
    else:
        tx, ty = rng.uniform(-0.8, 0.8, size=2).tolist()
    target = (min(max(tx, -0.85), 0.85), min(max(ty, -0.85), 0.85))
    seg_speed = BASE_SPEED * speed * rng.uniform(0.6, 1.4)
    z_target = rng.uniform(0.65, 0.9) if rng.random() < 0.2 else rng.uniform(0.0, 0.3)
    grip = 1.0 if rng.random() < 0.5 else -1.0
    return target, seg_speed, z_target, grip


def _place_objects(rng: np.random.Generator, radius: np.ndarray, gripper_xy: np.ndarray) -> np.ndarray:
    """Object centres that overlap neither each other nor the gripper (best effort after 50 tries each)."""
    placed: list[np.ndarray] = []
    for r in radius:
        for _ in range(50):
            p = rng.uniform(-0.75, 0.75, size=2)
            free = np.hypot(*(p - gripper_xy)) > r + grip_radius(1.0) + 0.05
            free = free and all(np.hypot(*(p - q)) > r + rq + 0.05 for q, rq in zip(placed, radius))
            if free:
                break
        placed.append(p)
    return np.array(placed, dtype=np.float64).reshape(len(radius), 2)


# ----------------------------------------------------------------------------------------------------------------
# the table texture


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field (size, size) in about [-1, 1]: a random grid, smoothstep-interpolated."""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1))
    u = (np.arange(size) + 0.5) / size * cells
    i = np.minimum(u.astype(int), cells - 1)
    f = u - i
    f = f * f * (3 - 2 * f)
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]          # (size, cells + 1)
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]    # (size, size)


def _table(rng: np.random.Generator, style: str, size: int) -> np.ndarray:
    """A tinted table texture (size, size, 3) float32 with moderate contrast."""
    v, u = np.meshgrid((np.arange(size) + 0.5) / size, (np.arange(size) + 0.5) / size, indexing="ij")
    angle = rng.uniform(0, np.pi)
    along = u * np.cos(angle) + v * np.sin(angle)
    across = -u * np.sin(angle) + v * np.cos(angle)
    if style == "noise":
        n = _value_noise(rng, size, int(rng.integers(3, 7))) + 0.5 * _value_noise(rng, size, int(rng.integers(8, 14)))
    elif style == "wood":
        warp = 0.6 * _value_noise(rng, size, int(rng.integers(2, 5)))
        n = np.sin(2 * np.pi * (across * rng.uniform(4, 9) + warp))
        n = n + 0.3 * _value_noise(rng, size, 16)
    elif style == "checker":
        freq = rng.uniform(3, 8)  # cells per image side
        n = np.tanh(3.0 * np.sin(np.pi * freq * along) * np.sin(np.pi * freq * across))
    elif style == "plain":
        n = 0.3 * _value_noise(rng, size, 4)
    else:
        raise ConfigError(f"unknown texture {style!r}")
    n = n / max(float(np.abs(n).max()), 1e-6)
    base = np.clip(rng.uniform(0.35, 0.6) + rng.normal(0.0, 0.06, size=3), 0.15, 0.8)
    contrast = rng.uniform(0.06, 0.12)
    return np.clip(base * (1.0 + contrast * n[..., None]), 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# rendering: each shape is drawn, for all frames at once, in a small window that follows it


class _Window:
    """A (B, B) pixel window around (cx, cy) in every frame of a (T, S, S, 3) canvas; cx, cy (T,) in pixels.

    The window is shifted to stay inside the image, which keeps whatever part of the shape is visible inside it.
    ``du`` (T, 1, B) and ``dv`` (T, B, 1) are the pixel-centre offsets from the shape's centre.
    """

    def __init__(self, cx: np.ndarray, cy: np.ndarray, half: int, size: int):
        self.b = b = 2 * half + 1
        x0 = np.minimum(np.maximum(np.floor(cx).astype(int) - half, 0), size - b)
        y0 = np.minimum(np.maximum(np.floor(cy).astype(int) - half, 0), size - b)
        self.corners = list(zip(y0.tolist(), x0.tolist()))
        self.du = (x0[:, None] + np.arange(b) + 0.5 - cx[:, None]).astype(np.float32)[:, None, :]
        self.dv = (y0[:, None] + np.arange(b) + 0.5 - cy[:, None]).astype(np.float32)[:, :, None]

    def paint(self, canvas: np.ndarray, layers: list) -> None:
        """Composite ``layers`` [(coverage (T, B, B), colour (3,)), ...], bottom first, into ``canvas`` in place.

        Each layer goes over what lies below with its coverage as alpha; a shadow is a black layer. The layers are
        combined per pixel first, so the window's RGB values are touched only twice.
        """
        b = self.b
        # per-frame slices: much faster than fancy indexing for a few dozen small windows
        patch = np.stack([canvas[t, y:y + b, x:x + b] for t, (y, x) in enumerate(self.corners)])  # (T, B, B, 3)
        transmit = np.ones(patch.shape[:3], dtype=np.float32)
        weights = np.empty(patch.shape[:3] + (len(layers),), dtype=np.float32)  # (T, B, B, N)
        for j, (alpha, _) in enumerate(layers[::-1]):                            # top layer first
            np.multiply(alpha, transmit, out=weights[..., j])
            transmit *= 1.0 - alpha
        colours = _ink(np.array([c for _, c in layers[::-1]], dtype=np.float32))  # (N, 3)
        patch *= transmit[..., None]
        patch += (weights.reshape(-1, len(layers)) @ colours).reshape(patch.shape)
        for t, (y, x) in enumerate(self.corners):
            canvas[t, y:y + b, x:x + b] = patch[t]


def _ink(colour: np.ndarray) -> np.ndarray:
    """Colours in [0, 1] as canvas values: 255 * colour + 0.5 (see ``render``)."""
    return colour * np.float32(255.0) + np.float32(0.5)


def _coverage(d: np.ndarray, inset: float = 0.0, soft: float = 1.0) -> np.ndarray:
    """Antialiased coverage in [0, 1] of the shape with signed distance ``d`` (pixels, negative inside), shrunk
    by ``inset`` pixels, with an edge ``soft`` pixels wide."""
    c = np.subtract(np.float32(0.5 - inset / soft), d * np.float32(1.0 / soft) if soft != 1.0 else d)
    np.maximum(c, np.float32(0.0), out=c)  # two ufuncs: np.clip's Python wrapper costs more than the work here
    return np.minimum(c, np.float32(1.0), out=c)


def _disc(du, dv, r) -> np.ndarray:
    """Signed distance (pixels) to a disc of radius r."""
    d = np.sqrt(du * du + dv * dv)
    d -= r
    return d


def _rounded_box(du, dv, hx, hy, corner) -> np.ndarray:
    """Signed distance (pixels) to an axis-aligned box with half sizes (hx, hy) and rounded corners."""
    qx = np.abs(du) - (hx - corner)
    qy = np.abs(dv) - (hy - corner)
    d = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)  # distance outside the inner box
    d += np.minimum(np.maximum(qx, qy), 0)
    d -= corner
    return d


def _object(du, dv, r, square: bool) -> np.ndarray:
    """Signed distance (pixels) to an object of contact radius r: a disc, or a rounded square inside the circle."""
    if square:
        return _rounded_box(du, dv, 0.9 * r, 0.9 * r, 0.22 * r)
    return _disc(du, dv, r)


def render(ep: Episode, image_size: int) -> np.ndarray:
    """Frames (T, S, S, 3) uint8 of an episode."""
    S, T = image_size, len(ep.positions)
    px = S / 2.0                                             # pixels per table unit
    black = (0.0, 0.0, 0.0)
    rim = RIM_WIDTH * px

    # objects rest most of the time: frames in which no object moved share one drawing of the objects
    moved = np.any(np.diff(ep.object_pos.reshape(T, -1), axis=0) != 0, axis=1)
    scene = np.concatenate([[0], np.cumsum(moved)])                     # (T,) which drawing each frame uses
    first = np.flatnonzero(np.concatenate([[True], moved]))             # (U,) a frame of each drawing
    # the canvas holds 255 * colour + 0.5: painting mixes colours with weights summing to one, so it stays in
    # [0.5, 255.5] and a plain cast to uint8 at the end rounds
    canvas = np.repeat(_ink(ep.background)[None], len(first), axis=0)  # (U, S, S, 3) float32
    for k in range(len(ep.object_radius)):
        r = np.float32(ep.object_radius[k] * px)
        shift = np.float32(0.03 * px)
        xy = ep.object_pos[first, k]
        win = _Window((xy[:, 0] + 1.0) * px, (xy[:, 1] + 1.0) * px,
                      math.ceil(1.2 * r + shift + 1.5), S)  # a square's corner reaches 1.18 r
        square, color = bool(ep.object_square[k]), ep.object_color[k]
        d = _object(win.du, win.dv, r, square)
        win.paint(canvas, [
            (0.3 * _coverage(_object(win.du - shift, win.dv - shift, r, square)), black),  # contact shadow
            (_coverage(d), color * 0.55),
            (_coverage(d, inset=rim), color),
        ])

    canvas = canvas[scene]                                               # (T, S, S, 3)

    z = ep.positions[:, 2]
    grow = (1.0 + GRIP_GROWTH * z)[:, None, None]                          # (T, 1, 1) float32
    r = np.float32(GRIP_RADIUS * px) * grow
    shadow = (0.02 + SHADOW_OFFSET * z[:, None, None]) * px            # (T, 1, 1)
    win = _Window((ep.positions[:, 0] + 1.0) * px, (ep.positions[:, 1] + 1.0) * px,
                  math.ceil((grip_radius(1.0) + 0.02 + SHADOW_OFFSET) * px + 2), S)
    gap = np.float32(px) * (JAW_GAP[0] + JAW_GAP[1] * ep.opening[:, None, None]) * grow
    jaw_x, jaw_y = np.float32(JAW_HALF[0] * px) * grow, np.float32(JAW_HALF[1] * px) * grow
    jaws = np.minimum(_rounded_box(win.du - gap, win.dv, jaw_x, jaw_y, 0.5 * jaw_x),
                      _rounded_box(win.du + gap, win.dv, jaw_x, jaw_y, 0.5 * jaw_x))
    d = _disc(win.du, win.dv, r)
    win.paint(canvas, [
        (0.4 * _coverage(_disc(win.du - shadow, win.dv - shadow, r), soft=2.0), black),
        (_coverage(d), GRIP_RIM),
        (_coverage(d, inset=rim), GRIP_BODY),
        (_coverage(jaws), GRIP_JAW),
    ])

    return canvas.astype(np.uint8)


def generate_trajectory(rng: np.random.Generator, cfg: SynthConfig = SynthConfig()
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One trajectory: frames (T, S, S, 3) uint8, actions (T, 4) float32, positions (T, 3) float32."""
    ep = simulate(rng, cfg)
    return render(ep, cfg.image_size), ep.actions, ep.positions


# ----------------------------------------------------------------------------------------------------------------
# writing a data set


def group_name(index: int, count: int) -> str:
    """BAIR-style group folder holding trajectory ``index`` of a split with ``count`` trajectories."""
    a = index // GROUP_SIZE * GROUP_SIZE
    return f"traj_{a}_to_{min(a + GROUP_SIZE, count) - 1}"


def _description(n_train: int, n_validate: int, n_test: int, seed: int, cfg: SynthConfig) -> dict:
    return {
        "generator": "cvae_video.data.synth",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "counts": {"train": int(n_train), "validate": int(n_validate), "test": int(n_test)},
        "config": cfg.to_dict(),
    }


def _check_counts(n_train, n_validate, n_test, seed) -> None:
    for name, value in (("n_train", n_train), ("n_validate", n_validate), ("n_test", n_test), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"synth {name} must be a non-negative integer, got {value!r}")


def _check_workers(workers) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"synth workers must be a positive integer, got {workers!r}")


def _write_range(root: str, split: str, start: int, stop: int, count: int, seed: int, cfg: SynthConfig) -> int:
    """Generate and write trajectories [start, stop) of a split with ``count`` trajectories; returns stop - start."""
    for i in range(start, stop):
        frames, actions, positions = generate_trajectory(trajectory_rng(seed, split, i), cfg)
        layout.write_trajectory(Path(root) / split / group_name(i, count) / str(i), frames, actions, positions)
    return stop - start


def is_complete(out: str | os.PathLike, n_train: int = N_TRAIN, n_validate: int = N_VALIDATE,
                n_test: int = N_TEST, seed: int = 0, cfg: SynthConfig = SynthConfig()) -> bool:
    """True if ``out`` holds a finished data set written with exactly these counts, seed and config."""
    out = Path(out)
    try:
        recorded = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    wanted = json.loads(json.dumps(_description(n_train, n_validate, n_test, seed, cfg)))
    if {key: recorded.get(key) for key in wanted} != wanted:
        return False
    try:
        for split, count in wanted["counts"].items():
            trajs = layout.list_trajectories(out, split)
            if len(trajs) != count or (count and layout.count_frames(trajs[-1]) != cfg.seq_len):
                return False
    except (DataError, OSError):
        return False
    return True


def write_dataset(out: str | os.PathLike, n_train: int = N_TRAIN, n_validate: int = N_VALIDATE,
                  n_test: int = N_TEST, seed: int = 0, cfg: SynthConfig = SynthConfig(), workers: int = 1,
                  progress: bool = True, overwrite: bool = False) -> dict:
    """Write a push-world data set in the BAIR layout to ``out``; returns the recorded description plus timing.

    The data set is written into a temporary sibling folder and renamed into place once complete.
    An existing ``out`` must be empty, or (with ``overwrite``) a previous synthetic data set.
    """
    _check_counts(n_train, n_validate, n_test, seed)
    _check_workers(workers)
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not overwrite:
            raise ConfigError(f"{out} already exists and is not empty (pass --overwrite to replace a data set)")
        if any(out.iterdir()) and not (out / CONFIG_FILE).is_file():
            raise ConfigError(f"{out} is not a synthetic data set (no {CONFIG_FILE}); refusing to replace it")
    return _write(out, _description(n_train, n_validate, n_test, seed, cfg), cfg, workers, progress, overwrite)


def _write(out: Path, description: dict, cfg: SynthConfig, workers: int, progress: bool, overwrite: bool) -> dict:
    counts, seed = description["counts"], description["seed"]
    chunk = 32  # trajectories per task
    tasks = [(split, a, min(a + chunk, n), n) for split, n in counts.items() for a in range(0, n, chunk)]
    begin = time.perf_counter()
    with atomic_folder(out, replace=overwrite) as tmp:
        for split in counts:
            (tmp / split).mkdir()
        args = [(str(tmp), split, a, b, n, seed, cfg) for split, a, b, n in tasks]
        with tqdm(total=sum(counts.values()), unit="traj", desc="push world", disable=not progress) as bar:
            run_with_progress(_write_range, args, workers, bar)
        (tmp / CONFIG_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return {**description, "path": str(out), "seconds": time.perf_counter() - begin}


def cache_name(n_train: int, n_validate: int, n_test: int, seed: int, cfg: SynthConfig) -> str:
    """Folder name of a cached data set: a digest of everything that determines its contents."""
    text = json.dumps(_description(n_train, n_validate, n_test, seed, cfg), sort_keys=True)
    return "push_world_" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def ensure_synth_dataset(cache_dir: str | os.PathLike, n_train: int = N_TRAIN, n_validate: int = N_VALIDATE,
                         n_test: int = N_TEST, seed: int = 0, cfg: SynthConfig = SynthConfig(),
                         workers: int = 1, progress: bool = True) -> Path:
    """The root of a complete push-world data set under ``cache_dir``, generated on first use and reused after."""
    _check_counts(n_train, n_validate, n_test, seed)
    _check_workers(workers)
    path = Path(cache_dir) / cache_name(n_train, n_validate, n_test, seed, cfg)
    if is_complete(path, n_train, n_validate, n_test, seed, cfg):
        return path
    if path.exists():
        shutil.rmtree(path)  # damaged or unfinished: this folder name belongs to the cache
    try:
        _write(path, _description(n_train, n_validate, n_test, seed, cfg), cfg, workers, progress, overwrite=False)
    except OSError:
        # another process may have finished the same data set first
        if not is_complete(path, n_train, n_validate, n_test, seed, cfg):
            raise
    return path


# ----------------------------------------------------------------------------------------------------------------
# command line: `cvae-data synth`


def add_parser(subparsers) -> None:
    defaults = SynthConfig()
    p = subparsers.add_parser("synth", help="write the synthetic push-world data set",
                              description="Write the synthetic push-world data set in the BAIR layout.")
    p.add_argument("--out", required=True, help="destination folder (ROOT of {train,validate,test})")
    p.add_argument("--n_train", type=int, default=N_TRAIN)
    p.add_argument("--n_validate", type=int, default=N_VALIDATE)
    p.add_argument("--n_test", type=int, default=N_TEST)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seq_len", type=int, default=defaults.seq_len)
    p.add_argument("--min_objects", type=int, default=defaults.min_objects)
    p.add_argument("--max_objects", type=int, default=defaults.max_objects)
    p.add_argument("--speed", type=float, default=defaults.speed, help="multiplier on the gripper speed")
    p.add_argument("--texture", default=defaults.texture, help=f"one of {', '.join(TEXTURE_CHOICES)}")
    p.add_argument("--friction", type=float, nargs=2, default=defaults.friction_range, metavar=("LOW", "HIGH"),
                   help="range of the hidden per-trajectory friction (fraction of velocity lost per frame)")
    p.add_argument("--workers", type=int, default=1, help="processes writing in parallel")
    p.add_argument("--overwrite", action="store_true", help="replace an existing synthetic data set at --out")
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = SynthConfig(seq_len=args.seq_len, min_objects=args.min_objects, max_objects=args.max_objects,
                      speed=args.speed, texture=args.texture, friction_range=tuple(args.friction))
    info = write_dataset(args.out, args.n_train, args.n_validate, args.n_test, seed=args.seed, cfg=cfg,
                         workers=args.workers, overwrite=args.overwrite)
    c = info["counts"]
    total = sum(c.values())
    print(f"wrote {total} trajectories (train {c['train']}, validate {c['validate']}, test {c['test']}) "
          f"to {args.out} in {info['seconds']:.1f} s ({total / max(info['seconds'], 1e-9):.0f} traj/s)")
    return 0
