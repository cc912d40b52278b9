"""Color-MNIST (Cemgil et al. 2020, Section 4): every MNIST digit drawn in each of the 7 non-black
corners of the RGB cube, so the data set is 7x MNIST with two tasks, `digit` and `color`.

The images are a lazy view: only the uint8 digits are stored, and an indexed batch is coloured on
the fly (no 7x float copy in memory).
"""

from __future__ import annotations

import torch

# the 7 non-black corners of the RGB cube, in a fixed order (the `color` task's labels 0..6)
COLORS = torch.tensor(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.float32
)
COLOR_NAMES = ["red", "green", "blue", "yellow", "magenta", "cyan", "white"]


class ColoredDigits:
    """A read-only tensor-like view of shape [7N, 3, H, W]: item i is digit i // 7 in colour i % 7.

    Supports len(), .shape, .dtype, .device, .to(device) and indexing by int, slice or index tensor,
    which returns an ordinary float32 tensor in [0, 1]. `subset(index)` is a lazy view of some items.
    """

    dtype = torch.float32

    def __init__(self, digits_uint8: torch.Tensor, items: torch.Tensor | None = None):
        self.digits = digits_uint8  # [N, H, W] uint8
        self.colors = COLORS.to(digits_uint8.device)
        self.items = items  # optional [M] indices into the full 7N items

    @property
    def shape(self) -> torch.Size:
        n, h, w = self.digits.shape
        return torch.Size((n * len(COLORS) if self.items is None else len(self.items), 3, h, w))

    @property
    def device(self) -> torch.device:
        return self.digits.device

    def __len__(self) -> int:
        return self.shape[0]

    def to(self, device) -> ColoredDigits:
        items = None if self.items is None else self.items.to(device)
        return ColoredDigits(self.digits.to(device), items)

    def subset(self, index: torch.Tensor) -> ColoredDigits:
        """A lazy view of the items at `index` (no images are made)."""
        index = torch.as_tensor(index, device=self.digits.device)
        return ColoredDigits(self.digits, index if self.items is None else self.items[index])

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int):
            return self[torch.tensor([index])][0]
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        index = torch.as_tensor(index, device=self.digits.device)
        if self.items is not None:
            index = self.items[index]
        n, c = index // len(COLORS), index % len(COLORS)
        gray = self.digits[n].to(torch.float32).div_(255.0)  # [B, H, W]
        return gray[:, None] * self.colors[c][:, :, None, None]  # [B, 3, H, W]


def colored(digits_uint8: torch.Tensor, labels: torch.Tensor, task: str):
    """The Color-MNIST view of MNIST digits and the labels of `task` ("digit" or "color")."""
    images = ColoredDigits(digits_uint8)
    k = len(COLORS)
    if task == "digit":
        y = labels.repeat_interleave(k)
    else:
        y = torch.arange(k).repeat(len(labels))
    return images, y
