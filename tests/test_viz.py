import numpy as np
import pytest
from PIL import Image

from kseg import viz

# Entries of the PASCAL VOC devkit colormap (VOClabelcolormap.m) as documented for VOC2012.
VOC_KNOWN = {
    0: (0, 0, 0),
    1: (128, 0, 0),  # aeroplane
    2: (0, 128, 0),  # bicycle
    3: (128, 128, 0),  # bird
    4: (0, 0, 128),  # boat
    7: (128, 128, 128),  # car
    8: (64, 0, 0),  # cat
    12: (64, 0, 128),  # dog
    15: (192, 128, 128),  # person
    20: (0, 64, 128),  # tvmonitor
    255: (224, 224, 192),  # void / ignore border
}


def test_voc_palette_known_entries():
    assert viz.VOC_PALETTE.shape == (256, 3) and viz.VOC_PALETTE.dtype == np.uint8
    for label, color in VOC_KNOWN.items():
        assert tuple(viz.VOC_PALETTE[label]) == color, label
    assert len(viz.VOC_CLASSES) == 21 and viz.VOC_CLASSES[15] == "person"


def test_voc_palette_follows_bit_interleaving_rule():
    # Bit k of the label goes to channel k % 3 at bit position 7 - k // 3.
    for label in range(256):
        expected = [0, 0, 0]
        for k in range(8):
            if label >> k & 1:
                expected[k % 3] += 2 ** (7 - k // 3)
        assert viz.VOC_PALETTE[label].tolist() == expected


def test_palettes_are_distinct():
    assert len({tuple(c) for c in viz.VOC_PALETTE}) == 256
    assert viz.CAMVID_PALETTE.shape == (11, 3) and len(viz.CAMVID_CLASSES) == 11
    assert len({tuple(c) for c in viz.CAMVID_PALETTE}) == 11
    assert tuple(viz.IGNORE_COLOR) not in {tuple(c) for c in viz.CAMVID_PALETTE}
    assert tuple(viz.CAMVID_PALETTE[viz.CAMVID_CLASSES.index("Road")]) == (128, 64, 128)


@pytest.mark.parametrize("num_classes", [1, 21, 150, 300])
def test_palette_any_size(num_classes):
    colors = viz.palette(num_classes)
    assert colors.shape == (num_classes, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == num_classes
    np.testing.assert_array_equal(
        colors[: min(num_classes, 256)], viz.VOC_PALETTE[: min(num_classes, 256)]
    )
    with pytest.raises(ValueError, match="num_classes=0"):
        viz.palette(0)


def test_colorize_round_trips_through_palette():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 11, (2, 9, 13))
    mask[:, 0, :4] = 11  # CamVid void
    rgb = viz.colorize(mask, viz.CAMVID_PALETTE, ignore_label=11)
    assert rgb.shape == (2, 9, 13, 3) and rgb.dtype == np.uint8
    for label in range(11):
        assert (rgb[mask == label] == viz.CAMVID_PALETTE[label]).all()
    assert (rgb[mask == 11] == viz.IGNORE_COLOR).all()
    np.testing.assert_array_equal(viz.decolorize(rgb, viz.CAMVID_PALETTE, ignore_label=11), mask)


def test_colorize_default_palette_and_errors():
    rgb = viz.colorize(np.array([[0, 15], [255, 1]], dtype=np.uint8))
    assert rgb.tolist() == [[[0, 0, 0], [192, 128, 128]], [[224, 224, 192], [128, 0, 0]]]
    assert viz.colorize(np.array([[300]])).shape == (1, 1, 3)
    with pytest.raises(ValueError, match="Label value 11"):
        viz.colorize(np.array([[11]]), viz.CAMVID_PALETTE, ignore_label=255)
    with pytest.raises(ValueError, match="dtype=float"):
        viz.colorize(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"Pixel colour \(1, 2, 3\)"):
        viz.decolorize(np.array([[[1, 2, 3]]], np.uint8), viz.CAMVID_PALETTE)


def test_overlay_blends_with_alpha():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (8, 10, 3)).astype(np.uint8)
    mask = rng.integers(0, 5, (8, 10))
    np.testing.assert_array_equal(viz.overlay(image, mask, alpha=0.0), image)
    np.testing.assert_array_equal(viz.overlay(image, mask, alpha=1.0), viz.colorize(mask))
    half = viz.overlay(image, mask, alpha=0.25)
    expected = np.rint(0.75 * image + 0.25 * viz.VOC_PALETTE[mask].astype(float))
    np.testing.assert_array_equal(half, expected.astype(np.uint8))
    gray = viz.overlay(image[..., 0].astype(np.float32), mask, alpha=0.0)
    np.testing.assert_array_equal(gray, np.repeat(image[..., :1], 3, axis=-1))
    with pytest.raises(ValueError, match="sizes differ"):
        viz.overlay(image, mask[:, :5])
    with pytest.raises(ValueError, match="alpha=1.5"):
        viz.overlay(image, mask, alpha=1.5)


