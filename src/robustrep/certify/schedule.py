"""The epsilon warm-up of Wong & Kolter's robust training (their code: `np.linspace(starting_epsilon,
epsilon, schedule_length)[epoch]`, then `epsilon`): on MNIST from 0.05 to 0.1 over the first 10 epochs."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class EpsilonSchedule:
    """eps(epoch), epoch counted from 0: linear from `start` to `eps` over `length` epochs, then `eps`.

    >>> s = EpsilonSchedule(eps=0.1, start=0.05, length=10)
    >>> s(0), s(9), s(15)
    (0.05, 0.1, 0.1)
    """

    eps: float
    start: float | None = None
    length: int = 10

    def __post_init__(self):
        if self.eps < 0 or (self.start is not None and self.start < 0) or self.length < 0:
            raise UserError("the epsilon schedule needs eps >= 0, start >= 0 and length >= 0")

    def __call__(self, epoch: int) -> float:
        if self.start is None or self.length <= 0 or epoch >= self.length:
            return float(self.eps)
        if self.length == 1:
            return float(self.eps)
        t = max(int(epoch), 0) / (self.length - 1)
        return float(self.start + t * (self.eps - self.start))
