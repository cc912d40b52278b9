"""CelebA (Liu et al. 2015) from a user's own copy: it cannot be downloaded here, so point
`$ROBUSTREP_CELEBA_DIR` (or `root=`) at the folder of the official release:

    img_align_celeba/000001.jpg ...   the aligned 178x218 faces
    list_attr_celeba.txt              line 1: the count; line 2: the 40 attribute names; then
                                      "000001.jpg  -1  1 ..." (one -1/1 per attribute)
    list_eval_partition.txt           "000001.jpg 0" (0 train, 1 validation, 2 test)

Images: the central 148x148 square (the face of the aligned crops, as in most VAE work on CelebA; the
whole central square when an image is smaller), resized to 64x64 with antialiasing, RGB. Split `train`
is partition 0, `test` partition 2 (validation is not used). Each of the 40 attributes is a task with 2
classes (label 1 where the attribute is present). The decoded images are cached once as uint8 under the
data cache (`$ROBUSTREP_DATA`), and served through a lazy view (`Uint8Images`: 162770 train images are
2 GB as uint8, 8 GB as float32).
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .cache import atomic_save_npz, data_dir

ENV = "ROBUSTREP_CELEBA_DIR"
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
PARTITIONS = {"train": 0, "test": 2}
CROP, SIZE = 148, 64


class Uint8Images:
    """A read-only tensor-like view of uint8 images [N, C, H, W] that indexes to float32 in [0, 1]
    (len, .shape, .dtype, .device, .to(device), indexing by int, slice or index tensor; `subset(index)`
    is a lazy view of some items)."""

    dtype = torch.float32

    def __init__(self, images_uint8: torch.Tensor):
        self.images = images_uint8

    @property
    def shape(self) -> torch.Size:
        return self.images.shape

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device) -> Uint8Images:
        return Uint8Images(self.images.to(device))

    def subset(self, index) -> Uint8Images:
        return Uint8Images(self.images[torch.as_tensor(index, device=self.images.device)])

    def __getitem__(self, index) -> torch.Tensor:
        if not isinstance(index, (int, slice)):
            index = torch.as_tensor(index, device=self.images.device)
        return self.images[index].to(torch.float32).div_(255.0)


def find_root(root=None) -> Path:
    """The CelebA folder from `root` or $ROBUSTREP_CELEBA_DIR, its three parts checked; a UserError that
    says what is missing otherwise."""
    root = root or os.environ.get(ENV)
    if not root:
        raise UserError(
            f"CelebA is not downloadable here: set {ENV} (or pass root=) to a folder with "
            "img_align_celeba/, list_attr_celeba.txt and list_eval_partition.txt"
        )
    root = Path(root).expanduser()
    for part in ("img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt"):
        if not (root / part).exists():
            raise UserError(
                f"{root} is not a CelebA folder: it has no {part} (it needs img_align_celeba/, "
                "list_attr_celeba.txt and list_eval_partition.txt)"
            )
    return root


def read_attributes(path: Path) -> tuple[list[str], np.ndarray]:
    """File names and a [N, 40] int8 array of -1/1 from list_attr_celeba.txt, checked line by line."""
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise UserError(f"{path}: expected a count line and a line of attribute names")
    names = lines[1].split()
    if tuple(names) != ATTRIBUTES:
        raise UserError(f"{path}: the attribute names differ from CelebA's 40 (got {len(names)}, first {names[:2]})")
    files, values = [], []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 41 or any(v not in ("-1", "1") for v in parts[1:]):
            raise UserError(f"{path}:{number}: expected a file name and 40 values of -1 or 1")
        files.append(parts[0])
        values.append([int(v) for v in parts[1:]])
    if str(len(files)) != lines[0].strip():
        raise UserError(f"{path}: line 1 says {lines[0].strip()} images, the file lists {len(files)}")
    return files, np.asarray(values, dtype=np.int8).reshape(len(files), len(ATTRIBUTES))


def read_partition(path: Path) -> dict[str, int]:
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise UserError(f"{path}:{number}: expected a file name and a partition 0, 1 or 2")
        out[parts[0]] = int(parts[1])
    return out


def decode(path: Path) -> np.ndarray:
    """One face: the central min(148, h, w) square, resized to 64x64 (antialiased), as uint8 [3, 64, 64]."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            w, h = image.size
            side = min(CROP, w, h)
            left, top = (w - side) // 2, (h - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize(
                (SIZE, SIZE), Image.BILINEAR, reducing_gap=None
            )
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()
    except OSError as err:
        raise UserError(f"cannot read the CelebA image {path}: {err}") from None


