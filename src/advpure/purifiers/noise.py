"""Where a purification's randomness comes from, so that a purification can be replayed exactly.

A purification draws standard-normal tensors by integer key: key 0 is the forward-diffusion
noise, key ``i + 1`` the noise of reverse step ``i``. A noise source answers
``normal(key, like) -> Tensor`` shaped like ``like`` (same dtype and device):

- :class:`GlobalNoise`: torch's global generator, fresh each draw (the defense as published).
- :class:`SeededNoise`: counter-based; the draw for ``key`` depends only on (seed, key, shape), so
  any call with the same seed replays the same purification.
- :class:`NoiseTape`: records every draw of another source; :meth:`NoiseTape.replay` gives a
  source that returns the recorded tensors.
- :class:`BrownianNoise`: step noises are the increments of one torchsde Brownian path (so the
  explicit Euler-Maruyama loop and torchsde's adjoint see the same path).
"""

from __future__ import annotations

import torch
import torchsde

_KEY_STRIDE = 1_000_003  # keeps (seed, key) pairs apart in the 63-bit generator seed


class NoiseSource:
    """Standard-normal draws by key; subclasses override :meth:`normal`."""

    def normal(self, key: int, like: torch.Tensor) -> torch.Tensor:
        """A standard-normal tensor shaped like ``like``, for draw ``key``."""
        raise NotImplementedError

    def entropy(self) -> int:
        """An integer seed for a torchsde Brownian path (used by the adjoint solver)."""
        return int(torch.randint(0, 2**31 - 1, (1,)).item())

    def brownian(self, t0: float, t1: float, like: torch.Tensor) -> torchsde.BrownianInterval:
        """A Brownian path on [t0, t1] over flattened states shaped like ``like`` (B, D)."""
        return torchsde.BrownianInterval(
            t0=t0,
            t1=t1,
            size=tuple(like.shape),
            dtype=like.dtype,
            device=like.device,
            entropy=self.entropy(),
            levy_area_approximation="none",
        )


class GlobalNoise(NoiseSource):
    """Fresh draws from torch's global generator (``torch.manual_seed`` makes a run reproducible)."""

    def normal(self, key: int, like: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(like)


class SeededNoise(NoiseSource):
    """Counter-based draws: key ``k`` uses a generator seeded with ``seed * 1000003 + k``.

    Every call with the same seed and batch shape gets the same noise, in any order.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def normal(self, key: int, like: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=like.device)
        generator.manual_seed(self.seed * _KEY_STRIDE + key)
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)

    def entropy(self) -> int:
        return self.seed


class NoiseTape(NoiseSource):
    """Records every draw of ``source`` (default: the global generator) by key."""

    def __init__(self, source: NoiseSource | None = None) -> None:
        self.source = source or GlobalNoise()
        self.draws: dict[int, torch.Tensor] = {}
        self.entropies: list[int] = []

    def normal(self, key: int, like: torch.Tensor) -> torch.Tensor:
        draw = self.source.normal(key, like)
        self.draws[key] = draw.detach().clone()
        return draw

    def entropy(self) -> int:
        """The source's seed for a Brownian path, recorded: the whole path is replayed from it (a
        Brownian path covers the whole batch, so unlike keyed draws it cannot be split by row)."""
        value = self.source.entropy()
        self.entropies.append(value)
        return value

    @property
    def by_row(self) -> bool:
        """Whether every draw was keyed (replayable for any subset of the batch's rows): no
        Brownian path was drawn (``purifier.solver=torchsde`` and ``grad_mode=adjoint`` draw one)."""
        return not self.entropies

    def replay(self) -> RecordedNoise:
        """A source returning exactly the recorded draws and Brownian paths."""
        return RecordedNoise(self.draws, self.entropies)


class RecordedNoise(NoiseSource):
    """Replays recorded draws (and the seeds of recorded Brownian paths, in order); asking for a
    key, shape or path that was not recorded is an error."""

    def __init__(self, draws: dict[int, torch.Tensor], entropies: list[int] | tuple[int, ...] = ()) -> None:
        self.draws = draws
        self.entropies = list(entropies)
        self._next_path = 0

    def entropy(self) -> int:
        if self._next_path >= len(self.entropies):
            raise KeyError(f"Brownian path {self._next_path} was not recorded ({len(self.entropies)} recorded)")
        value = self.entropies[self._next_path]
        self._next_path += 1
        return value

    def normal(self, key: int, like: torch.Tensor) -> torch.Tensor:
        if key not in self.draws:
            raise KeyError(f"noise draw {key} was not recorded (recorded: {sorted(self.draws)})")
        draw = self.draws[key]
        if draw.shape != like.shape:
            raise ValueError(f"recorded draw {key} has shape {tuple(draw.shape)}, asked for {tuple(like.shape)}")
        return draw.to(dtype=like.dtype, device=like.device)


class BrownianNoise(NoiseSource):
    """Step noises from one torchsde Brownian path on the solver's grid ``u_0 < u_1 < ... < u_n``.

    Key ``i + 1`` returns ``(W(u_{i+1}) - W(u_i)) / sqrt(u_{i+1} - u_i)``; key 0 (the forward
    diffusion) comes from ``start``. :meth:`brownian` returns the same path, so torchsde's
    solvers integrate against it.
    """

    def __init__(self, path: torchsde.BrownianInterval, grid: torch.Tensor, start: NoiseSource | None = None) -> None:
        self.path = path
        self.grid = grid.to(torch.float64)
        self.start = start or GlobalNoise()

    def normal(self, key: int, like: torch.Tensor) -> torch.Tensor:
        if key == 0:
            return self.start.normal(0, like)
        u0, u1 = float(self.grid[key - 1]), float(self.grid[key])
        increment = self.path(u0, u1)
        return (increment / (u1 - u0) ** 0.5).view_as(like).to(like.dtype)

    def brownian(self, t0: float, t1: float, like: torch.Tensor) -> torchsde.BrownianInterval:
        return self.path


class OffsetNoise(NoiseSource):
    """``source``'s draws with every key shifted by ``offset`` (keeps the draws of repeated or
    auxiliary chains of one purification apart)."""

    def __init__(self, source: NoiseSource, offset: int) -> None:
        self.source = source
        self.offset = int(offset)

    def normal(self, key: int, like: torch.Tensor) -> torch.Tensor:
        return self.source.normal(key + self.offset, like)

    def entropy(self) -> int:
        return self.source.entropy() + self.offset


def noise_source(seed: int | None) -> NoiseSource:
    """The source a purifier uses when a call names none: seeded if ``seed`` is set, else global."""
    return GlobalNoise() if seed is None else SeededNoise(seed)
