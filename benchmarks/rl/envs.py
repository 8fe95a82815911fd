"""Environment factory: gymnasium MuJoCo tasks and the dm_control suite behind one vectorised interface.

`make_env` returns a `gymnasium.vector.VectorEnv` with the same conventions for every task, so that the agent and
the data loop never look at where a task comes from:

* Ids: any registered gymnasium id (``"HalfCheetah-v5"``, ``"Pendulum-v1"``) or ``"dmc:<domain>-<task>"`` for the
  dm_control suite (``"dmc:cheetah-run"``, ``"dmc:ball_in_cup-catch"``; domain and task are split on the first
  hyphen). Unknown ids raise `ValueError` with close matches.
* Observations: a flat float32 `Box` of shape ``(obs_dim,)`` per sub-env (dm_control's observation dict is
  flattened entry by entry, in the dict's order; scalars count as length 1).
* Actions: ``Box(-1, 1, (act_dim,), float32)`` for every task. Tasks with other bounds are rescaled linearly
  (`gymnasium.wrappers.RescaleAction`, e.g. Pendulum's torque: +1 becomes +2), and actions are clipped to [-1, 1]
  first, so out-of-range actions never map past the task's bounds. Discrete action spaces are rejected.
* Episode ends: ``terminated`` means a true terminal state (do not bootstrap), ``truncated`` a time limit
  (bootstrap). Gymnasium tasks keep gymnasium's semantics (`TimeLimit` truncates). dm_control episodes that end
  with ``discount == 0`` terminate, every other end (the suite's time limit, 1000 steps for almost every task, or
  ``max_episode_steps``) truncates.
* Autoreset (``AutoresetMode.SAME_STEP``): when a sub-env's episode ends, `step` already returns the first
  observation of its next episode; the true last observation is in ``infos["final_obs"][i]`` where the mask
  ``infos["_final_obs"][i]`` is set. The data loop must store that one as ``next_obs`` (see `final_observations`).
* Episode statistics (`gymnasium.wrappers.vector.RecordEpisodeStatistics`): on a step where some episode ends,
  ``infos["episode"]`` holds ``"r"`` (return), ``"l"`` (length) and ``"t"`` (seconds) arrays of length
  ``num_envs``, valid where the mask ``infos["_episode"]`` is set. Both keys are absent on other steps.
* Seeding: sub-env ``i`` is seeded with ``seed + i`` on the first reset (also when `reset` is called without a
  seed) and its action space with ``seed + i``; the batched action space is seeded with ``seed``. Same seed, same
  actions: same observations.
* Video: with ``video_dir``, sub-env 0 records every ``video_every_n_episodes``-th episode to mp4 with
  `gymnasium.wrappers.RecordVideo`. Rendering is headless: ``MUJOCO_GL`` defaults to ``egl`` where libEGL is
  found, set when this module is imported, because MuJoCo and dm_control fix their OpenGL backend when they are
  first imported. Import this module before anything else imports ``mujoco`` or ``dm_control``, or set
  ``MUJOCO_GL`` yourself.

MuJoCo's own warnings (e.g. the deprecated ``settotalmass`` in gymnasium's assets) go to the ``"mujoco"`` logger,
once per message, instead of a ``MUJOCO_LOG.TXT`` file in the working directory, unless a handler is already set.

Example:
    >>> envs = make_env("Pendulum-v1", seed=0, num_envs=2)
    >>> obs, _ = envs.reset()
    >>> obs.shape, obs.dtype, envs.single_action_space
    ((2, 3), dtype('float32'), Box(-1.0, 1.0, (1,), float32))
    >>> envs.close()
"""

from __future__ import annotations

import ctypes.util
import difflib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv, VectorWrapper
from gymnasium.wrappers import RecordVideo, RescaleAction
from gymnasium.wrappers.vector import RecordEpisodeStatistics