def test_save_overlay_writes_png(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (12, 20, 3)).astype(np.uint8)
    mask, truth = rng.integers(0, 3, (2, 12, 20))
    single = viz.save_overlay(tmp_path / "one.png", image, mask, alpha=0.4)
    with Image.open(single) as png:
        assert png.format == "PNG" and png.size == (20, 12)
        np.testing.assert_array_equal(np.asarray(png), viz.overlay(image, mask, alpha=0.4))
    pair = viz.save_overlay(tmp_path / "pair.png", image, mask, ground_truth=truth)
    with Image.open(pair) as png:
        assert png.size == (40, 12)
        np.testing.assert_array_equal(np.asarray(png)[:, 20:], viz.overlay(image, truth))


def test_draw_instances_tints_masks_outlines_boxes_and_keeps_the_rest():
    image = np.full((20, 30, 3), 200, np.uint8)
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 4:10, 4:12] = True  # the better detection, painted on top
    masks[1, 6:16, 8:20] = True
    boxes = np.array([[4, 4, 10, 12], [6, 8, 16, 20]], np.float32)
    drawn = viz.draw_instances(image, masks, boxes)
    colours = viz.palette(3)
    # Inside a mask and away from every outline: the 50 % blend with the instance colour.
    np.testing.assert_array_equal(drawn[6, 6], (image[6, 6] + colours[1].astype(int)) // 2)
    np.testing.assert_array_equal(drawn[12, 14], (image[12, 14] + colours[2].astype(int)) // 2)
    # Where the masks overlap, the first (best) one wins.
    np.testing.assert_array_equal(drawn[8, 9], (image[8, 9] + colours[1].astype(int)) // 2)
    # Box outlines: first row and column of the box, last pixel at max - 1.
    assert tuple(drawn[4, 7]) == tuple(colours[1]) and tuple(drawn[9, 7]) == tuple(colours[1])
    assert tuple(drawn[15, 19]) == tuple(colours[2])
    untouched = ~masks.any(0)
    untouched[4:10, 4:12] = untouched[6:16, 8:20] = False
    np.testing.assert_array_equal(drawn[untouched], image[untouched])


def test_draw_instances_writes_captions_inside_their_box_only():
    image = np.zeros((40, 60, 3), np.uint8)
    masks = np.zeros((1, 40, 60), bool)
    boxes = [[5, 5, 35, 55]]
    plain = viz.draw_instances(image, masks, boxes)
    captioned = viz.draw_instances(image, masks, boxes, ["dog 0.93"])
    changed = np.argwhere((plain != captioned).any(-1))
    assert len(changed) > 0
    assert changed[:, 0].min() >= 5 and changed[:, 1].min() >= 5 and changed[:, 0].max() < 20


def test_draw_instances_names_mismatched_inputs():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="masks shape"):
        viz.draw_instances(image, np.zeros((1, 4, 4), bool), [[0, 0, 2, 2]])
    with pytest.raises(ValueError, match="one caption per box"):
        viz.draw_instances(image, np.zeros((1, 8, 8), bool), [[0, 0, 2, 2]], ["a", "b"])


def _solid_block(picture, colour, side):
    """Whether `picture` holds a side x side square of exactly `colour` somewhere."""
    hit = (picture == np.asarray(colour, np.uint8)).all(-1).astype(np.int32)
    summed = np.pad(hit, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    windows = (
        summed[side:, side:]
        - summed[:-side, side:]
        - summed[side:, :-side]
        + summed[:-side, :-side]
    )
    return bool((windows == side * side).any())


# Distinct colours, none white, black or grey like the strip's background, text and outlines.
LEGEND_COLOURS = np.array(
    [[200, 30, 30], [30, 160, 40], [40, 60, 210], [230, 180, 20], [150, 40, 170], [20, 170, 170]],
    np.uint8,
)
LEGEND_NAMES = ["background", "road", "car", "Pedestrian", "sky", "tree"]


def test_legend_holds_a_swatch_of_each_class_colour_and_only_those():
    strip = viz.legend(LEGEND_NAMES, LEGEND_COLOURS, 200)
    assert strip.dtype == np.uint8 and strip.shape[1] == 200 and strip.ndim == 3
    for colour in LEGEND_COLOURS:
        assert _solid_block(strip, colour, 6), colour
    subset = viz.legend(LEGEND_NAMES, LEGEND_COLOURS, 200, classes=[1, 4])
    present = [_solid_block(subset, colour, 6) for colour in LEGEND_COLOURS]
    assert present == [False, True, False, False, True, False]
    with pytest.raises(ValueError, match="2 colours for 6 class names"):
        viz.legend(LEGEND_NAMES, LEGEND_COLOURS[:2], 200)


def test_legend_wraps_into_rows_and_widens_only_for_an_entry_wider_than_the_image():
    wide = viz.legend(LEGEND_NAMES, LEGEND_COLOURS, 600)
    narrow = viz.legend(LEGEND_NAMES, LEGEND_COLOURS, 90)
    assert narrow.shape[0] > wide.shape[0]  # more rows on a narrow image
    assert wide.shape[1] == 600 and narrow.shape[1] >= 90
    tiny = viz.legend(LEGEND_NAMES, LEGEND_COLOURS, 8)
    assert 8 < tiny.shape[1] < 200  # as wide as the widest entry, one entry per row


@pytest.mark.parametrize("size", [(24, 32), (64, 64), (240, 320)])
def test_draw_legend_keeps_the_image_and_grows_it_by_the_legend(size):
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    drawn = viz.draw_legend(image, LEGEND_NAMES, LEGEND_COLOURS)
    strip = viz.legend(LEGEND_NAMES, LEGEND_COLOURS, size[1])
    assert drawn.shape == (size[0] + strip.shape[0], max(size[1], strip.shape[1]), 3)
    np.testing.assert_array_equal(drawn[: size[0], : size[1]], image)
    np.testing.assert_array_equal(drawn[size[0] :, : strip.shape[1]], strip)
    # Any margin added beside a narrow image is the strip's white background.
    assert (drawn[: size[0], size[1] :] == 255).all()
    for colour in LEGEND_COLOURS:
        assert _solid_block(drawn[size[0] :], colour, 6)


def test_compose_panels_places_each_panel_in_its_cell_with_titles_and_legend():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    c = rng.integers(0, 256, (10, 30, 3), dtype=np.uint8)
    grid = viz.compose_panels([[a, b], [c, a]], gap=3)
    # Columns as wide as their widest panel (30, 24), rows as tall as their tallest (16, 16).
    assert grid.shape == (16 + 3 + 16, 30 + 3 + 24, 3)
    np.testing.assert_array_equal(grid[:16, :24], a)
    np.testing.assert_array_equal(grid[:16, 33:57], b)
    np.testing.assert_array_equal(grid[19:29, :30], c)
    np.testing.assert_array_equal(grid[19:35, 33:57], a)
    assert (grid[:16, 24:30] == 255).all() and (grid[16:19] == 255).all()

    titled = viz.compose_panels([[a, b], [c, a]], gap=3, titles=["a", "b"])
    top = titled.shape[0] - grid.shape[0]
    assert top > 0 and (titled[:top] < 128).any()  # dark title text above the grid
    np.testing.assert_array_equal(titled[top:], grid)
    # A title wider than its column widens the column instead of being cut.
    long_title = viz.compose_panels([[a, b]], gap=3, titles=["a", "a much longer title"])
    assert long_title.shape[1] > 30 + 3 + 24
    np.testing.assert_array_equal(long_title[-16:, :24], a)
    np.testing.assert_array_equal(long_title[-16:, 27:51], b)
    assert (long_title[: -16 - 3, 51:] < 128).any()  # the title's end, right of panel b

    with_legend = viz.compose_panels([[a, b]], LEGEND_NAMES[:3], LEGEND_COLOURS, gap=3)
    assert with_legend.shape[0] > 16
    np.testing.assert_array_equal(with_legend[:16, :24], a)
    assert all(_solid_block(with_legend[16:], colour, 6) for colour in LEGEND_COLOURS[:3])
    with pytest.raises(ValueError, match="palette"):
        viz.compose_panels([[a]], LEGEND_NAMES)


def test_save_overlay_with_class_names_adds_the_legend(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (20, 40, 3)).astype(np.uint8)
    mask = rng.integers(0, 3, (20, 40))
    path = viz.save_overlay(
        tmp_path / "legend.png",
        image,
        mask,
        palette=LEGEND_COLOURS[:3],
        class_names=["a", "b", "c"],
    )
    with Image.open(path) as png:
        drawn = np.asarray(png)
    np.testing.assert_array_equal(drawn[:20, :40], viz.overlay(image, mask, LEGEND_COLOURS[:3]))
    assert drawn.shape[0] > 20
    assert all(_solid_block(drawn[20:], colour, 6) for colour in LEGEND_COLOURS[:3])
