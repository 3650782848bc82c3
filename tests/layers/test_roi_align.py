"""RoIAlign, MultiLevelRoIAlign and assign_levels against torchvision and the FPN formula."""

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.layers.roi_align import MultiLevelRoIAlign, RoIAlign, assign_levels

SHARED_REFS = Path(__file__).resolve().parents[2] / ".." / "shared" / "refs"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "roi_align_torchvision.npz"
BOUNDARY_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "roi_align_boundary.npz"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def shared_vectors():
    """torchvision roi_align vectors of the team's shared reference folder."""
    path = SHARED_REFS / "roi_align.npz"
    if not path.is_file():
        pytest.skip(f"shared reference vectors {path} are absent")
    with np.load(path) as vectors:
        return dict(vectors)


@pytest.fixture(scope="module")
def torchvision_vectors():
    """torchvision roi_align on awkward boxes (tests/fixtures/make_roi_align_torchvision.py)."""
    with np.load(FIXTURE) as vectors:
        return dict(vectors)


def pool_rois(features, rois_xyxy, batch_index, **layer_kwargs):
    """Pools torchvision-style rois: every image gets every box, each box keeps its own image."""
    boxes_yxyx = np.asarray(rois_xyxy, np.float32)[:, [1, 0, 3, 2]]
    boxes = np.broadcast_to(boxes_yxyx, (features.shape[0], *boxes_yxyx.shape))
    pooled = np.asarray(RoIAlign(**layer_kwargs)([features, boxes]))
    return pooled[np.asarray(batch_index, int), np.arange(len(boxes_yxyx))]


@pytest.mark.parametrize("aligned", [1, 0])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 4])
def test_matches_shared_torchvision_vectors(shared_vectors, aligned, sampling_ratio):
    rois = shared_vectors["rois"]
    got = pool_rois(
        shared_vectors["x_nhwc"],
        rois[:, 1:],
        rois[:, 0],
        output_size=7,
        sampling_ratio=sampling_ratio,
        aligned=bool(aligned),
        spatial_scale=float(shared_vectors["spatial_scale"]),
    )
    expected = shared_vectors[f"out_aligned{aligned}_sr{sampling_ratio}_nhwc"]
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("aligned", [1, 0])
def test_matches_shared_vectors_with_rectangular_output(shared_vectors, aligned):
    rois = shared_vectors["rois_s1"]
    got = pool_rois(
        shared_vectors["x_nhwc"],
        rois[:, 1:],
        rois[:, 0],
        output_size=(4, 3),
        sampling_ratio=2,
        aligned=bool(aligned),
        spatial_scale=1.0,
    )
    expected = shared_vectors[f"out_s1_4x3_aligned{aligned}_sr2"].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def test_adaptive_sampling_ratio_is_refused_with_the_alternative_named():
    for layer_class in (RoIAlign, MultiLevelRoIAlign):
        with pytest.raises(ValueError, match=r"sampling_ratio=0.*sampling_ratio >= 1"):
            layer_class(sampling_ratio=0)


FIXTURE_OUTPUTS = [
    "out_7x7_aligned1_sr1",
    "out_7x7_aligned1_sr2",
    "out_7x7_aligned1_sr4",
    "out_7x7_aligned0_sr1",
    "out_7x7_aligned0_sr2",
    "out_7x7_aligned0_sr4",
    "out_14x14_aligned1_sr1",
    "out_14x14_aligned1_sr2",
    "out_14x14_aligned0_sr2",
]


@pytest.mark.parametrize("name", FIXTURE_OUTPUTS)
def test_matches_torchvision_on_border_empty_and_inverted_boxes(torchvision_vectors, name):
    size = int(name.split("_")[1].split("x")[0])
    aligned = name.split("aligned")[1][0] == "1"
    sampling_ratio = int(name.split("_sr")[1])
    vectors = torchvision_vectors
    got = pool_rois(
        vectors["features"],
        vectors["boxes_yxyx"][:, [1, 0, 3, 2]],
        vectors["batch_index"],
        output_size=size,
        sampling_ratio=sampling_ratio,
        aligned=aligned,
        spatial_scale=float(vectors["spatial_scale"]),
    )
    assert np.isfinite(got).all()
    errors = np.abs(got - vectors[name]).max(axis=(1, 2, 3))
    worst = int(errors.argmax())
    assert errors[worst] <= TOLERANCE, (
        f"box {worst} ({vectors['kinds'][worst]}) differs by {errors[worst]:.3g}"
    )