# gymnasium and numpy do not import mujoco, so setting the backend here, after the imports, is still in time, as
# long as nobody imported mujoco/dm_control before this module (remembered for the error message).
_GL_WAS_SET = "MUJOCO_GL" in os.environ
_MUJOCO_IMPORTED_BEFORE = any(name in sys.modules for name in ("mujoco", "dm_control"))
# Only where libEGL exists: with MUJOCO_GL=egl importing mujoco loads it, so a machine without it could not even
# step a task; unset, environments work and only rendering (video) fails, with the message below.
if not _GL_WAS_SET and ctypes.util.find_library("EGL"):
    os.environ["MUJOCO_GL"] = "egl"

DMC_PREFIX = "dmc:"
_DMC_LIST_HINT = "list them with: python -c 'from dm_control import suite; print(suite.ALL_TASKS)'"
_GYM_LIST_HINT = "list them with: python -c 'import gymnasium; gymnasium.pprint_registry()'"
_GL_HELP = (
    "Headless rendering needs MUJOCO_GL=egl (libEGL + a Mesa or NVIDIA EGL driver: apt-get install libegl1 "
    "libgl1-mesa-dri) or MUJOCO_GL=osmesa (apt-get install libosmesa6), set before mujoco/dm_control are first "
    "imported. Without video, MUJOCO_GL=disabled avoids OpenGL altogether."
)
_mujoco_log = logging.getLogger("mujoco")
_seen_mujoco_warnings: set[str] = set()


def _not_settotalmass(record: logging.LogRecord) -> bool:
    """Drop MuJoCo's ``settotalmass`` deprecation warning (logged through absl).

    dm_control's own model files (cheetah, ...) use it; a DMC run compiles them a dozen times (training, every
    evaluation) and MuJoCo warns each time. There is nothing for the user to act on.
    """
    return "'settotalmass' is deprecated" not in record.getMessage()


logging.getLogger("absl").addFilter(_not_settotalmass)


def parse_env_id(env_id: str) -> tuple[str, str | None, str | None]:
    """Split and validate an environment id.

    Args:
        env_id: A registered gymnasium id, or ``"dmc:<domain>-<task>"`` (split on the first hyphen after the prefix).

    Returns:
        ``("gym", env_id, None)`` or ``("dmc", domain, task)``.

    Raises:
        ValueError: If the id is not registered in gymnasium or not in ``dm_control.suite.ALL_TASKS``; the message
            names close matches and how to list all ids.

    Example:
        >>> parse_env_id("dmc:ball_in_cup-catch")
        ('dmc', 'ball_in_cup', 'catch')
        >>> parse_env_id("HalfCheetah-v5")
        ('gym', 'HalfCheetah-v5', None)
    """
    if env_id.startswith(DMC_PREFIX):
        domain, sep, task = env_id[len(DMC_PREFIX) :].partition("-")
        _check_dmc_task(domain, task, env_id, sep)
        return "dmc", domain, task
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=5)
        raise ValueError(
            f"Unknown gymnasium environment id {env_id!r} (close matches: {close or 'none'}); {_GYM_LIST_HINT}. "
            f"dm_control tasks are written '{DMC_PREFIX}<domain>-<task>', e.g. '{DMC_PREFIX}cheetah-run'."
        )
    return "gym", env_id, None


def _check_dmc_task(domain: str, task: str, env_id: str, sep: str = "-") -> None:
    known = [f"{DMC_PREFIX}{d}-{t}" for d, t in _dmc_suite().ALL_TASKS]
    if not sep or (domain, task) not in _dmc_suite().ALL_TASKS:
        close = difflib.get_close_matches(env_id, known, n=5)
        raise ValueError(
            f"Unknown dm_control task {env_id!r}: expected '{DMC_PREFIX}<domain>-<task>' with (domain, task) in "
            f"dm_control.suite.ALL_TASKS (close matches: {close or 'none'}); {_DMC_LIST_HINT}."
        )


