"""The scenes of the synthetic shapes sets: random objects on a background, their geometry, their image.

Shared by the captioning set (:mod:`data.builders.shapes`), its English-German descriptions for
multimodal translation (:mod:`data.builders.shapes_mmt`) and its questions (:mod:`data.builders.shapes_vqa`);
the words for a scene are theirs, this module has none.

A scene (:func:`make_scene`) holds 1-3 objects. An object has a shape (circle, square, triangle,
star, cross), a colour (red, green, blue, yellow, purple, orange, drawn with a small random
jitter), a size (small or large: radius 7-10 % or 14-19 % of the image side) and a centre; objects
are placed so that their bounding boxes (centre +- radius) are at least ``max(2, 3 %)`` pixels
apart, and no two objects of one image share both colour and shape, so every noun phrase names
one object. Backgrounds are low-saturation plain colours, two-colour linear gradients, or a plain
colour with light Gaussian noise. :func:`render` draws the shapes at twice the size and
box-filters them down (anti-aliased edges); the pixel at an object's centre is its fill colour.

Geometry: :func:`relation` (above, below, left of, right of, from the centres along the axis where
they differ more; image y grows downwards) and :func:`region` (the cell of the 3x3 grid of thirds,
only for a centre at least 4 % of the side away from every third line).

A scene is a plain dict: ``image_size``, ``background`` and ``objects``, each with ``shape``,
``colour``, ``size``, ``centre`` ([x, y], pixels), ``radius``, ``bbox`` ([x0, y0, x1, y1] =
centre -+ radius) and ``rgb`` (the fill colour). Everything is drawn from the random generator
given: the same generator state gives the same scene and image.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 205, 30),
    "purple": (140, 60, 190),
    "orange": (240, 130, 20),
}
COLOUR_JITTER = 12  # each channel of a fill colour is its prototype +- this much
SIZES = {"small": (0.07, 0.10), "large": (0.14, 0.19)}  # radius as a fraction of the image side
OBJECT_COUNTS, COUNT_PROBS = (1, 2, 3), (0.25, 0.4, 0.35)
REGION_MARGIN = 0.04  # a region phrase needs the centre this far (fraction of side) from third lines
ROWS, COLUMNS = ("top", "middle", "bottom"), ("left", "centre", "right")

Scene = dict
Obj = dict


# ---------------------------------------------------------------------------------------------
# scenes


def _gap(size: int) -> int:
    """Minimum distance in pixels between two objects' bounding boxes."""
    return max(2, round(0.03 * size))