def test_matches_torchvision_when_samples_land_exactly_on_the_map_border():
    """torchvision keeps a sample at exactly -1, H or W (edge value) and drops one past it."""
    with np.load(BOUNDARY_FIXTURE) as vectors:
        vectors = dict(vectors)
    failures = []
    for k, config in enumerate(vectors["configs"]):
        height, width, aligned, scale, size, ratio = config
        features = vectors["features"][:, : int(height), : int(width)]
        box = vectors["boxes_yxyx"][k][None, None]
        got = RoIAlign(
            output_size=int(size),
            sampling_ratio=int(ratio),
            aligned=bool(aligned),
            spatial_scale=float(scale),
        )([features, box])
        error = float(np.abs(np.asarray(got)[0] - vectors[f"out_{k}"]).max())
        if error > TOLERANCE:
            failures.append((k, tuple(config), error))
    assert not failures, (
        f"{len(failures)} of {len(vectors['configs'])} cases differ: {failures[:5]}"
    )


def fpn_level(height, width):
    """Lin et al. 2017, Eq. 1, in float64, clamped to P2..P5."""
    area = max(height, 0.0) * max(width, 0.0)
    if area == 0:
        return 2
    return int(min(max(math.floor(4 + math.log2(math.sqrt(area) / 224)), 2), 5))


def test_assign_levels_follows_the_fpn_formula():
    sides_and_levels = [
        ((224, 224), 4),
        ((112, 112), 3),
        ((448, 448), 5),
        ((223.9, 224), 3),
        ((111, 112), 2),
        ((100, 502), 4),
        ((4, 4), 2),
        ((2000, 3000), 5),
        ((0, 50), 2),
    ]
    boxes, expected = [], []
    for (height, width), level in sides_and_levels:
        assert fpn_level(height, width) == level
        boxes.append([10.0, 20.0, 10.0 + height, 20.0 + width])
        expected.append(level)
    boxes.append([50.0, 60.0, 10.0, 20.0])  # inverted: no area
    expected.append(2)
    levels = assign_levels(np.asarray([boxes], np.float32))
    assert levels.dtype == tf.int32
    np.testing.assert_array_equal(np.asarray(levels), [expected])

    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 300, (200, 2))
    sides = np.exp(rng.uniform(np.log(1), np.log(1500), (200, 2)))
    random_boxes = np.concatenate([corners, corners + sides], 1).astype(np.float32)
    spans = random_boxes[:, 2:].astype(np.float64) - random_boxes[:, :2]
    expected = [fpn_level(h, w) for h, w in spans]
    np.testing.assert_array_equal(np.asarray(assign_levels(random_boxes)), expected)