def _gl_error(what: str, err: Exception) -> RuntimeError:
    """A RuntimeError for an OpenGL backend failure, naming MUJOCO_GL and how to fix it."""
    late = (
        " Note: mujoco/dm_control were imported before benchmarks.rl.envs with MUJOCO_GL unset, which fixed their "
        "backend then."
        if _MUJOCO_IMPORTED_BEFORE and not _GL_WAS_SET
        else ""
    )
    return RuntimeError(
        f"{what} failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: {type(err).__name__}: "
        f"{str(err).rstrip('.')}. {_GL_HELP}{late}"
    )


def _dmc_suite() -> Any:
    """Import ``dm_control.suite`` lazily: it costs about a second and sets up the OpenGL backend."""
    try:
        from dm_control import suite
    except Exception as err:  # a broken backend fails the import: RuntimeError, ImportError, AttributeError, ...
        raise _gl_error("Importing dm_control.suite", err) from err
    return suite


def _route_mujoco_warnings() -> None:
    """Send MuJoCo warnings to the ``mujoco`` logger instead of ``MUJOCO_LOG.TXT`` in the working directory.

    Raises:
        RuntimeError: If mujoco cannot be imported: with MUJOCO_GL=egl/osmesa it loads that library on import.
    """
    try:
        import mujoco
    except Exception as err:
        raise _gl_error("Importing mujoco", err) from err

    if mujoco.get_mju_user_warning() is None:  # leave a handler someone else installed alone

        def warn(message: str) -> None:
            if message not in _seen_mujoco_warnings:
                _seen_mujoco_warnings.add(message)
                _mujoco_log.warning(message)

        mujoco.set_mju_user_warning(warn)


class DMCEnv(gym.Env[np.ndarray, np.ndarray]):
    """A dm_control suite task as a gymnasium `Env` with flat float32 observations.

    The episode ends where dm_control ends it (``time_step.last()``): with ``discount == 0`` it is a termination,
    otherwise (the suite's time limit, discount 1) a truncation. ``max_episode_steps`` replaces the suite's time
    limit (shorter or longer). The action space is the task's own bounds as float32 (``[-1, 1]`` for every suite
    task); `make_env` adds the rescaling/clipping shared with gymnasium tasks.

    Args:
        domain: Suite domain, e.g. ``"cheetah"``.
        task: Task of that domain, e.g. ``"run"``.
        seed: Seed of the task's random state (``task_kwargs={"random": seed}``); `reset` with a seed reseeds it.
        max_episode_steps: Step limit per episode; None keeps the suite's time limit (1000 steps for almost every
            task, none for ``lqr``).
        render_mode: None or ``"rgb_array"``.
        render_height: Height of rendered frames in pixels.
        render_width: Width of rendered frames in pixels.
        camera_id: Camera used by `render`.

    Raises:
        ValueError: For an unknown task, a bad ``max_episode_steps`` or an unsupported ``render_mode``.

    Example:
        >>> env = DMCEnv("cartpole", "balance", seed=0, max_episode_steps=3)
        >>> obs, _ = env.reset()
        >>> obs.shape, obs.dtype, env.action_space
        ((5,), dtype('float32'), Box(-1.0, 1.0, (1,), float32))
        >>> [env.step(env.action_space.sample())[3] for _ in range(3)]  # truncated flags
        [False, False, True]
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 50}  # noqa: RUF012 (gymnasium API)

    def __init__(
        self,
        domain: str,
        task: str,
        seed: int | None = None,
        *,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        render_height: int = 240,
        render_width: int = 320,
        camera_id: int = 0,
    ) -> None:
        _check_dmc_task(domain, task, f"{DMC_PREFIX}{domain}-{task}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be None or >= 1, got {max_episode_steps}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"DMCEnv supports render_mode None or 'rgb_array', got {render_mode!r}")
        task_kwargs: dict[str, Any] = {"random": seed}
        if max_episode_steps is not None:  # our own step count ends the episode, not the suite's clock
            task_kwargs["time_limit"] = float("inf")
        self._env = _dmc_suite().load(domain, task, task_kwargs=task_kwargs)
        self._max_episode_steps = max_episode_steps
        self._elapsed = 0
        self.render_mode = render_mode
        self._render_size = (render_height, render_width)
        self._camera_id = camera_id
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self._env.control_timestep())}

        obs_dim = sum(int(np.prod(spec.shape)) for spec in self._env.observation_spec().values())
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        spec = self._env.action_spec()
        low = np.broadcast_to(spec.minimum, spec.shape).astype(np.float32)
        high = np.broadcast_to(spec.maximum, spec.shape).astype(np.float32)
        self.action_space = spaces.Box(low, high, dtype=np.float32)

    @property
    def dm_env(self) -> Any:
        """The wrapped ``dm_control.rl.control.Environment``."""
        return self._env

    @staticmethod
    def _flatten(observation: dict[str, Any]) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype=np.float32).reshape(-1) for v in observation.values()])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; a seed reseeds the task's random state (which draws the initial state).

        Args:
            seed: Optional new seed.
            options: Unused (gymnasium API).

        Returns:
            The first observation and an empty info dict.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        self._elapsed = 0
        return self._flatten(self._env.reset().observation), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one control step.

        Args:
            action: Action within `action_space`.

        Returns:
            ``(obs, reward, terminated, truncated, info)``; ``info["discount"]`` is dm_control's discount.
        """
        time_step = self._env.step(action)
        self._elapsed += 1
        terminated = bool(time_step.last() and time_step.discount == 0.0)
        limit_hit = self._max_episode_steps is not None and self._elapsed >= self._max_episode_steps
        truncated = not terminated and (time_step.last() or limit_hit)
        reward = float(time_step.reward or 0.0)
        return self._flatten(time_step.observation), reward, terminated, truncated, {"discount": time_step.discount}

    def render(self) -> np.ndarray:  # type: ignore[override]
        """Render the current state as an ``(height, width, 3)`` uint8 array."""
        height, width = self._render_size
        return self._env.physics.render(height, width, camera_id=self._camera_id)

    def close(self) -> None:
        """Free the rendering context now rather than at interpreter exit (where EGL may already be gone)."""
        self._env.physics.free()


