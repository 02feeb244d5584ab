"""How a set's stored samples become a model's input: the preprocessing recipe of ``set.json``.

A set keeps its samples as they come (raw pixels, images) and says once how to feed them, so
the same files serve a float model, its quantized copy and a phone's runtime alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LAYOUTS = ("NCHW", "NHWC")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm")


class RecipeError(ValueError):
    """``set.json``'s preprocessing recipe is malformed (the message names the key)."""


@dataclass(frozen=True)
class Recipe:
    """``(x - mean) / std`` then ``dtype``; images are also converted to ``color``, resized to
    ``resize`` ([height, width]) and laid out as ``layout``. ``raw_dtype`` is the element type
    ``.raw`` files hold. ``mean``/``std`` are one value or one per channel."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    dtype: str = "float32"
    layout: str = "NCHW"
    resize: tuple[int, int] | None = None
    color: str = "RGB"
    raw_dtype: str = "float32"

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, where: str) -> Recipe:
        data = dict(data or {})
        unknown = sorted(set(data) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise RecipeError(f"{where}: unknown preprocess key(s) {', '.join(unknown)}")
        try:
            recipe = cls(
                mean=_floats(data.get("mean", 0.0)),
                std=_floats(data.get("std", 1.0)),
                dtype=str(np.dtype(data.get("dtype", "float32"))),
                layout=str(data.get("layout", "NCHW")).upper(),
                resize=_size(data.get("resize")),
                color=str(data.get("color", "RGB")).upper(),
                raw_dtype=str(np.dtype(data.get("raw_dtype", "float32"))),
            )
        except (TypeError, ValueError) as error:
            raise RecipeError(f"{where}: bad preprocess recipe: {error}") from error
        if recipe.layout not in LAYOUTS:
            raise RecipeError(f"{where}: layout must be NCHW or NHWC, got {recipe.layout!r}")
        if recipe.color not in ("RGB", "L"):
            raise RecipeError(f"{where}: color must be RGB or L, got {recipe.color!r}")
        if any(s == 0 for s in recipe.std):
            raise RecipeError(f"{where}: std must not be 0")
        return recipe

    def load(self, path: Path) -> np.ndarray:
        """One stored sample as an array (not yet normalised): .npy, .raw or an image."""
        suffix = path.suffix.lower()
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".raw":
            return np.fromfile(path, dtype=self.raw_dtype)
        if suffix in IMAGE_SUFFIXES:
            return self._image(path)
        raise RecipeError(
            f"{path}: unknown input file type {suffix!r}; use .npy, .raw or an image "
            f"({', '.join(IMAGE_SUFFIXES)})"
        )

    def _image(self, path: Path) -> np.ndarray:
        """HWC float32 (H, W, 1 for ``L``), resized, in the recipe's layout (batch added later)."""
        try:
            from PIL import Image
        except ImportError as error:
            raise RecipeError(
                f"{path}: reading images needs Pillow (pip install pillow)"
            ) from error
        with Image.open(path) as image:
            image = image.convert(self.color)
            if self.resize is not None:
                height, width = self.resize
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        return pixels.transpose(2, 0, 1) if self.layout == "NCHW" else pixels

    def apply(self, sample: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        """``sample`` shaped to the model input's ``shape`` (same element count), normalised
        per channel along the layout's channel axis, cast to ``dtype``."""
        tensor = np.asarray(sample, dtype=np.float64).reshape(shape)
        tensor = (tensor - self._per_channel(self.mean, shape)) / self._per_channel(self.std, shape)
        return tensor.astype(self.dtype)

    def _per_channel(self, values: tuple[float, ...], shape: Sequence[int]) -> np.ndarray:
        if len(values) == 1:
            return np.asarray(values[0])
        axis = 1 if self.layout == "NCHW" else len(shape) - 1
        if len(shape) < 2 or shape[axis] != len(values):
            raise RecipeError(
                f"{len(values)} per-channel values do not fit input shape {list(shape)} "
                f"({self.layout})"
            )
        view = [1] * len(shape)
        view[axis] = len(values)
        return np.asarray(values).reshape(view)


def _floats(value: Any) -> tuple[float, ...]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (float(value),)
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return tuple(float(v) for v in value)
    raise ValueError(f"expected a number or a list of numbers, got {value!r}")


def _size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (value[0], value[1])
    raise ValueError(f"resize must be [height, width], got {value!r}")