def make_pyramid(rng, image_size=256, channels=4, batch=2):
    return [
        rng.standard_normal(
            (batch, image_size // 2**level, image_size // 2**level, channels)
        ).astype(np.float32)
        for level in range(2, 6)
    ]


def pyramid_boxes():
    # Sides 20..600 pixels cover P2..P5; boxes may leave the 256-pixel image.
    centres_and_sides = [
        (40, 50, 20, 30),
        (128, 128, 90, 60),
        (100, 140, 150, 120),
        (128, 100, 240, 200),
        (120, 130, 320, 280),
        (128, 128, 600, 500),
        (10, 240, 60, 70),
        (200, 30, 160, 170),
    ]
    boxes = [[cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2] for cy, cx, h, w in centres_and_sides]
    boxes += [[30.0, 40.0, 30.0, 40.0], [90.0, 100.0, 60.0, 20.0]]  # empty and inverted
    boxes = np.asarray(boxes, np.float32)
    return np.stack([boxes, boxes[::-1] * 0.9 + 7.0])


def test_multi_level_equals_roi_align_on_the_assigned_level():
    rng = np.random.default_rng(1)
    pyramid = make_pyramid(rng)
    boxes = pyramid_boxes()
    levels = np.asarray(assign_levels(boxes))
    assert set(levels.ravel()) == {2, 3, 4, 5}
    got = np.asarray(MultiLevelRoIAlign(output_size=7, sampling_ratio=2)([*pyramid, boxes]))
    per_level = {
        level: np.asarray(
            RoIAlign(7, 2, aligned=True, spatial_scale=2.0**-level)([pyramid[level - 2], boxes])
        )
        for level in range(2, 6)
    }
    expected = np.empty_like(got)
    for b, n in np.ndindex(levels.shape):
        expected[b, n] = per_level[levels[b, n]][b, n]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_multi_level_in_a_graph_with_unknown_sizes_and_no_boxes():
    layer = MultiLevelRoIAlign(output_size=(3, 5), sampling_ratio=1)
    signature = [tf.TensorSpec((None, None, None, 4))] * 4 + [tf.TensorSpec((None, None, 4))]

    @tf.function(input_signature=signature)
    def pool(p2, p3, p4, p5, boxes):
        return layer([p2, p3, p4, p5, boxes])

    rng = np.random.default_rng(2)
    pyramid = make_pyramid(rng, image_size=128)
    boxes = pyramid_boxes()[:, :6] * 0.5
    eager = np.asarray(layer([*pyramid, boxes]))
    # Grappler may reorder the float32 arithmetic of the traced graph.
    np.testing.assert_allclose(np.asarray(pool(*pyramid, boxes)), eager, atol=TOLERANCE)
    assert eager.shape == (2, 6, 3, 5, 4)
    empty = pool(*pyramid, np.zeros((2, 0, 4), np.float32))
    assert tuple(empty.shape) == (2, 0, 3, 5, 4)


def test_gradients_reach_the_features_and_are_finite():
    rng = np.random.default_rng(4)
    features = tf.constant(rng.standard_normal((2, 12, 14, 3)).astype(np.float32))
    inside = np.asarray([[[1.0, 2.0, 9.0, 11.5], [3.3, 0.5, 6.1, 4.0]]] * 2, np.float32)
    awkward = np.asarray(
        [[[-3.0, -2.0, 30.0, 40.0], [5.0, 5.0, 5.0, 5.0], [8.0, 9.0, 2.0, 1.0]]] * 2
    )
    layer = RoIAlign(output_size=5, sampling_ratio=2, aligned=True)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(features)
        inside_sum = tf.reduce_sum(layer([features, inside]))
        awkward_sum = tf.reduce_sum(layer([features, awkward.astype(np.float32)]))
    inside_grad = tape.gradient(inside_sum, features).numpy()
    awkward_grad = tape.gradient(awkward_sum, features).numpy()
    # Each output is a convex combination of pixels when every sample lies inside the map, so
    # the gradient of the output sum has total (boxes x bins) per image and channel.
    np.testing.assert_allclose(inside_grad.sum(axis=(1, 2)), np.full((2, 3), 2 * 25.0), rtol=1e-5)
    assert np.isfinite(awkward_grad).all() and np.abs(awkward_grad).sum() > 0

    pyramid = [tf.constant(p) for p in make_pyramid(rng, image_size=128, channels=2)]
    with tf.GradientTape() as tape:
        tape.watch(pyramid)
        total = tf.reduce_sum(MultiLevelRoIAlign()([*pyramid, pyramid_boxes() * 0.5]) ** 2)
    grads = tape.gradient(total, pyramid)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    assert sum(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads) >= 3


def test_mixed_bfloat16_keeps_box_coordinates_in_float32():
    rng = np.random.default_rng(5)
    # A ramp of slope 1 per feature pixel along x: rounding the coordinates 281 and 313 to
    # bfloat16 (multiples of 2 there) would move the pooled values by about 0.5, while the
    # bfloat16 rounding of the outputs (below 16) stays under 0.04.
    ramp = np.arange(160, dtype=np.float32) - 140.0
    ramp = np.tile(ramp[None, None, :, None], (1, 8, 1, 2))
    boxes = np.asarray([[[1.0, 281.0, 13.0, 313.0]]], np.float32)
    float32_out = np.asarray(RoIAlign(4, 2, spatial_scale=0.5)([ramp, boxes]))
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = RoIAlign(4, 2, spatial_scale=0.5)
    mixed = layer([tf.cast(ramp, tf.bfloat16), tf.constant(boxes)])
    assert mixed.dtype == tf.bfloat16
    np.testing.assert_allclose(np.asarray(tf.cast(mixed, tf.float32)), float32_out, atol=0.04)
    pyramid = [tf.cast(p, tf.bfloat16) for p in make_pyramid(rng, image_size=128, channels=2)]
    multi = MultiLevelRoIAlign(output_size=4)([*pyramid, pyramid_boxes() * 0.5])
    assert multi.dtype == tf.bfloat16 and np.isfinite(np.asarray(tf.cast(multi, tf.float32))).all()


def test_keras_file_round_trip_in_safe_mode_with_unknown_sizes(tmp_path):
    pyramid_inputs = [keras.Input((None, None, 3), name=f"p{level}") for level in range(2, 6)]
    boxes_input = keras.Input((None, 4), name="boxes")
    single = RoIAlign(output_size=(4, 6), sampling_ratio=1, aligned=False, spatial_scale=0.25)(
        [pyramid_inputs[0], boxes_input]
    )
    multi = MultiLevelRoIAlign(output_size=5, sampling_ratio=2, canonical_size=112)(
        [*pyramid_inputs, boxes_input]
    )
    assert single.shape == (None, None, 4, 6, 3) and multi.shape == (None, None, 5, 5, 3)
    model = keras.Model([*pyramid_inputs, boxes_input], [single, multi])
    path = tmp_path / "roi_align.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    rng = np.random.default_rng(6)
    for image_size, num_boxes in ((128, 7), (192, 3)):
        pyramid = make_pyramid(rng, image_size=image_size, channels=3, batch=1)
        boxes = pyramid_boxes()[:1, :num_boxes] * (image_size / 256)
        for before, after in zip(model([*pyramid, boxes]), reloaded([*pyramid, boxes])):
            assert before.shape[1] == num_boxes
            np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    for layer in model.layers[len(pyramid_inputs) + 1 :]:
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config


def test_bad_arguments_and_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="output_size"):
        RoIAlign(output_size=0)
    with pytest.raises(ValueError, match="spatial_scale"):
        RoIAlign(spatial_scale=-1)
    with pytest.raises(ValueError, match="min_level"):
        MultiLevelRoIAlign(min_level=5, max_level=2)
    features = np.zeros((1, 8, 8, 2), np.float32)
    with pytest.raises(ValueError, match=r"boxes must have shape \(batch, num_boxes, 4\)"):
        RoIAlign()([features, np.zeros((1, 3, 5), np.float32)])
    with pytest.raises(ValueError, match="two inputs"):
        RoIAlign()([features])
    with pytest.raises(ValueError, match="expects 5 inputs"):
        MultiLevelRoIAlign()([features, features, np.zeros((1, 3, 4), np.float32)])