class _FlatFloat32Observation(gym.ObservationWrapper[np.ndarray, Any, Any]):
    """Flatten observations and cast them to float32 (gymnasium MuJoCo tasks return float64)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._inner_space = env.observation_space
        self._inner_is_box = isinstance(self._inner_space, spaces.Box)
        flat = spaces.flatten_space(self._inner_space)
        if not isinstance(flat, spaces.Box):
            raise ValueError(f"Observation space {env.observation_space} does not flatten to a Box")
        # Explicit casts: Box(..., dtype=float32) with float64 bounds warns about lost precision.
        self.observation_space = spaces.Box(flat.low.astype(np.float32), flat.high.astype(np.float32), dtype=np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        if self._inner_is_box:  # the common case: one copy, no generic flatten
            return np.asarray(observation, dtype=np.float32).reshape(-1)
        return np.asarray(spaces.flatten(self._inner_space, observation), dtype=np.float32)


class _ClipAction(gym.ActionWrapper[Any, np.ndarray, np.ndarray]):
    """Clip actions to the action space; unlike gymnasium's ClipAction it keeps the bounded space."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        # Cached: `action_space` walks the wrapper chain, and np.clip's dispatch costs more than min/max.
        self._low, self._high = env.action_space.low, env.action_space.high

    def action(self, action: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(action, self._low), self._high)


