"""captioning.captioner.visualize: the attention grid's shape, attention_overlay and caption_grid, checked on
the PNG files they write (sizes, and where the overlay's colour goes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.captioner.visualize import _first_reference, caption_grid
from seq2seq.training.plots import attention_grid_shape, attention_overlay

PANEL_PX = 220  # visualize.PANEL_INCHES (2.2) at the 100 dpi the PNGs are written with


def png(path: Path) -> np.ndarray:
    """The PNG at path as (H, W, 3) ints, after checking it is a PNG."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB")).astype(int)


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.new("RGB", size, colour)


def one_hot(hw: int, cell: int, rows: int = 1) -> torch.Tensor:
    attention = torch.zeros(rows, hw)
    attention[:, cell] = 1.0
    return attention


# -- attention_grid_shape ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hw", "shape"), [(49, (7, 7)), (16, (4, 4)), (4, (2, 2)), (1, (1, 1)), (196, (14, 14))]
)
def test_grid_shape_of_a_square(hw, shape):
    assert attention_grid_shape(hw) == shape


@pytest.mark.parametrize("hw", [50, 48, 2, 0, -4])
def test_grid_shape_refuses_a_non_square(hw):
    with pytest.raises(ValueError):
        attention_grid_shape(hw)


# -- attention_overlay ---------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "hot_corner"), [(0, "top-left"), (15, "bottom-right")])
def test_overlay_is_warm_where_the_word_looks(tmp_path, cell, hot_corner):
    """All of the word's weight on one cell of a 4 x 4 grid over a grey image: on the jet colour map
    at alpha 0.5 that corner of the word's panel is red, the opposite corner blue. The word's panel
    is found as the pixels with colour (red != blue): the grey image panel, the white background
    and the black title have none."""
    out = attention_overlay(solid((128, 128, 128)), ["cell"], one_hot(16, cell), tmp_path / "overlay.png")
    assert out == tmp_path / "overlay.png"
    pixels = png(out)
    warmth = pixels[..., 0] - pixels[..., 2]  # red - blue
    ys, xs = np.nonzero(np.abs(warmth) > 30)
    assert len(ys) > 10_000, "no coloured panel found"
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    side = min(bottom - top, right - left)
    assert side > 100 and abs((bottom - top) - (right - left)) <= 3  # a square panel, as the image
    k = side // 8  # a corner patch: well inside the hot cell (a quarter of the side)
    top_left = warmth[top : top + k, left : left + k].mean()
    bottom_right = warmth[bottom - k : bottom, right - k : right].mean()
    hot, cold = (top_left, bottom_right) if hot_corner == "top-left" else (bottom_right, top_left)
    assert hot > 40 and cold < -40, (top_left, bottom_right)
    # the image panel (left of the word's) is the untouched grey image
    assert (pixels[top + side // 2, : left - 10] == 128).all(-1).sum() > 100


def test_overlay_has_a_panel_per_word_and_keeps_the_aspect(tmp_path):
    words = ["a", "red", "circle"]
    square = png(
        attention_overlay(solid((10, 200, 10)), words, torch.rand(4, 16).softmax(-1), tmp_path / "s.png")
    )
    # 1 + 3 panels in one row of PANEL_PX-wide panels, each row 2.2 + 0.35 (title) inches high
    assert square.shape[:2] == (255, 4 * PANEL_PX)
    wide = png(
        attention_overlay(solid((10, 200, 10), (128, 64)), words, torch.rand(3, 4), tmp_path / "w.png")
    )
    assert wide.shape[:2] == (145, 4 * PANEL_PX)  # the panels are 2.2 x 1.1 inches
    many = [f"w{i}" for i in range(7)]  # 8 panels: two rows of at most 5
    assert png(attention_overlay(solid((0, 0, 0)), many, torch.rand(8, 49), tmp_path / "m.png")).shape[
        :2
    ] == (
        2 * 255,
        5 * PANEL_PX,
    )


def test_overlay_writes_into_a_new_folder_from_a_path_and_with_no_words(tmp_path):
    image_file = tmp_path / "image.png"
    solid((0, 0, 255), (40, 30)).save(image_file)
    out = attention_overlay(image_file, [], torch.zeros(0, 4), tmp_path / "new" / "folder" / "empty.png")
    assert out.is_file() and png(out).shape[:2] == (int(30 * 2.2 / 40 * 100 + 35 + 0.5), PANEL_PX)
    # a grid given explicitly: 2 x 8 over 16 positions
    assert attention_overlay(image_file, ["x"], one_hot(16, 3), tmp_path / "g.png", grid=(2, 8)).is_file()


def test_overlay_refuses_attention_that_does_not_fit(tmp_path):
    image = solid((128, 128, 128))
    with pytest.raises(ValueError, match="rows"):  # fewer rows than words
        attention_overlay(image, ["a", "b", "c"], torch.rand(2, 16), tmp_path / "x.png")
    with pytest.raises(ValueError, match="square"):  # 50 positions: no square grid
        attention_overlay(image, ["a"], torch.rand(1, 50), tmp_path / "x.png")
    with pytest.raises(ValueError, match="grid"):
        attention_overlay(image, ["a"], torch.rand(1, 16), tmp_path / "x.png", grid=(3, 5))
    with pytest.raises(ValueError, match=r"\(T, HW\)"):
        attention_overlay(image, ["a"], torch.rand(16), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    # more rows than words (an <eos> step) are ignored
    assert attention_overlay(image, ["a"], torch.rand(2, 16), tmp_path / "ok.png").is_file()


# -- caption_grid ----------------------------------------------------------------------------------


def test_caption_grid_grows_with_the_samples(tmp_path):
    red = solid((255, 0, 0))
    sample = (red, "a red square", "a red square | a square that is red")
    one = png(caption_grid([sample], tmp_path / "1.png"))
    three = png(caption_grid([sample] * 3, tmp_path / "3.png"))
    five = png(caption_grid([sample] * 5, tmp_path / "5.png"))  # columns=4: two rows
    assert one.shape[1] == PANEL_PX and three.shape[1] == 3 * PANEL_PX and five.shape[1] == 4 * PANEL_PX
    assert one.shape[0] == three.shape[0] < five.shape[0]
    titled = png(caption_grid([sample] * 3, tmp_path / "t.png", title="val epoch 3"))
    assert titled.shape[1] == three.shape[1] and titled.shape[0] > three.shape[0]
    # the image is drawn: plenty of pure red
    assert (three == (255, 0, 0)).all(-1).sum() > 3 * 10_000


def test_caption_grid_draws_an_unreadable_image_as_a_grey_panel(tmp_path):
    red = solid((255, 0, 0))
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    good = png(caption_grid([(red, "hyp", "ref"), (red, "hyp", "ref")], tmp_path / "good.png"))
    samples = [(red, "hyp", "ref"), (tmp_path / "missing.png", "hyp", ["ref"]), (text, "", [])]
    bad = png(caption_grid(samples, tmp_path / "bad.png"))
    grey = (bad == (200, 200, 200)).all(-1).sum()
    assert (good == (200, 200, 200)).all(-1).sum() < 1000
    assert grey > 2 * 20_000  # two grey panels of about 220 x 220 pixels
    assert (bad == (255, 0, 0)).all(-1).sum() > 10_000  # and the good image still drawn


def test_caption_grid_takes_every_reference_form(tmp_path):
    red = solid((255, 0, 0))
    image_file = tmp_path / "red.png"
    red.save(image_file)
    samples = [
        (image_file, "a red square", "a red square | a square"),
        (str(image_file), "a red square", ["a red square", "a square"]),
        (red, "a red square", [["a", "red", "square"], ["a", "square"]]),
        (red, "", None),
    ]
    assert png(caption_grid(samples, tmp_path / "forms.png")).shape[1] == 4 * PANEL_PX
    alone = [png(caption_grid([s], tmp_path / f"alone{i}.png")) for i, s in enumerate(samples[:3])]
    assert all((a == alone[0]).all() for a in alone[1:])  # one first reference, whatever its form
    other = png(caption_grid([(red, "a red square", "a square | a red square")], tmp_path / "other.png"))
    assert other.shape == alone[0].shape and not (other == alone[0]).all()  # and it is drawn


def test_first_reference():
    assert _first_reference("a red square | a square") == "a red square"
    assert _first_reference(["a red square", "a square"]) == "a red square"
    assert _first_reference([["a", "red", "square"], ["a"]]) == "a red square"
    assert _first_reference(None) == _first_reference([]) == ""


def test_caption_grid_refuses_no_samples(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        caption_grid([], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