# Written by tests/fixtures/make_torchvision_detection_parts.py with torchvision 0.29.1.
PARTS = Path(__file__).resolve().parents[1] / "fixtures" / "torchvision_detection_parts.npz"


def test_level_epsilon_gives_torchvisions_level_mapper():
    parts = np.load(PARTS)
    boxes = parts["level_boxes"][:, [1, 0, 3, 2]]
    levels = assign_levels(boxes, epsilon=1e-6).numpy()
    np.testing.assert_array_equal(levels, parts["levels"])
    # The exact rule differs only just under a level's boundary (223.99997 and 447.9999 px).
    exact = assign_levels(boxes).numpy()
    assert np.flatnonzero(exact != levels).tolist() == [3, 5]


def test_multi_level_without_alignment_equals_roi_align_without_alignment():
    rng = np.random.default_rng(1)
    pyramid = make_pyramid(rng)
    boxes = pyramid_boxes()
    levels = np.asarray(assign_levels(boxes, epsilon=1e-6))
    layer = MultiLevelRoIAlign(output_size=7, sampling_ratio=2, aligned=False, level_epsilon=1e-6)
    got = np.asarray(layer([*pyramid, boxes]))
    per_level = {
        level: np.asarray(
            RoIAlign(7, 2, aligned=False, spatial_scale=2.0**-level)([pyramid[level - 2], boxes])
        )
        for level in range(2, 6)
    }
    expected = np.empty_like(got)
    for b, n in np.ndindex(levels.shape):
        expected[b, n] = per_level[levels[b, n]][b, n]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    config = layer.get_config()
    assert config["aligned"] is False and config["level_epsilon"] == 1e-6
    with pytest.raises(TypeError, match="aligned must be True or False"):
        MultiLevelRoIAlign(aligned=0)