def standardize_env(env: gym.Env) -> gym.Env:
    """Apply this module's space conventions to one environment.

    Observations become a flat float32 `Box`; the action space becomes ``Box(-1, 1, (act_dim,), float32)``
    (linear rescaling where the task's bounds differ), with actions clipped to it.

    Args:
        env: A gymnasium environment with a 1-D, bounded `Box` action space.

    Returns:
        The wrapped environment (``env`` itself wrapped at most three times).

    Raises:
        ValueError: For a non-`Box` (e.g. discrete) or unbounded or multi-dimensional action space.
    """
    space = env.action_space
    if not isinstance(space, spaces.Box):
        raise ValueError(f"Only continuous (Box) action spaces are supported, got {space}")
    if len(space.shape) != 1 or not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise ValueError(f"Expected a 1-D action Box with finite bounds, got {space}")
    obs_space = env.observation_space
    if not (isinstance(obs_space, spaces.Box) and obs_space.dtype == np.float32 and len(obs_space.shape) == 1):
        env = _FlatFloat32Observation(env)
    if space.dtype != np.float32 or np.any(space.low != -1.0) or np.any(space.high != 1.0):
        unit = np.ones(space.shape, space.dtype)  # bounds in the box's dtype, or gymnasium's Box warns about casts
        env = RescaleAction(env, -unit, unit)
        if env.action_space.dtype != np.float32:
            env.action_space = spaces.Box(-1.0, 1.0, space.shape, np.float32)
    return _ClipAction(env)


def _check_rendering(env: gym.Env, seed: int) -> None:
    """Render one frame now so that a broken OpenGL setup fails here, with a useful message."""
    try:
        env.reset(seed=seed)
        frame = env.render()
    except Exception as err:  # backends fail with ValueError, ImportError, EGLError, mujoco.FatalError, ...
        raise _gl_error("Rendering for video", err) from err
    if not (isinstance(frame, np.ndarray) and frame.ndim == 3):
        raise RuntimeError(f"render() returned {type(frame).__name__}, expected an (H, W, 3) array")


def _single_env_fn(
    env_id: str,
    seed: int,
    *,
    max_episode_steps: int | None,
    video_dir: str | None,
    video_every_n_episodes: int,
    video_size: tuple[int, int],
) -> Callable[[], gym.Env]:
    """Return a constructor for one sub-env (video only where ``video_dir`` is given)."""
    kind, name, task = parse_env_id(env_id)
    render_kwargs: dict[str, Any] = {}
    if video_dir is not None:
        height, width = video_size
        if kind == "dmc":
            render_kwargs = {"render_mode": "rgb_array", "render_height": height, "render_width": width}
        elif str(gym.spec(name).entry_point).startswith("gymnasium.envs.mujoco"):  # others take no frame size
            render_kwargs = {"render_mode": "rgb_array", "height": height, "width": width}
        else:
            render_kwargs = {"render_mode": "rgb_array"}

    def build() -> gym.Env:
        _route_mujoco_warnings()
        if kind == "dmc":
            env: gym.Env = DMCEnv(name, task, seed, max_episode_steps=max_episode_steps, **render_kwargs)
        else:
            env = gym.make(name, max_episode_steps=max_episode_steps, **render_kwargs)
        env = standardize_env(env)
        env.action_space.seed(seed)
        if video_dir is not None:
            _check_rendering(env, seed)
            env = RecordVideo(
                env,
                video_dir,
                episode_trigger=lambda episode: episode % video_every_n_episodes == 0,
                name_prefix=env_id.replace(":", "-").replace("/", "-"),
            )
        return env

    return build


class _SeedOnFirstReset(VectorWrapper):
    """Use the factory's seed on the first reset unless the caller passes one."""

    def __init__(self, env: VectorEnv, seed: int) -> None:
        super().__init__(env)
        self._first_seed: int | None = seed

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None) -> Any:
        if seed is None:
            seed = self._first_seed
        self._first_seed = None
        return self.env.reset(seed=seed, options=options)


