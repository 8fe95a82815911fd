"""benchmarks.rl.replay: ring-buffer writes, uniform sampling of stored rows, checkpoint round trip, bad inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from benchmarks.rl.replay import ReplayBuffer, Transition

OBS_DIM, ACT_DIM = 3, 2


def _rows(ids):
    """Transitions whose every field encodes the row id, so a sampled row can be checked field by field."""
    ids = torch.as_tensor(ids, dtype=torch.float32)
    n = len(ids)
    return (
        ids[:, None].expand(n, OBS_DIM),
        -ids[:, None].expand(n, ACT_DIM),
        ids * 10,
        ids[:, None].expand(n, OBS_DIM) + 0.5,
        ids % 2,
    )


def _assert_consistent(batch: Transition):
    ids = batch.obs[:, 0]
    assert torch.equal(batch.obs, ids[:, None].expand_as(batch.obs))
    assert torch.equal(batch.action, -ids[:, None].expand_as(batch.action))
    assert torch.equal(batch.reward, ids * 10)
    assert torch.equal(batch.next_obs, ids[:, None].expand_as(batch.next_obs) + 0.5)
    assert torch.equal(batch.terminated, ids % 2)


def test_wrap_around_keeps_the_newest_rows_in_ring_order():
    buffer = ReplayBuffer(5, OBS_DIM, ACT_DIM)
    for ids in ([0, 1, 2], [3, 4, 5], [6, 7]):  # the second batch crosses the end: 5 lands in row 0
        buffer.add(*_rows(ids))
    # By hand: rows 0..4 hold 0,1,2,3,4 after two writes, then 5 -> row 0, 6 -> row 1, 7 -> row 2; next write at 3.
    state = buffer.state_dict()
    assert state["obs"][:, 0].tolist() == [5, 6, 7, 3, 4]
    assert state["reward"].tolist() == [50, 60, 70, 30, 40]
    assert (state["ptr"], state["size"], len(buffer), buffer.full) == (3, 5, 5, True)


def test_batch_crossing_the_end_splits_and_then_continues_at_the_front():
    buffer = ReplayBuffer(4, OBS_DIM, ACT_DIM)
    buffer.add(*_rows([0, 1, 2]))
    buffer.add(*_rows([3, 4, 5]))  # rows 3, 0, 1
    assert buffer.state_dict()["action"][:, 1].tolist() == [-4, -5, -2, -3]
    buffer.add(*_rows([6, 7, 8, 9]))  # a full-capacity batch from row 2: rows 2, 3, 0, 1
    assert buffer.state_dict()["next_obs"][:, 2].tolist() == [8.5, 9.5, 6.5, 7.5]
    assert buffer.state_dict()["ptr"] == 2


def test_sampling_before_full_returns_only_written_rows_and_keeps_fields_aligned():
    buffer = ReplayBuffer(100, OBS_DIM, ACT_DIM)
    buffer.add(*_rows(range(7)))
    batch = buffer.sample(5000, generator=torch.Generator().manual_seed(0))
    _assert_consistent(batch)
    assert set(batch.obs[:, 0].tolist()) == set(range(7))  # every stored row, never an unwritten one


def test_sampling_after_wrap_returns_only_surviving_rows():
    buffer = ReplayBuffer(6, OBS_DIM, ACT_DIM)
    for start in range(0, 16, 4):
        buffer.add(*_rows(range(start, start + 4)))
    batch = buffer.sample(3000, generator=torch.Generator().manual_seed(1))
    _assert_consistent(batch)
    assert set(batch.obs[:, 0].tolist()) == set(range(10, 16))


def test_sampling_is_roughly_uniform():
    buffer = ReplayBuffer(10, OBS_DIM, ACT_DIM)
    buffer.add(*_rows(range(10)))
    ids = buffer.sample(20000, generator=torch.Generator().manual_seed(2)).obs[:, 0]
    counts = torch.bincount(ids.long(), minlength=10)
    assert counts.min() > 1700 and counts.max() < 2300  # expected 2000 each, standard deviation ~42


def test_shapes_dtypes_and_device_of_a_sample():
    buffer = ReplayBuffer(8, OBS_DIM, ACT_DIM, device="cpu")
    obs, action, reward, next_obs, terminated = _rows([0, 1])
    buffer.add(obs.double(), action.double(), reward.double(), next_obs, terminated.bool())  # converted on write
    batch = buffer.sample(4)
    assert isinstance(batch, Transition)
    shapes = [(4, OBS_DIM), (4, ACT_DIM), (4,), (4, OBS_DIM), (4,)]
    assert [tuple(t.shape) for t in batch] == shapes
    assert all(t.dtype == torch.float32 and t.device == torch.device("cpu") for t in batch)
    assert set(batch.terminated.tolist()) <= {0.0, 1.0}


def test_numpy_inputs_from_a_vector_env_are_accepted():
    buffer = ReplayBuffer(4, OBS_DIM, ACT_DIM)
    obs = np.ones((2, OBS_DIM), np.float32)
    buffer.add(obs, np.zeros((2, ACT_DIM), np.float32), np.array([1.0, 2.0]), obs, np.array([True, False]))
    assert buffer.state_dict()["terminated"].tolist() == [1.0, 0.0]


def test_same_generator_seed_same_sample():
    buffer = ReplayBuffer(50, OBS_DIM, ACT_DIM)
    buffer.add(*_rows(range(30)))
    first = buffer.sample(16, generator=torch.Generator().manual_seed(3))
    second = buffer.sample(16, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("fill", [7, 23])  # partly filled, and wrapped
def test_state_dict_round_trip_through_torch_save_weights_only(fill):
    buffer = ReplayBuffer(10, OBS_DIM, ACT_DIM)
    for start in range(0, fill, 3):
        buffer.add(*_rows(range(start, min(start + 3, fill))))
    stream = io.BytesIO()
    torch.save(buffer.state_dict(), stream)
    stream.seek(0)
    restored = ReplayBuffer(10, OBS_DIM, ACT_DIM)
    restored.load_state_dict(torch.load(stream, weights_only=True))
    assert (len(restored), restored.full) == (len(buffer), buffer.full)
    a = buffer.sample(64, generator=torch.Generator().manual_seed(4))
    b = restored.sample(64, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    buffer.add(*_rows([100, 101]))  # writing continues at the same place
    restored.add(*_rows([100, 101]))
    for key in ("obs", "action", "reward", "next_obs", "terminated"):
        assert torch.equal(buffer.state_dict()[key], restored.state_dict()[key])


def test_state_dict_of_a_partly_filled_buffer_is_compact():
    buffer = ReplayBuffer(1000, OBS_DIM, ACT_DIM)
    buffer.add(*_rows(range(4)))
    state = buffer.state_dict()
    assert state["obs"].shape == (4, OBS_DIM)
    assert state["obs"].untyped_storage().nbytes() == 4 * OBS_DIM * 4  # not the whole preallocated storage
    stream = io.BytesIO()
    torch.save(state, stream)
    assert stream.tell() < 10_000


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"capacity": 11}, "capacity=11"),
        ({"obs_dim": 4}, "obs_dim=4"),
        ({"size": 3}, "Inconsistent"),
        ({"obs": torch.zeros(2, OBS_DIM)}, "'obs' has shape"),
    ],
)
def test_load_state_dict_validates(change, match):
    buffer = ReplayBuffer(10, OBS_DIM, ACT_DIM)
    buffer.add(*_rows(range(4)))
    state = {**buffer.state_dict(), **change}
    with pytest.raises(ValueError, match=match):
        ReplayBuffer(10, OBS_DIM, ACT_DIM).load_state_dict(state)
    del state["ptr"]
    with pytest.raises(ValueError, match="missing"):
        ReplayBuffer(10, OBS_DIM, ACT_DIM).load_state_dict(state)


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 3, 2), "capacity"), ((10, 0, 2), "obs_dim"), ((10, 3, -1), "act_dim"), ((10.0, 3, 2), "capacity")],
)
def test_bad_sizes_raise(args, match):
    with pytest.raises(ValueError, match=match):
        ReplayBuffer(*args)


@pytest.mark.parametrize(
    ("index", "bad", "match"),
    [
        (0, torch.zeros(2, OBS_DIM + 1), r"obs must have shape \(2, 3\)"),
        (1, torch.zeros(2), r"action must have shape \(2, 2\)"),
        (2, torch.zeros(2, 1), r"reward must have shape \(2,\)"),
        (3, torch.zeros(3, OBS_DIM), r"next_obs must have shape \(2, 3\)"),
        (4, torch.zeros(1), r"terminated must have shape \(2,\)"),
    ],
)
def test_add_names_the_argument_with_a_wrong_shape(index, bad, match):
    args = list(_rows([0, 1]))
    args[index] = bad
    with pytest.raises(ValueError, match=match):
        ReplayBuffer(4, OBS_DIM, ACT_DIM).add(*args)


def test_add_rejects_more_rows_than_capacity_and_sample_rejects_empty():
    buffer = ReplayBuffer(2, OBS_DIM, ACT_DIM)
    with pytest.raises(ValueError, match="capacity=2"):
        buffer.add(*_rows([0, 1, 2]))
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(1)
    buffer.add(*_rows([0]))
    with pytest.raises(ValueError, match="batch_size"):
        buffer.sample(0)


def test_to_moves_storage_and_keeps_contents():
    buffer = ReplayBuffer(4, OBS_DIM, ACT_DIM)
    buffer.add(*_rows([0, 1, 2]))
    assert buffer.to("cpu") is buffer and buffer.device == torch.device("cpu")
    _assert_consistent(buffer.sample(10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_add_and_sample_never_synchronise():
    buffer = ReplayBuffer(64, OBS_DIM, ACT_DIM, device="cuda")
    rows = [t.cuda() for t in _rows(range(40))]
    generator = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for start in range(0, 40, 8):
            buffer.add(*(t[start : start + 8] for t in rows))
        batch = buffer.sample(256, generator=generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(t.device.type == "cuda" for t in batch)
    _assert_consistent(batch)
