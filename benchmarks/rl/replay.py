"""Uniform replay buffer kept on the training device, written and sampled without host synchronisation."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor


class Transition(NamedTuple):
    """A batch of transitions; every field has batch size ``B`` first and is float32.

    Attributes:
        obs: ``(B, obs_dim)``.
        action: ``(B, act_dim)``.
        reward: ``(B,)``.
        next_obs: ``(B, obs_dim)``: the true next observation, also at the end of an episode.
        terminated: ``(B,)``: 1.0 where ``next_obs`` is terminal (no bootstrapping), 0.0 otherwise, including
            truncation by a time limit.
    """

    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    terminated: Tensor


_FIELDS = Transition._fields


class ReplayBuffer:
    """Fixed-capacity ring buffer of transitions, preallocated on ``device``, sampled uniformly with replacement.

    Storage is five float32 tensors allocated once: ``4 * (2 * obs_dim + act_dim + 2)`` bytes per row (obs and
    next_obs are both stored, so episode ends need no special case), e.g. 168 MB for 10^6 rows of HalfCheetah
    (obs 17, act 6) and 1.94 GB for dog-walk (obs 223, act 38). Once full, each write overwrites the oldest rows.

    ``add`` and ``sample`` never synchronise with the device: the write pointer and size are host-side ints, and
    indices are drawn with ``torch.randint`` on the device with a Python-int bound.

    Checkpointing: `state_dict` holds the filled rows (storage order, the first ``len(self)`` rows) with the write
    pointer and size as ints, so a resumed run continues with exactly the same data (tensors and primitives only:
    safe for ``torch.load(weights_only=True)``). It is ``4 * (2 * obs_dim + act_dim + 2) * len(self)`` bytes, so a
    caller may choose not to checkpoint the buffer and refill it after resuming instead.

    Args:
        capacity: Maximum number of rows.
        obs_dim: Observation size.
        act_dim: Action size.
        device: Where the storage lives (and samples are returned).

    Raises:
        ValueError: If a size is not a positive int.

    Example:
        >>> buffer = ReplayBuffer(capacity=4, obs_dim=3, act_dim=1)
        >>> buffer.add(torch.zeros(2, 3), torch.zeros(2, 1), torch.ones(2), torch.zeros(2, 3), torch.zeros(2))
        >>> len(buffer), buffer.full
        (2, False)
        >>> batch = buffer.sample(5, generator=torch.Generator().manual_seed(0))
        >>> batch.obs.shape, batch.reward
        (torch.Size([5, 3]), tensor([1., 1., 1., 1., 1.]))
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device | str = "cpu") -> None:
        for name, value in (("capacity", capacity), ("obs_dim", obs_dim), ("act_dim", act_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.capacity = capacity
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.device = torch.device(device)
        self._row_shapes: dict[str, tuple[int, ...]] = {
            "obs": (obs_dim,),
            "action": (act_dim,),
            "reward": (),
            "next_obs": (obs_dim,),
            "terminated": (),
        }
        self._storage = {
            name: torch.empty((capacity, *shape), dtype=torch.float32, device=self.device)
            for name, shape in self._row_shapes.items()
        }
        self._ptr = 0  # next row to write
        self._size = 0

    def __len__(self) -> int:
        """Number of stored rows (a host-side int)."""
        return self._size

    @property
    def full(self) -> bool:
        """Whether the buffer holds ``capacity`` rows (further adds overwrite the oldest)."""
        return self._size == self.capacity

    def add(
        self,
        obs: Tensor,
        action: Tensor,
        reward: Tensor,
        next_obs: Tensor,
        terminated: Tensor,
    ) -> None:
        """Append a batch of ``n`` transitions (one per sub-environment), overwriting the oldest when full.

        Inputs are copied into the storage, converted to float32 and moved to `device` on the way (bool
        ``terminated`` and float64 ``reward`` from a vector env are fine; numpy arrays are accepted too).

        Args:
            obs: ``(n, obs_dim)``.
            action: ``(n, act_dim)``.
            reward: ``(n,)``.
            next_obs: ``(n, obs_dim)``: the true next observation (``infos["final_obs"]`` at an episode end).
            terminated: ``(n,)``: true terminal (not time-limit truncation).

        Raises:
            ValueError: If a shape is wrong (the message names the argument and the expected shape) or
                ``n > capacity``.
        """
        values = dict(zip(_FIELDS, (obs, action, reward, next_obs, terminated), strict=True))
        values = {name: torch.as_tensor(value) for name, value in values.items()}
        n = values["obs"].shape[0] if values["obs"].dim() > 0 else 0
        for name, value in values.items():
            expected = (n, *self._row_shapes[name])
            if tuple(value.shape) != expected:
                raise ValueError(f"{name} must have shape {expected} (n, ...), got {tuple(value.shape)}")
        if not 1 <= n <= self.capacity:
            raise ValueError(f"add() takes 1 <= n <= capacity={self.capacity} rows, got n={n}")

        start, first = self._ptr, min(n, self.capacity - self._ptr)  # rows before the end; the rest wrap to 0
        for name, value in values.items():
            store = self._storage[name]
            store[start : start + first].copy_(value[:first])
            if first < n:
                store[: n - first].copy_(value[first:])
        self._ptr = (start + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Transition:
        """Draw ``batch_size`` stored rows uniformly, with replacement.

        Args:
            batch_size: Number of rows.
            generator: Random generator on `device` (e.g. ``torch.Generator(device="cuda")``), for reproducible
                draws; None uses the global generator.

        Returns:
            A `Transition` of tensors on `device`.

        Raises:
            ValueError: If the buffer is empty or ``batch_size < 1``.
        """
        if self._size == 0:
            raise ValueError("Cannot sample from an empty ReplayBuffer; add() transitions first")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        idx = torch.randint(0, self._size, (batch_size,), device=self.device, generator=generator)
        return Transition(*(self._storage[name].index_select(0, idx) for name in _FIELDS))

    def state_dict(self) -> dict[str, Any]:
        """The filled rows and the write position (see the class docstring).

        Returns:
            ``capacity``, ``obs_dim``, ``act_dim``, ``size``, ``ptr`` (ints) and one tensor per `Transition` field
            with the first ``size`` rows in storage order. When the buffer is full the tensors are the storage
            itself (no copy of up to gigabytes): save them before the next `add`.
        """
        # A view of a partly filled buffer is cloned: torch.save would write its whole underlying storage.
        tensors = {name: store if self.full else store[: self._size].clone() for name, store in self._storage.items()}
        return {
            "capacity": self.capacity,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "size": self._size,
            "ptr": self._ptr,
            **tensors,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the rows and write position saved by `state_dict` (onto this buffer's device).

        Args:
            state: A dict from `state_dict`.

        Raises:
            ValueError: If keys are missing, capacity or dimensions differ from this buffer's, or the saved sizes
                are inconsistent.
        """
        missing = {"capacity", "obs_dim", "act_dim", "size", "ptr", *_FIELDS} - set(state)
        if missing:
            raise ValueError(f"ReplayBuffer state is missing {sorted(missing)}")
        saved = {key: int(state[key]) for key in ("capacity", "obs_dim", "act_dim", "size", "ptr")}
        mine = {"capacity": self.capacity, "obs_dim": self.obs_dim, "act_dim": self.act_dim}
        for key, value in mine.items():
            if saved[key] != value:
                raise ValueError(f"ReplayBuffer state has {key}={saved[key]}, this buffer has {key}={value}")
        size, ptr = saved["size"], saved["ptr"]
        # Before the buffer fills up, rows are written in order from 0, so the pointer equals the size.
        if not (0 <= size <= self.capacity and 0 <= ptr < self.capacity and (size == self.capacity or ptr == size)):
            raise ValueError(f"Inconsistent ReplayBuffer state: size={size}, ptr={ptr}, capacity={self.capacity}")
        for name in _FIELDS:
            expected = (size, *self._row_shapes[name])
            if tuple(state[name].shape) != expected:
                raise ValueError(
                    f"ReplayBuffer state {name!r} has shape {tuple(state[name].shape)}, expected {expected}"
                )
        for name in _FIELDS:
            self._storage[name][:size].copy_(state[name])
        self._size, self._ptr = size, ptr

    def to(self, device: torch.device | str) -> ReplayBuffer:
        """Move the storage to ``device`` (in place, like `torch.nn.Module.to`).

        Args:
            device: Target device.

        Returns:
            This buffer.
        """
        self.device = torch.device(device)
        self._storage = {name: store.to(self.device) for name, store in self._storage.items()}
        return self