def make_env(
    env_id: str,
    seed: int,
    num_envs: int = 1,
    *,
    video_dir: str | None = None,
    video_every_n_episodes: int = 1,
    video_size: tuple[int, int] = (240, 320),
    max_episode_steps: int | None = None,
) -> VectorEnv:
    """Build ``num_envs`` copies of a task as one synchronous vector env (conventions: see the module docstring).

    The result is a `gymnasium.vector.SyncVectorEnv` (also for ``num_envs=1``; ``envs.unwrapped``) with
    ``autoreset_mode=AutoresetMode.SAME_STEP`` under `RecordEpisodeStatistics`. ``step`` takes a float array of
    shape ``(num_envs, act_dim)`` in [-1, 1] and returns ``obs`` ``(num_envs, obs_dim)`` float32, ``reward``
    float64, ``terminated``/``truncated`` bool, each ``(num_envs,)``, and ``infos``. On a step where sub-env ``i``
    ends an episode, ``obs[i]`` is already the first observation of its next episode; the last one of the ended
    episode is ``infos["final_obs"][i]`` (mask ``infos["_final_obs"]``), and ``infos["episode"]["r"][i]`` /
    ``["l"][i]`` its return / length (mask ``infos["_episode"]``).

    Args:
        env_id: Gymnasium id or ``"dmc:<domain>-<task>"``.
        seed: Sub-env ``i`` gets ``seed + i`` (first reset, task randomness, action space).
        num_envs: Number of sub-environments, stepped one after the other in this process.
        video_dir: Folder for mp4 videos of sub-env 0; None records nothing.
        video_every_n_episodes: Record episodes 0, n, 2n, ... of sub-env 0. Every recorded step renders a frame
            (30-110 ms at 240x320 with Mesa's CPU renderer, llvmpipe, on a 2-core machine) and the episode's frames
            stay in memory until it ends (230 MB for 1000 frames at 240x320): record sparsely, e.g. evaluation only.
        video_size: ``(height, width)`` of video frames (MuJoCo and dm_control tasks; other gymnasium tasks
            render at their own size).
        max_episode_steps: Step limit per episode (truncation); None keeps the task's own limit (gymnasium's
            registered one, e.g. 1000 for HalfCheetah, Ant, Walker2d, Humanoid; 1000 for the dm_control suite).

    Returns:
        The vector environment. Call ``close()`` when done (it also writes a pending video).

    Raises:
        ValueError: For an unknown id, a discrete action space or a bad count.
        RuntimeError: If ``video_dir`` is given and headless rendering does not work (message names MUJOCO_GL).

    Example:
        >>> envs = make_env("dmc:cartpole-balance", seed=1, num_envs=2, max_episode_steps=2)
        >>> _ = envs.reset()
        >>> for _ in range(2):
        ...     obs, reward, terminated, truncated, infos = envs.step(envs.action_space.sample())
        >>> truncated, infos["_final_obs"], infos["episode"]["l"]
        (array([ True,  True]), array([ True,  True]), array([2, 2]))
        >>> envs.close()
    """
    for name, value in (("num_envs", num_envs), ("video_every_n_episodes", video_every_n_episodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be None or >= 1, got {max_episode_steps}")
    parse_env_id(env_id)  # fail here, not inside the vector env's constructor
    fns = [
        _single_env_fn(
            env_id,
            seed + i,
            max_episode_steps=max_episode_steps,
            video_dir=video_dir if i == 0 else None,
            video_every_n_episodes=video_every_n_episodes,
            video_size=video_size,
        )
        for i in range(num_envs)
    ]
    envs = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    envs.action_space.seed(seed)
    envs.single_action_space.seed(seed)
    return RecordEpisodeStatistics(_SeedOnFirstReset(envs, seed))


def final_observations(next_obs: np.ndarray, infos: dict[str, Any]) -> np.ndarray:
    """The observations to store as ``next_obs``: the true last one where an episode just ended.

    Args:
        next_obs: ``obs`` returned by ``envs.step``, shape ``(num_envs, obs_dim)``.
        infos: ``infos`` returned by the same step.

    Returns:
        ``next_obs`` itself when no episode ended, else a copy with rows replaced by ``infos["final_obs"]``.

    Example:
        >>> infos = {"final_obs": np.array([None, np.ones(2)], dtype=object), "_final_obs": np.array([False, True])}
        >>> final_observations(np.zeros((2, 2), np.float32), infos)
        array([[0., 0.],
               [1., 1.]], dtype=float32)
    """
    mask = infos.get("_final_obs")
    if mask is None or not mask.any():
        return next_obs
    out = next_obs.copy()
    for i in np.flatnonzero(mask):
        out[i] = infos["final_obs"][i]
    return out
