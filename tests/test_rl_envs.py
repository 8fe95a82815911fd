"""benchmarks.rl.envs: spaces, action rescaling, termination vs truncation, SAME_STEP autoreset, seeding, video."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
from gymnasium import spaces

from benchmarks.rl.envs import DMCEnv, final_observations, make_env, parse_env_id, standardize_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _unit_box(dim):
    return spaces.Box(-1.0, 1.0, (dim,), np.float32)


def _step(envs, action):
    return envs.step(np.asarray(action, dtype=np.float32))


class _SpyEnv(gym.Env):
    """Records the last action it received; asymmetric float64 bounds and a 2-D float64 observation."""

    def __init__(self, action_space=None):
        self.action_space = action_space or spaces.Box(np.array([0.0, -4.0]), np.array([10.0, 4.0]), dtype=np.float64)
        self.observation_space = spaces.Box(-1.0, 1.0, (2, 2), np.float64)
        self.last_action = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.arange(4.0).reshape(2, 2), {}

    def step(self, action):
        self.last_action = np.array(action)
        return np.ones((2, 2)), 0.0, False, False, {}


def test_pendulum_action_plus_one_reaches_the_task_as_its_bound_two():
    envs = make_env("Pendulum-v1", seed=0)
    assert envs.single_action_space == _unit_box(1)
    assert envs.single_observation_space.dtype == np.float32
    pendulum = envs.unwrapped.envs[0].unwrapped
    envs.reset()
    for action, torque in ((1.0, 2.0), (-1.0, -2.0), (0.25, 0.5)):
        obs, *_ = _step(envs, [[action]])
        assert pendulum.last_u == pytest.approx(torque)
    assert obs.shape == (1, 3) and obs.dtype == np.float32
    envs.close()


def test_standardize_env_rescales_asymmetric_bounds_clips_and_flattens():
    spy = _SpyEnv()
    env = standardize_env(spy)
    assert env.action_space == _unit_box(2)
    assert env.observation_space == spaces.Box(-1.0, 1.0, (4,), np.float32)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.tolist() == [0.0, 1.0, 2.0, 3.0]
    for action, expected in (([-1, 1], [0, 4]), ([1, -1], [10, -4]), ([0, 0], [5, 0]), ([3, -7], [10, -4])):
        env.step(np.array(action, np.float32))
        np.testing.assert_allclose(spy.last_action, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("space", "match"),
    [
        (spaces.Discrete(3), "continuous"),
        (spaces.Box(-np.inf, np.inf, (2,), np.float32), "finite"),
        (spaces.Box(-1.0, 1.0, (2, 2), np.float32), "1-D"),
    ],
)
def test_standardize_env_rejects_unsupported_action_spaces(space, match):
    with pytest.raises(ValueError, match=match):
        standardize_env(_SpyEnv(space))


def test_discrete_gym_task_is_rejected():
    with pytest.raises(ValueError, match="continuous"):
        make_env("CartPole-v1", seed=0)


@pytest.mark.parametrize(("env_id", "obs_dim", "act_dim"), [("HalfCheetah-v5", 17, 6), ("dmc:cheetah-run", 17, 6)])
def test_spaces_and_step_outputs(env_id, obs_dim, act_dim):
    envs = make_env(env_id, seed=0, num_envs=2)
    assert envs.num_envs == 2
    assert envs.single_observation_space.shape == (obs_dim,)
    assert envs.single_observation_space.dtype == np.float32
    assert envs.single_action_space == _unit_box(act_dim)
    obs, _ = envs.reset()
    assert obs.shape == (2, obs_dim) and obs.dtype == np.float32
    obs, reward, terminated, truncated, _ = envs.step(envs.action_space.sample())
    assert obs.shape == (2, obs_dim) and obs.dtype == np.float32
    assert reward.shape == terminated.shape == truncated.shape == (2,)
    assert terminated.dtype == truncated.dtype == np.bool_
    envs.close()


def test_gym_time_limit_truncates_and_same_step_autoreset_matches_a_plain_env():
    """The vector env's final_obs and reset obs equal a plain gymnasium env's last and next-reset observations."""
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 1, 6)).astype(np.float32)
    envs = make_env("HalfCheetah-v5", seed=3, max_episode_steps=5)
    plain = gym.make("HalfCheetah-v5", max_episode_steps=5)
    envs.reset()
    plain.reset(seed=3)
    rewards = []
    for t, action in enumerate(actions):
        obs, _, terminated, truncated, infos = envs.step(action)
        plain_obs, plain_reward, *_ = plain.step(action[0])
        rewards.append(plain_reward)
        assert not terminated[0]
        assert truncated[0] == (t == 4)
        assert ("final_obs" in infos) == (t == 4) and ("episode" in infos) == (t == 4)
    assert infos["_final_obs"].tolist() == [True] and infos["_episode"].tolist() == [True]
    np.testing.assert_array_equal(infos["final_obs"][0], plain_obs.astype(np.float32))
    assert infos["episode"]["l"][0] == 5
    assert infos["episode"]["r"][0] == pytest.approx(sum(rewards))
    np.testing.assert_array_equal(obs[0], plain.reset()[0].astype(np.float32))  # already the next episode
    np.testing.assert_array_equal(final_observations(obs, infos)[0], infos["final_obs"][0])
    envs.close()


def test_falling_gym_task_terminates():
    envs = make_env("InvertedPendulum-v5", seed=0)  # terminates once |pole angle| > 0.2
    envs.reset()
    for _ in range(100):
        obs, _, terminated, truncated, infos = _step(envs, [[1.0]])
        if terminated[0]:
            break
    assert terminated[0] and not truncated[0]
    assert abs(infos["final_obs"][0][1]) > 0.2  # the fallen pole
    assert abs(obs[0][1]) <= 0.01  # a fresh episode (reset noise is +-0.01)
    envs.close()


def test_dmc_max_episode_steps_truncates_with_episode_statistics():
    envs = make_env("dmc:cartpole-balance", seed=0, num_envs=2, max_episode_steps=3)
    envs.reset()
    for t in range(3):
        obs, _, terminated, truncated, infos = envs.step(envs.action_space.sample())
        assert truncated.tolist() == [t == 2] * 2 and not terminated.any()
    assert infos["_final_obs"].all() and infos["episode"]["l"].tolist() == [3, 3]
    assert obs.shape == (2, 5) and all(row.shape == (5,) for row in infos["final_obs"])
    envs.close()


def test_dmc_suite_time_limit_truncates_after_1000_steps():
    env = DMCEnv("cartpole", "balance", seed=0)
    env.reset()
    action = np.zeros(1, np.float32)
    ends = [env.step(action)[2:4] for _ in range(1000)]
    assert ends[-1] == (False, True)
    assert not any(terminated or truncated for terminated, truncated in ends[:-1])
    env.close()


@pytest.mark.parametrize(("discount", "terminated", "truncated"), [(0.0, True, False), (1.0, False, True)])
def test_dmc_episode_end_discount_decides_termination_or_truncation(discount, terminated, truncated):
    env = DMCEnv("cartpole", "balance", seed=0)
    env.reset()
    assert env.step(np.zeros(1, np.float32))[2:4] == (False, False)
    env.dm_env.task.get_termination = lambda physics: discount  # dm_control ends the episode with this discount
    _, _, term, trunc, info = env.step(np.zeros(1, np.float32))
    assert (term, trunc, info["discount"]) == (terminated, truncated, discount)
    env.close()


def test_dmc_observation_is_the_flattened_dict_in_order():
    env = DMCEnv("humanoid", "run", seed=0)  # has a scalar entry (head_height)
    obs, _ = env.reset(seed=1)
    time_step_obs = env.dm_env.task.get_observation(env.dm_env.physics)
    expected = np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in time_step_obs.values()])
    assert obs.shape == env.observation_space.shape == (67,)
    np.testing.assert_array_equal(obs, expected)
    env.close()


def _rollout(env_id, seed, num_envs=2, steps=10):
    envs = make_env(env_id, seed=seed, num_envs=num_envs)
    first, _ = envs.reset()
    actions = [envs.action_space.sample() for _ in range(steps)]
    trajectory = [envs.step(action)[0] for action in actions]
    envs.close()
    return first, np.stack(actions), np.stack(trajectory)


def _first_obs(env_id, seed):
    envs = make_env(env_id, seed=seed)
    first, _ = envs.reset()
    envs.close()
    return first[0]


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "dmc:cartpole-swingup"])
def test_same_seed_same_observations_actions_and_trajectory(env_id):
    first, actions, trajectory = _rollout(env_id, seed=7)
    first_again, actions_again, trajectory_again = _rollout(env_id, seed=7)
    np.testing.assert_array_equal(first, first_again)
    np.testing.assert_array_equal(actions, actions_again)
    np.testing.assert_array_equal(trajectory, trajectory_again)
    assert not np.array_equal(first[0], first[1])  # sub-envs get seed + i ...
    np.testing.assert_array_equal(_first_obs(env_id, seed=8), first[1])  # ... exactly
    assert not np.array_equal(_first_obs(env_id, seed=9), first[0])


def test_first_reset_uses_the_factory_seed_unless_given_one():
    envs = make_env("dmc:cartpole-swingup", seed=4)
    explicit = make_env("dmc:cartpole-swingup", seed=123)
    np.testing.assert_array_equal(envs.reset()[0], explicit.reset(seed=4)[0])
    envs.close()
    explicit.close()


@pytest.mark.parametrize(
    ("env_id", "match"),
    [
        ("HalfCheeta-v5", "HalfCheetah-v5"),
        ("HalfCheetah", "HalfCheetah-v5"),
        ("dmc:cheetah-walk", "dmc:cheetah-run"),
        ("dmc:cheetah", "ALL_TASKS"),
        ("dmc:ball-in-cup-catch", "dmc:ball_in_cup-catch"),
    ],
)
def test_unknown_ids_raise_with_close_matches(env_id, match):
    with pytest.raises(ValueError, match=match):
        parse_env_id(env_id)
    with pytest.raises(ValueError, match=match):
        make_env(env_id, seed=0)


def test_parse_env_id_splits_on_the_first_hyphen():
    assert parse_env_id("dmc:ball_in_cup-catch") == ("dmc", "ball_in_cup", "catch")
    assert parse_env_id("dmc:dog-walk") == ("dmc", "dog", "walk")
    assert parse_env_id("Ant-v5") == ("gym", "Ant-v5", None)


@pytest.mark.parametrize(("kwargs", "match"), [({"num_envs": 0}, "num_envs"), ({"max_episode_steps": 0}, "max_ep")])
def test_bad_counts_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_env("Pendulum-v1", seed=0, **kwargs)


def test_mujoco_warnings_do_not_write_a_log_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_env("HalfCheetah-v5", seed=0).close()  # its asset triggers a 'settotalmass' deprecation warning
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_broken_rendering_is_a_runtime_error_naming_mujoco_gl(tmp_path, monkeypatch):
    def broken(self):
        raise ValueError("no OpenGL here")

    monkeypatch.setattr(DMCEnv, "render", broken)
    with pytest.raises(RuntimeError, match="MUJOCO_GL"):
        make_env("dmc:cartpole-balance", seed=0, video_dir=str(tmp_path))


def test_unavailable_backend_fails_with_a_clear_message_or_works():
    """A real backend failure (osmesa is not installed on every machine) must name MUJOCO_GL."""
    code = (
        "import sys, tempfile\n"
        "from benchmarks.rl.envs import make_env\n"
        "try:\n"
        "    make_env('InvertedPendulum-v5', seed=0, video_dir=tempfile.mkdtemp()).close()\n"
        "except RuntimeError as err:\n"
        "    sys.exit(f'RuntimeError: {err}')\n"
    )
    env = {**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 or "failed with MUJOCO_GL='osmesa'" in result.stderr.splitlines()[-1]


@functools.cache
def _rendering_problem():
    with tempfile.TemporaryDirectory() as folder:
        try:
            make_env("dmc:cartpole-balance", seed=0, video_dir=os.path.join(folder, "v"), video_size=(48, 64)).close()
        except RuntimeError as err:
            return str(err)
    return None


@pytest.mark.parametrize("env_id", ["dmc:cartpole-balance", "InvertedPendulum-v5"])
def test_video_of_sub_env_zero_every_n_episodes(env_id, tmp_path):
    problem = _rendering_problem()
    if problem:
        pytest.skip(f"headless rendering unavailable here: {problem}")
    folder = tmp_path / "videos"  # RecordVideo warns when its folder exists already
    envs = make_env(
        env_id,
        seed=0,
        num_envs=2,
        video_dir=str(folder),
        video_every_n_episodes=2,
        video_size=(48, 64),
        max_episode_steps=3,
    )
    envs.reset()
    for _ in range(9):  # three episodes per sub-env: episodes 0 and 2 of sub-env 0 are recorded
        envs.step(envs.action_space.sample())
    envs.close()
    videos = sorted(path.name for path in folder.glob("*.mp4"))
    prefix = env_id.replace(":", "-")
    assert videos == [f"{prefix}-episode-0.mp4", f"{prefix}-episode-2.mp4"]
    frames = iio.imread(folder / videos[0])
    assert frames.shape == (4, 48, 64, 3)  # the reset frame and three steps
    assert frames.std() > 0  # not a blank image


def test_dm_controls_settotalmass_deprecation_is_not_shown(monkeypatch):
    import logging

    from benchmarks.rl import envs

    said = []

    class Keep(logging.Handler):
        def emit(self, record):
            said.append(record.getMessage())

    absl = logging.getLogger("absl")
    handler = Keep()
    absl.addHandler(handler)
    try:
        make_env("dmc:cheetah-run", seed=0).close()  # cheetah's model file sets settotalmass
        assert not [m for m in said if "settotalmass" in m]
        absl.removeFilter(envs._not_settotalmass)  # what a run would print without the filter
        make_env("dmc:cheetah-run", seed=0).close()
        assert [m for m in said if "'settotalmass' is deprecated" in m]
    finally:
        absl.addFilter(envs._not_settotalmass)
        absl.removeHandler(handler)