def _cache_file(root: Path, split: str) -> Path:
    stat = [(root / f).stat() for f in ("list_attr_celeba.txt", "list_eval_partition.txt")]
    key = f"{root.resolve()}|{[(s.st_size, s.st_mtime_ns) for s in stat]}|{CROP}|{SIZE}"
    return data_dir() / "celeba" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}-{split}.npz"


def load_split(split: str, root=None) -> tuple[Uint8Images, torch.Tensor]:
    """(images as a lazy view, the [n, 40] attributes as 0/1 int64) of `split`, decoded once and cached
    on disk, and kept in memory for the next task of the same split."""
    root = find_root(root).resolve()
    return _load_split(split, root, _cache_file(root, split))


@lru_cache(maxsize=2)
def _load_split(split: str, root: Path, cache: Path) -> tuple[Uint8Images, torch.Tensor]:
    if cache.exists():
        with np.load(cache) as arrays:
            return Uint8Images(torch.from_numpy(arrays["x"])), torch.from_numpy(arrays["attributes"]).long()
    files, values = read_attributes(root / "list_attr_celeba.txt")
    partition = read_partition(root / "list_eval_partition.txt")
    missing = [f for f in files if f not in partition]
    if missing:
        raise UserError(f"{root / 'list_eval_partition.txt'} has no partition for {missing[0]}")
    keep = [i for i, f in enumerate(files) if partition[f] == PARTITIONS[split]]
    if not keep:
        raise UserError(f"{root}: no image in CelebA's {split} partition ({PARTITIONS[split]})")
    x = np.empty((len(keep), 3, SIZE, SIZE), dtype=np.uint8)
    for n, i in enumerate(keep):
        if n and n % 10000 == 0:
            print(f"celeba {split}: decoded {n} of {len(keep)} images (cached afterwards)", file=sys.stderr)
        x[n] = decode(root / "img_align_celeba" / files[i])
    attributes = (values[keep] > 0).astype(np.uint8)
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npz(cache, {"x": x, "attributes": attributes})
    return Uint8Images(torch.from_numpy(x)), torch.from_numpy(attributes).long()


def load(split: str, task: str, root=None):
    """(X, y) for one attribute: X a lazy [n, 3, 64, 64] view, y 1 where the attribute is present."""
    X, attributes = load_split(split, root)
    return X, attributes[:, ATTRIBUTES.index(task)].clone()


def write_synthetic(root, n: int = 30, seed: int = 0, size: tuple[int, int] = (178, 218)) -> Path:
    """A tiny CelebA folder in the official format (random faces-to-be: coloured noise with a bright
    square whose size follows attribute 'Smiling', so a probe has something to learn), for tests."""
    from PIL import Image

    root = Path(root)
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    values = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, len(ATTRIBUTES)))
    w, h = size
    attr_lines = [str(n), " ".join(ATTRIBUTES)]
    part_lines = []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        image = rng.integers(0, 120, size=(h, w, 3), dtype=np.uint8)
        half = min(w, h) // (3 if values[i, ATTRIBUTES.index("Smiling")] > 0 else 8)
        image[h // 2 - half : h // 2 + half, w // 2 - half : w // 2 + half] = 250
        Image.fromarray(image).save(root / "img_align_celeba" / name, quality=95)
        attr_lines.append(name + "".join(f" {v:2d}" for v in values[i]))
        part_lines.append(f"{name} {0 if i < n * 2 // 3 else (2 if i % 2 else 1)}")
    (root / "list_attr_celeba.txt").write_text("\n".join(attr_lines) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(part_lines) + "\n")
    return root