def boxes_apart(a: list[int], b: list[int], gap: int = 0) -> bool:
    """Whether boxes ``[x0, y0, x1, y1]`` are at least ``gap`` pixels apart along some axis."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _background(rng: np.random.Generator) -> dict:
    """A low-saturation background description: plain, gradient or noise."""

    def pale() -> list[int]:
        h, s, v = rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.45, 0.95)
        return [round(255 * c) for c in colorsys.hsv_to_rgb(h, s, v)]

    kind = str(rng.choice(["plain", "gradient", "noise"]))
    if kind == "plain":
        return {"kind": kind, "colour": pale()}
    if kind == "gradient":
        direction = str(rng.choice(["vertical", "horizontal", "diagonal", "antidiagonal"]))
        return {"kind": kind, "colours": [pale(), pale()], "direction": direction}
    return {"kind": kind, "colour": pale(), "std": int(rng.integers(4, 13))}


def _place(rng: np.random.Generator, size: int, radii: list[int], tries: int = 200) -> list[list[int]] | None:
    """Centres for objects of the given radii, inside the image, bounding boxes apart; None if stuck."""
    gap, centres, boxes = _gap(size), [], []
    for r in radii:
        for _ in range(tries):
            cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
            box = [cx - r, cy - r, cx + r, cy + r]
            if all(boxes_apart(box, other, gap) for other in boxes):
                centres.append([cx, cy])
                boxes.append(box)
                break
        else:
            return None
    return centres


def make_scene(
    rng: np.random.Generator, size: int = 128, colours: dict[str, tuple[int, int, int]] = COLOURS
) -> Scene:
    """A random scene: background and 1-3 objects with distinct (colour, shape), not overlapping.

    ``colours`` maps colour names to prototype RGB (default: the six of :data:`COLOURS`).
    """
    background = _background(rng)
    n = int(rng.choice(OBJECT_COUNTS, p=COUNT_PROBS))
    combos = [(c, s) for c in colours for s in SHAPES]
    while True:  # three large objects fit easily at MIN_SIZE; a retry is rare and always ends
        picks = [combos[int(i)] for i in rng.choice(len(combos), size=n, replace=False)]
        sizes = [str(rng.choice(list(SIZES))) for _ in range(n)]
        radii = [max(2, round(size * rng.uniform(*SIZES[s]))) for s in sizes]
        centres = _place(rng, size, radii)
        if centres is not None:
            break
    objects = []
    for (colour, shape), size_name, r, (cx, cy) in zip(picks, sizes, radii, centres):
        jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
        rgb = [int(np.clip(c + j, 0, 255)) for c, j in zip(colours[colour], jitter)]
        objects.append({
            "shape": shape, "colour": colour, "size": size_name, "centre": [cx, cy], "radius": r,
            "bbox": [cx - r, cy - r, cx + r, cy + r], "rgb": rgb,
        })  # fmt: skip
    return {"image_size": size, "background": background, "objects": objects}


def relation(a: Obj, b: Obj) -> str:
    """Where ``a`` is relative to ``b``: above, below, left of or right of (dominant axis; y down)."""
    dx = b["centre"][0] - a["centre"][0]
    dy = b["centre"][1] - a["centre"][1]
    if abs(dy) >= abs(dx):
        return "above" if dy > 0 else "below"
    return "left of" if dx > 0 else "right of"


def region(obj: Obj, size: int) -> tuple[str, str] | None:
    """``(row, column)`` of the object's centre in the grid of thirds; None near a third line."""
    cell = []
    for v, names in zip(obj["centre"][::-1], (ROWS, COLUMNS)):
        t = (v + 0.5) / size
        for line in (1 / 3, 2 / 3):
            if abs(t - line) < REGION_MARGIN:
                return None
        cell.append(names[min(2, int(t * 3))])
    return cell[0], cell[1]


# ---------------------------------------------------------------------------------------------
# images


def _background_array(background: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """The background as a ``(size, size, 3)`` uint8 array."""
    kind = background["kind"]
    if kind == "gradient":
        lo, hi = (np.array(c, dtype=np.float64) for c in background["colours"])
        ramp = np.arange(size, dtype=np.float64) / (size - 1)
        y, x = ramp[:, None], ramp[None, :]
        t = {
            "vertical": y + 0 * x,
            "horizontal": x + 0 * y,
            "diagonal": (x + y) / 2,
            "antidiagonal": (1 - x + y) / 2,
        }[background["direction"]]
        pixels = lo + (hi - lo) * t[..., None]
    else:
        pixels = np.broadcast_to(np.array(background["colour"], dtype=np.float64), (size, size, 3))
        if kind == "noise":
            pixels = pixels + rng.normal(0.0, background["std"], size=(size, size, 3))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _draw_object(draw: ImageDraw.ImageDraw, obj: Obj, scale: int) -> None:
    """Draw one filled object on a canvas ``scale`` times the image size."""
    cx, cy = ((v + 0.5) * scale - 0.5 for v in obj["centre"])  # pixel centres map to pixel centres
    r = obj["radius"] * scale
    fill = tuple(obj["rgb"])
    shape = obj["shape"]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        h = 0.85 * r
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":  # equilateral, pointing up, circumcentre at the centre
        angles = np.deg2rad([-90, 30, 150])
        draw.polygon([(cx + r * np.cos(t), cy + r * np.sin(t)) for t in angles], fill=fill)
    elif shape == "star":  # five points, inner radius 45 % of the outer
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        draw.polygon([(cx + q * np.cos(t), cy + q * np.sin(t)) for q, t in zip(radii, angles)], fill=fill)
    elif shape == "cross":
        w = 0.35 * r
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, rng: np.random.Generator, scale: int = 2) -> Image.Image:
    """The scene as an RGB image: background, then objects drawn at ``scale`` x and box-filtered down."""
    size = scene["image_size"]
    canvas = Image.fromarray(_background_array(scene["background"], size, rng), "RGB")
    canvas = canvas.resize((size * scale, size * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for obj in scene["objects"]:
        _draw_object(draw, obj, scale)
    return canvas.reduce(scale)
