"""Draws the documentation's figures with kseg itself and writes them as PNGs next to this file.

Every number in a figure comes from a kseg function or layer (receptive fields, pooling indices,
bilinear kernels, adaptive pooling, the dense CRF, sliding-window geometry, RoIAlign sample
points, FPN levels, anchors and their matching); matplotlib only draws them. The one exception
is RoIPool's quantised bins, which kseg does not implement: they follow Fast R-CNN's rounding
rule in a few lines of numpy, for comparison. Runs in well under a minute on a CPU:

    python docs/figures/make_figures.py
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib

matplotlib.use("Agg")

import keras
import matplotlib.pyplot as plt
import numpy as np

import kseg
import kseg.weak
from kseg.detection.anchors import generate_anchors
from kseg.detection.postprocess import paste_masks
from kseg.detection.targets import roi_targets, rpn_targets
from kseg.inference.sliding_window import window_starts, window_weights
from kseg.layers.pyramid_pooling import adaptive_average_pooling_2d
from kseg.layers.roi_align import RoIAlign, assign_levels

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CRF_FIXTURE = REPO / "tests" / "fixtures" / "dense_crf_camvid.npz"
DPI = 90


def _save(fig, out, name):
    path = out / name
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pil_kwargs={"optimize": True})
    plt.close(fig)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB)")


def _footprint(layers, size):
    """How many paths join each input pixel to the centre output of a stack of convolutions.

    Every kernel is set to ones, so pushing an impulse through the stack counts the paths; the
    non-zero pixels are the receptive field, and their pattern shows which pixels it skips.
    """
    impulse = np.zeros((1, size, size, 1), "float32")
    impulse[0, size // 2, size // 2, 0] = 1.0
    x = impulse
    for layer in layers:
        if not layer.built:
            layer.build((1, size, size, 1))
        layer.set_weights([np.ones_like(w) for w in layer.get_weights()])
        x = layer(x)
    # The stack is symmetric, so its response to an impulse is its footprint.
    return np.asarray(x)[0, :, :, 0]


def _conv(dilation):
    return keras.layers.Conv2D(1, 3, padding="same", dilation_rate=dilation, use_bias=False)


def dilated_receptive_field(out):
    depths = np.arange(1, 8)
    plain, dilated = [], []
    for depth in depths:
        plain.append(kseg.utils.receptive_field([_conv(1) for _ in range(depth)]))
        dilated.append(kseg.utils.receptive_field([_conv(2**i) for i in range(depth)]))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    axes[0].plot(depths, plain, "o-", label="plain 3×3 (dilation 1)")
    axes[0].plot(depths, dilated, "s-", label="dilation 1, 2, 4, … (Yu & Koltun)")
    axes[0].set_xlabel("number of 3×3 layers")
    axes[0].set_ylabel("receptive field (pixels)")
    axes[0].set_yscale("log", base=2)
    axes[0].legend(fontsize=8)
    axes[0].set_title("kseg.utils.receptive_field")
    for ax, dilations, title in (
        (axes[1], (1, 1, 1), "three plain 3×3 layers"),
        (axes[2], (1, 2, 4), "dilations 1, 2, 4"),
    ):
        footprint = _footprint([_conv(d) for d in dilations], 19)
        ax.imshow(footprint, cmap="magma")
        field = kseg.utils.receptive_field([_conv(d) for d in dilations])
        ax.set_title(f"{title}: {field}×{field} field", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, out, "dilated_receptive_field.png")


def segnet_unpooling(out):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 10, (1, 6, 6, 1)).astype("float32")
    pooled, argmax = kseg.layers.MaxPoolingWithArgmax2D(pool_size=2, strides=2)(x)
    restored = kseg.layers.MaxUnpooling2D()([pooled, argmax, x])
    panels = (
        (x, "encoder feature (6×6)"),
        (pooled, "2×2 max pooling (3×3)\nindices kept"),
        (restored, "MaxUnpooling2D: maxima back\nin place, zeros elsewhere"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    for ax, (tensor, title) in zip(axes, panels):
        values = np.asarray(tensor)[0, :, :, 0]
        ax.imshow(values, cmap="Blues", vmin=0, vmax=12)
        for (i, j), value in np.ndenumerate(values):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=9)
        size = values.shape[0]
        ax.set_xticks(np.arange(-0.5, size, 2 if size == 6 else 1), minor=False)
        ax.set_yticks(np.arange(-0.5, size, 2 if size == 6 else 1), minor=False)
        ax.grid(color="black", linewidth=1.2)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.tick_params(length=0)
        ax.set_title(title, fontsize=9)
    _save(fig, out, "segnet_unpooling.png")


def fcn_bilinear_kernel(out):
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    for ax, factor in zip(axes[:3], (2, 8, 32)):
        size = 2 * factor - factor % 2
        kernel = np.asarray(kseg.layers.BilinearUpsamplingKernel()((size, size, 1, 1)))
        ax.imshow(kernel[:, :, 0, 0], cmap="viridis")
        ax.set_title(f"×{factor}: {size}×{size} kernel", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    scores = np.zeros((1, 4, 4, 1), "float32")
    scores[0, 1, 1, 0] = 1.0
    scores[0, 2, 3, 0] = 0.5
    upsampled = kseg.layers.BilinearConvTranspose2D(factor=8, channels=1)(scores)
    axes[3].imshow(np.asarray(upsampled)[0, :, :, 0], cmap="viridis")
    axes[3].set_title("BilinearConvTranspose2D(8) on 4×4 scores", fontsize=9)
    axes[3].set_xticks([])
    axes[3].set_yticks([])
    _save(fig, out, "fcn_bilinear_kernel.png")


def unet_weight_map(out):
    sample = kseg.data.render_shapes_sample(5, split="val", image_size=128, max_objects=4)
    weights = kseg.data.unet_weight_map(sample.instance_mask, w0=10.0, sigma=5.0)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    axes[0].imshow(sample.image)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(sample.instance_mask, cmap="tab10", interpolation="nearest")
    axes[1].set_title("instances", fontsize=9)
    shown = axes[2].imshow(weights, cmap="inferno")
    axes[2].set_title("unet_weight_map (w0=10, σ=5)", fontsize=9)
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, out, "unet_weight_map.png")


def refinenet_chained_pooling(out):
    image = np.asarray(kseg.data.render_shapes_sample(2, split="val", image_size=96).image)
    gray = image.astype("float32").mean(-1, keepdims=True)[None] / 255.0
    x = gray
    fig, axes = plt.subplots(1, 5, figsize=(12, 2.9))
    axes[0].imshow(image)
    axes[0].set_title("input", fontsize=9)
    layers = []
    for block in range(1, 5):
        pool = keras.layers.MaxPooling2D(5, strides=1, padding="same")
        x = pool(x)
        layers += [pool, keras.layers.Conv2D(1, 3, padding="same")]
        field = kseg.utils.receptive_field(layers)
        axes[block].imshow(np.asarray(x)[0, :, :, 0], cmap="gray", vmin=0, vmax=1)
        axes[block].set_title(
            f"{block} × 5×5 max pool (stride 1)\nfield with the convs: {field}×{field}", fontsize=9
        )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, out, "refinenet_chained_pooling.png")


def _crf_fixture():
    if not CRF_FIXTURE.exists():
        raise SystemExit(f"fixture not found: {CRF_FIXTURE}")
    return np.load(CRF_FIXTURE)


def pspnet_bins(out):
    image = _crf_fixture()["image_uint8"][0].astype("float32")
    fig, axes = plt.subplots(1, 5, figsize=(13, 2.4))
    axes[0].imshow(image.astype("uint8"))
    axes[0].set_title(f"CamVid val image ({image.shape[0]}×{image.shape[1]})", fontsize=9)
    for ax, bins in zip(axes[1:], (1, 2, 3, 6)):
        pooled = np.asarray(adaptive_average_pooling_2d(image[None], bins))[0]
        ax.imshow(np.clip(pooled, 0, 255).astype("uint8"), interpolation="nearest")
        ax.set_title(f"{bins}×{bins} bins", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, out, "pspnet_bins.png")


def deeplab_aspp_taps(out):
    # DeepLab v3 Sec. 3.3: on a 65x65 map (513 px at output stride 8) a 3x3 kernel of rate r
    # keeps fewer of its nine taps inside the map as r grows.
    size = 65
    ones = np.ones((1, size, size, 1), "float32")
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.1))
    for ax, rate in zip(axes, (6, 12, 24, 48)):
        layer = _conv(rate)
        layer.build(ones.shape)
        layer.set_weights([np.ones_like(w) for w in layer.get_weights()])
        valid = np.asarray(layer(ones))[0, :, :, 0]
        shown = ax.imshow(valid, cmap="viridis", vmin=1, vmax=9)
        ax.set_title(f"rate {rate}: {np.mean(valid == 9):.0%} see all 9 taps", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes, fraction=0.015, label="taps inside the map")
    _save(fig, out, "deeplab_aspp_taps.png")


def dense_crf(out):
    data = _crf_fixture()
    index = 0
    image = data["image_uint8"][index]
    truth = data["labels_true"][index].astype("int32")
    logits = data["scores_uint8"][index].astype("float32") / 8.0
    settings = dict(zip([str(s) for s in data["settings_order"]], data["deeplab_settings"]))
    q = kseg.inference.dense_crf(image, logits, from_logits=True, iterations=10, **settings)
    refined = np.argmax(np.asarray(q), -1)
    unary = np.argmax(logits, -1)
    valid = truth < 11

    def accuracy(labels):
        return np.mean(labels[valid] == truth[valid])

    palette = kseg.data.CAMVID_PALETTE
    truth_shown = np.where(valid, truth, 255)
    panels = (
        (image, "image (60×80)"),
        (kseg.viz.colorize(truth_shown, palette), "ground truth"),
        (kseg.viz.colorize(unary, palette), f"unary argmax: {accuracy(unary):.0%} right"),
        (kseg.viz.colorize(refined, palette), f"dense_crf: {accuracy(refined):.0%} right"),
    )
    fig, axes = plt.subplots(1, 4, figsize=(12, 2.6))
    for ax, (picture, title) in zip(axes, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, out, "dense_crf.png")


def inference_windows(out):
    height, width, window, overlap = 360, 480, 256, 1 / 3
    rows = window_starts(height, window, overlap)
    cols = window_starts(width, window, overlap)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].set_xlim(0, width)
    axes[0].set_ylim(height, 0)
    colours = plt.cm.tab10.colors
    for k, (top, left) in enumerate((r, c) for r in rows for c in cols):
        axes[0].add_patch(
            plt.Rectangle(
                (left, top), window, window, lw=2, ec=colours[k % 10], fc=(*colours[k % 10], 0.08)
            )
        )
    axes[0].set_aspect("equal")
    axes[0].set_title(f"window_starts: {len(rows)}×{len(cols)} windows of {window} px", fontsize=9)
    for ax, weighting in zip(axes[1:], ("uniform", "gaussian")):
        weights = window_weights((window, window), weighting)
        total = np.zeros((height, width), "float32")
        for top in rows:
            for left in cols:
                total[top : top + window, left : left + window] += weights
        shown = ax.imshow(total, cmap="cividis")
        fig.colorbar(shown, ax=ax, fraction=0.035)
        ax.set_title(f"summed {weighting} window weights", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, out, "inference_windows.png")


# The Mask R-CNN page's example box, in feature-map pixels (spatial_scale 1): deliberately not
# on the cell grid, so RoIPool's rounding shows.
ROI_BOX_YXYX = (1.3, 1.6, 6.1, 8.4)
ROI_BINS = 3
MASK_RCNN_SHAPES_ANCHOR_SIZES = (16, 32, 64, 128, 256)


def _roi_align_sample_points(box, bins, sampling_ratio, height, width):
    """Where RoIAlign samples, read back from kseg's RoIAlign itself.

    The feature map holds each pixel centre's own continuous coordinates (y + 0.5, x + 0.5),
    a linear function, so bilinear interpolation returns the sample point's position exactly.
    With one sample per bin and `bins * sampling_ratio` bins, the layer samples the same points
    as `bins` bins of `sampling_ratio x sampling_ratio` samples.
    """
    rows, cols = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    coordinates = np.stack([rows, cols], -1)[None].astype("float32")
    layer = RoIAlign(output_size=bins * sampling_ratio, sampling_ratio=1, aligned=True)
    points = np.asarray(layer([coordinates, np.asarray([[box]], "float32")]))[0, 0]
    return points[..., 0].ravel(), points[..., 1].ravel()


def _roi_pool_cells(box, bins):
    """RoIPool's bins (Fast R-CNN, Girshick 2015) for a box in feature-map pixels.

    Two quantisations: the box edges are rounded to the nearest cell boundary, then bin k of n
    over a span of L cells takes cells floor(k * L / n) up to ceil((k + 1) * L / n). Returns
    (y0, y1, x0, x1) per bin in cells, ends excluded.
    """
    y1, x1, y2, x2 = (int(np.floor(v + 0.5)) for v in box)
    height, width = max(y2 - y1, 1), max(x2 - x1, 1)
    cells = []
    for i in range(bins):
        for j in range(bins):
            cells.append(
                (
                    y1 + int(np.floor(i * height / bins)),
                    y1 + int(np.ceil((i + 1) * height / bins)),
                    x1 + int(np.floor(j * width / bins)),
                    x1 + int(np.ceil((j + 1) * width / bins)),
                )
            )
    return cells


def _feature_grid(ax, height, width):
    for y in range(height + 1):
        ax.axhline(y, color="0.8", lw=0.7, zorder=0)
    for x in range(width + 1):
        ax.axvline(x, color="0.8", lw=0.7, zorder=0)
    centres_y, centres_x = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5)
    ax.plot(centres_x.ravel(), centres_y.ravel(), ".", color="0.7", ms=3, zorder=1)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _roi_pool_max(features, box, bins):
    values = []
    for y0, y1, x0, x1 in _roi_pool_cells(box, bins):
        values.append(features[y0:y1, x0:x1].max())
    return np.asarray(values)


def roi_align_sampling(out):
    height, width = 8, 10
    y1, x1, y2, x2 = ROI_BOX_YXYX
    sample_y, sample_x = _roi_align_sample_points(ROI_BOX_YXYX, ROI_BINS, 2, height, width)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    outline = {"fill": False, "lw": 2, "ec": "tab:red", "zorder": 3}
    ax = axes[0]
    _feature_grid(ax, height, width)
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, **outline))
    for k in range(1, ROI_BINS):
        ax.plot([x1 + k * (x2 - x1) / ROI_BINS] * 2, [y1, y2], color="tab:red", lw=0.8, ls="--")
        ax.plot([x1, x2], [y1 + k * (y2 - y1) / ROI_BINS] * 2, color="tab:red", lw=0.8, ls="--")
    ax.plot(sample_x, sample_y, "o", color="tab:blue", ms=4, zorder=4)
    ax.set_title(
        f"RoIAlign: {ROI_BINS}×{ROI_BINS} bins, 2×2 bilinear samples each\n"
        "(points read back from kseg's RoIAlign)",
        fontsize=9,
    )
    ax = axes[1]
    _feature_grid(ax, height, width)
    colours = plt.cm.tab10.colors
    for k, (c0, c1, d0, d1) in enumerate(_roi_pool_cells(ROI_BOX_YXYX, ROI_BINS)):
        colour = colours[k % 10]
        ax.add_patch(
            plt.Rectangle((d0, c0), d1 - d0, c1 - c0, fc=(*colour, 0.18), ec=colour, lw=1.2)
        )
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, ls=":", **outline))
    ax.set_title(
        "RoIPool: box rounded to cells, bins floored/ceiled\n(overlapping, uneven, shifted)",
        fontsize=9,
    )
    # Slide the box right over a ramp whose value is each pixel centre's x: RoIAlign's bin
    # follows the box continuously, RoIPool's stays put and then jumps a whole cell.
    ramp = np.broadcast_to(np.arange(width) + 0.5, (height, width)).astype("float32")
    shifts = np.linspace(0.0, 2.0, 161)
    boxes = np.asarray([[y1, x1 + s, y2, x2 + s] for s in shifts], "float32")
    align = RoIAlign(output_size=ROI_BINS, sampling_ratio=2, aligned=True)
    aligned = np.asarray(align([ramp[None, :, :, None], boxes[None]]))[0, :, 0, 0, 0]
    pooled = [_roi_pool_max(ramp, box, ROI_BINS)[0] for box in boxes]
    centre = x1 + shifts + 0.5 * (x2 - x1) / ROI_BINS
    ax = axes[2]
    ax.plot(shifts, centre, ":", color="0.4", label="the bin's true centre x")
    ax.plot(shifts, aligned, lw=2, alpha=0.8, label="RoIAlign (mean of its 4 samples)")
    ax.plot(shifts, pooled, drawstyle="steps-post", label="RoIPool (max over its cells)")
    ax.set_xlabel("box shifted right by (feature pixels)")
    ax.set_ylabel("first bin's output on f(y, x) = x")
    ax.legend(fontsize=8)
    ax.set_title("one bin as the box slides", fontsize=9)
    _save(fig, out, "mask_rcnn_roi_align.png")


def fpn_levels(out):
    sizes = np.geomspace(16, 1024, 400)
    boxes = np.stack([np.zeros_like(sizes), np.zeros_like(sizes), sizes, sizes], -1)
    levels = np.asarray(assign_levels(boxes.astype("float32")))
    unclamped = np.floor(4 + np.log2(sizes / 224))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(sizes, unclamped, ":", color="0.5", label="floor(4 + log2(√(wh) / 224))")
    ax.plot(sizes, levels, lw=2, label="kseg.layers.assign_levels (clamped to P2..P5)")
    for size in (56, 112, 224, 448):
        ax.axvline(size, color="0.85", lw=0.8, zorder=0)
        ax.text(size, 6.15, f"{size}", ha="center", fontsize=8, color="0.4")
    ax.set_xscale("log", base=2)
    ax.set_xticks(
        [16, 32, 64, 128, 256, 512, 1024], ["16", "32", "64", "128", "256", "512", "1024"]
    )
    ax.set_yticks([0, 1, 2, 3, 4, 5, 6], ["P0", "P1", "P2", "P3", "P4", "P5", "P6"])
    ax.set_ylim(-0.3, 6.6)
    ax.set_xlabel("box side √(wh) in input pixels")
    ax.set_ylabel("pooled from")
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, out, "mask_rcnn_fpn_levels.png")


def fpn_anchors(out):
    size = 256
    strides = (4, 8, 16, 32, 64)
    levels = generate_anchors(size, size)
    fig, axes = plt.subplots(1, 5, figsize=(14, 3.3))
    colours = ("tab:blue", "tab:orange", "tab:green")
    for index, (ax, stride, anchors) in enumerate(zip(axes, strides, levels)):
        cells = size // stride
        anchors = np.asarray(anchors).reshape(cells, cells, 3, 4)
        # The position whose centre lies nearest the image centre.
        row = col = cells // 2 - (1 if cells > 1 else 0)
        centres = (np.arange(cells) + 0.5) * stride
        grid_y, grid_x = np.meshgrid(centres, centres)
        ax.plot(grid_x.ravel(), grid_y.ravel(), ".", color="0.6", ms=2)
        ax.add_patch(plt.Rectangle((0, 0), size, size, fill=False, ec="black", lw=1))
        for colour, (y1, x1, y2, x2), ratio in zip(
            colours, anchors[row, col], ("1:2", "1:1", "2:1")
        ):
            ax.add_patch(
                plt.Rectangle(
                    (x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, lw=1.5, label=ratio
                )
            )
        ax.plot([centres[col]], [centres[row]], "k+", ms=6)
        # Each panel zooms to its own anchors; the black square is the 256x256 image.
        limit = max(1.25 * np.abs(anchors[row, col] - centres[row]).max(), 40.0)
        ax.set_xlim(centres[col] - limit, centres[col] + limit)
        ax.set_ylim(centres[row] + limit, centres[row] - limit)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        side = np.sqrt(np.prod(anchors[row, col, 1, 2:] - anchors[row, col, 1, :2]))
        ax.set_title(
            f"P{index + 2}: stride {stride}, {cells}×{cells} cells\n"
            f"area {side:.0f}², view {2 * limit:.0f} px",
            fontsize=9,
        )
    axes[0].legend(title="h:w", fontsize=7, title_fontsize=7, loc="lower left")
    _save(fig, out, "mask_rcnn_anchors.png")


def mask_rcnn_matched_anchors(out):
    image_size = 128
    info = kseg.data.shapes_info()
    example = _largest_instance_example(image_size)
    image, boxes, classes, masks = (example[k] for k in ("image", "boxes", "classes", "masks"))
    levels = generate_anchors(image_size, image_size, sizes=MASK_RCNN_SHAPES_ANCHOR_SIZES)
    level_of = np.concatenate([np.full(len(a), i + 2) for i, a in enumerate(levels)])
    anchors = np.concatenate([np.asarray(a) for a in levels])
    # All positives, no sampling cap, to show every anchor the RPN is taught to fire on.
    labels, _ = rpn_targets(
        anchors, boxes[None], classes[None], num_samples=len(anchors), positive_fraction=1.0, seed=0
    )
    labels = np.asarray(labels)[0]
    instance_map = np.zeros(masks.shape[1:], "int32")
    for k, mask in enumerate(masks):
        instance_map[mask > 0] = classes[k]
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.5))
    blended = kseg.viz.overlay(image, instance_map, info.palette, alpha=0.6)
    axes[0].imshow(np.where(instance_map[..., None] > 0, blended, image))
    for (y1, x1, y2, x2), cls in zip(boxes, classes):
        axes[0].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="white", lw=1.5))
        axes[0].text(
            x1,
            y1 - 1.5,
            info.class_names[cls],
            color="white",
            fontsize=8,
            bbox={"fc": "black", "alpha": 0.5, "pad": 1, "lw": 0},
        )
    axes[0].set_title("ground truth: instance masks and boxes", fontsize=9)
    axes[1].imshow(image)
    colours = dict(zip(range(2, 7), plt.cm.plasma(np.linspace(0.05, 0.85, 5))))
    shown = set()
    for index in np.flatnonzero(labels == 1):
        y1, x1, y2, x2 = anchors[index]
        level = int(level_of[index])
        axes[1].add_patch(
            plt.Rectangle(
                (x1, y1),
                x2 - x1,
                y2 - y1,
                fill=False,
                ec=colours[level],
                lw=1,
                label=None
                if level in shown
                else f"P{level} ({MASK_RCNN_SHAPES_ANCHOR_SIZES[level - 2]} px)",
            )
        )
        shown.add(level)
    axes[1].legend(fontsize=7, loc="lower right")
    axes[1].set_title(
        f"rpn_targets: {int((labels == 1).sum())} positive anchors of {len(anchors)}",
        fontsize=9,
    )
    for ax in axes:
        ax.set_xlim(-0.5, image_size - 0.5)
        ax.set_ylim(image_size - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, out, "mask_rcnn_matched_anchors.png")


def _largest_instance_example(image_size):
    examples = kseg.data.shapes_instance_examples("val", num_samples=8, image_size=image_size)
    return max(examples.as_numpy_iterator(), key=lambda e: len(e["classes"]))


def mask_rcnn_mask_targets(out):
    image_size = 128
    info = kseg.data.shapes_info()
    example = _largest_instance_example(image_size)
    image, boxes, classes, masks = (example[k] for k in ("image", "boxes", "classes", "masks"))
    # A proposal off the object's box, as the RPN would give: shifted and a little too large.
    star = int(np.flatnonzero(classes == info.class_names.index("star"))[0])
    proposal = boxes[star] + np.asarray([-5.0, 4.0, 3.0, 8.0], "float32")
    targets = roi_targets(
        proposal[None, None],
        boxes[None],
        classes[None],
        masks[None],
        num_samples=8,
        positive_fraction=1.0,
        seed=0,
    )
    rois = np.asarray(targets["rois"])[0]
    row = int(np.flatnonzero(np.all(np.isclose(rois, proposal), axis=1))[0])
    target = np.asarray(targets["mask_targets"])[0, row]
    pasted = np.asarray(
        paste_masks(target[None, None], proposal[None, None], image_size, image_size)
    )[0, 0]
    truth = masks[star] > 0
    iou = np.logical_and(pasted > 0, truth).sum() / np.logical_or(pasted > 0, truth).sum()
    y1, x1, y2, x2 = proposal
    gy1, gx1, gy2, gx2 = boxes[star]
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.7))
    axes[0].imshow(image)
    axes[0].imshow(np.ma.masked_where(~truth, truth), cmap="autumn", alpha=0.5)
    axes[0].add_patch(
        plt.Rectangle((gx1, gy1), gx2 - gx1, gy2 - gy1, fill=False, ec="white", lw=1, ls=":")
    )
    axes[0].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="cyan", lw=1.5))
    axes[0].set_title("object mask (orange), its box (dotted)\nand a proposal (cyan)", fontsize=9)
    axes[1].imshow(target, cmap="gray", vmin=0, vmax=1)
    axes[1].set_title(
        f"roi_targets: {target.shape[0]}×{target.shape[1]} mask target\n"
        "(the mask inside the proposal)",
        fontsize=9,
    )
    overlap = np.zeros((*truth.shape, 3), "float32")
    overlap[..., 0] = truth
    overlap[..., 1] = pasted > 0
    axes[2].imshow(overlap)
    axes[2].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="cyan", lw=1))
    axes[2].set_title(
        f"paste_masks: IoU {iou:.3f} with the object\n"
        "(yellow both, red object only, green pasted only)",
        fontsize=9,
    )
    margin = 12
    for ax in axes[0], axes[2]:
        ax.set_xlim(min(x1, gx1) - margin, max(x2, gx2) + margin)
        ax.set_ylim(max(y2, gy2) + margin, min(y1, gy1) - margin)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, out, "mask_rcnn_mask_targets.png")


def _weak_example(size=128):
    """A shapes validation image with as many classes as possible but one shape class absent."""
    arrays = kseg.data.shapes_arrays("val", 12, size, seed=0)
    num_classes = kseg.data.shapes_info().num_classes
    counts = [len(np.unique(mask)) % num_classes for mask in arrays["masks"]]
    index = int(np.argmax(counts))
    return arrays["images"][index], arrays["masks"][index], arrays["instance_masks"][index]


def _panels(axes, panels):
    for ax, (picture, title) in zip(axes, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])


def _draw_boxes(ax, boxes, classes, palette):
    for (y1, x1, y2, x2), label in zip(boxes, classes):
        colour = np.asarray(palette[label]) / 255.0
        # Box edges lie on pixel borders: pixel (i, j) spans [i, i + 1), drawn centred on i.
        ax.add_patch(
            plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.6, ec=colour)
        )


def _pixel_accuracy(labels, truth):
    return np.mean(labels == truth)


def weak_labels(out):
    image, mask, instances = _weak_example()
    info = kseg.data.shapes_info()
    scribbles = kseg.weak.scribbles_from_mask(mask, seed=0)
    boxes, classes = kseg.weak.boxes_from_mask(mask, instance_mask=instances)
    tags, sizes = kseg.weak.tags_from_mask(mask, info.num_classes, with_sizes=True)
    white = (255, 255, 255)
    fig, axes = plt.subplots(
        1, 5, figsize=(13, 2.9), gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.1]}
    )
    _panels(
        axes[:4],
        (
            (image, "image"),
            (kseg.viz.colorize(mask, info.palette), "full mask"),
            (
                kseg.viz.colorize(scribbles, info.palette, ignore_color=white),
                f"scribbles: {np.mean(scribbles != 255):.0%} of pixels",
            ),
            (image, f"boxes: {len(boxes)} (one per shape)"),
        ),
    )
    _draw_boxes(axes[3], boxes, classes, info.palette)
    lines = [
        f"{name:<10} {'yes' if tag else 'no ':<4} {size:5.1%}"
        for name, tag, size in zip(info.class_names, tags, sizes)
    ]
    axes[4].text(
        0.0,
        0.5,
        "class      tag  size\n" + "\n".join(lines),
        family="monospace",
        fontsize=9,
        va="center",
    )
    axes[4].set_title("tags (and sizes)", fontsize=9)
    axes[4].axis("off")
    _save(fig, out, "weak_labels.png")


def _superpixel_edges(segments):
    edges = np.zeros(segments.shape, bool)
    edges[:, 1:] |= segments[:, 1:] != segments[:, :-1]
    edges[1:, :] |= segments[1:, :] != segments[:-1, :]
    return edges


def scribblesup_propagation(out):
    image, mask, _ = _weak_example()
    info = kseg.data.shapes_info()
    scribbles = kseg.weak.scribbles_from_mask(mask, seed=0)
    n_segments = 150
    segments = kseg.weak.slic_superpixels(image.astype("float32"), n_segments=n_segments)
    outlined = image.copy()
    outlined[_superpixel_edges(segments)] = (255, 255, 0)
    propagated = kseg.weak.propagate_scribbles(
        image.astype("float32"), scribbles, num_classes=info.num_classes, n_segments=n_segments
    )
    on_scribble = scribbles != 255
    overlay = outlined.copy()
    overlay[on_scribble] = kseg.viz.colorize(scribbles, info.palette)[on_scribble]
    overlay[on_scribble & (scribbles == 0)] = (255, 255, 255)
    fig, axes = plt.subplots(1, 4, figsize=(11, 2.9))
    _panels(
        axes,
        (
            (outlined, f"SLIC: {segments.max() + 1} superpixels"),
            (overlay, "scribbles (background white)"),
            (
                kseg.viz.colorize(propagated, info.palette),
                f"propagate_scribbles: {_pixel_accuracy(propagated, mask):.0%} right",
            ),
            (kseg.viz.colorize(mask, info.palette), "full mask"),
        ),
    )
    _save(fig, out, "weak_scribblesup.png")


def _stand_in_logits(mask, num_classes, seed=0):
    """Scores of an imperfect network: the true mask blurred, noisy, leaking into an absent class.

    No trained network is needed to show what the constraints do to a prediction; these scores
    stand for one early in training: right on the whole, soft at the edges, and confident about a
    class the image does not contain in one corner.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    one_hot = np.eye(num_classes, dtype="float32")[mask]
    blurred = ndimage.gaussian_filter(one_hot, sigma=(4, 4, 0))
    # Smooth noise (blobs a few pixels wide) errs like a network does and keeps the PNG small.
    noise = ndimage.gaussian_filter(rng.normal(0.0, 4.0, one_hot.shape), sigma=(2, 2, 0))
    logits = 3.0 * blurred + noise.astype("float32")
    absent = next(c for c in range(1, num_classes) if c not in np.unique(mask))
    height, width = mask.shape
    rows, cols = np.mgrid[:height, :width]
    corner = np.exp(
        -((rows - 0.8 * height) ** 2 + (cols - 0.15 * width) ** 2) / (0.02 * height * width)
    )
    logits[..., absent] += 3.5 * corner
    # The background starts over-confident, as it does in most early segmentation networks.
    logits[..., 0] += 0.8
    return logits.astype("float32"), absent


def weak_ccnn_latent(out):
    image, mask, _ = _weak_example()
    info = kseg.data.shapes_info()
    logits, absent = _stand_in_logits(mask, info.num_classes)
    tags = kseg.weak.tags_from_mask(mask, info.num_classes)
    q = np.asarray(keras.ops.softmax(logits[None], axis=-1))[0]
    p = np.asarray(kseg.weak.latent_distribution(logits[None], tags[None]))[0]
    shown = [c for c in range(info.num_classes) if tags[c] or c == absent]
    fig, axes = plt.subplots(2, len(shown) + 1, figsize=(2.3 * (len(shown) + 1), 4.9))
    _panels(axes[:, 0], ((image, "image"), (kseg.viz.colorize(mask, info.palette), "full mask")))
    for column, c in enumerate(shown, start=1):
        tag = "tagged" if tags[c] else "not tagged"
        for row, (dist, name) in enumerate(((q, "Q"), (p, "P"))):
            ax = axes[row, column]
            # Sixteen colour levels read as easily as a continuum and keep the PNG small.
            ax.imshow(
                dist[..., c],
                cmap=plt.get_cmap("magma", 16),
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            ax.set_title(
                f"{name}: {info.class_names[c]} ({tag})\nmass {dist[..., c].mean():.1%}", fontsize=8
            )
            ax.set_xticks([])
            ax.set_yticks([])
    _save(fig, out, "weak_ccnn_latent.png")


def weak_em_adapt(out):
    image, mask, _ = _weak_example()
    info = kseg.data.shapes_info()
    logits, _ = _stand_in_logits(mask, info.num_classes)
    tags = kseg.weak.tags_from_mask(mask, info.num_classes)
    plain = np.argmax(logits, axis=-1)
    adapted = np.asarray(kseg.weak.em_adapt_latent_labels(tags[None], logits[None]))[0]
    present = np.flatnonzero(tags)

    def shares(labels):
        return ", ".join(f"{info.class_names[c][:4]} {np.mean(labels == c):.0%}" for c in present)

    fig, axes = plt.subplots(1, 4, figsize=(12.5, 3.2))
    _panels(
        axes,
        (
            (image, "image"),
            (kseg.viz.colorize(plain, info.palette), f"argmax of the scores\n{shares(plain)}"),
            (
                kseg.viz.colorize(adapted, info.palette),
                f"EM-Adapt latent labels (40% / 20%)\n{shares(adapted)}",
            ),
            (kseg.viz.colorize(mask, info.palette), f"full mask\n{shares(mask)}"),
        ),
    )
    _save(fig, out, "weak_em_adapt.png")


def weak_bbox_seg(out):
    image, mask, instances = _weak_example()
    info = kseg.data.shapes_info()
    boxes, classes = kseg.weak.boxes_from_mask(mask, instance_mask=instances)
    pseudo = kseg.weak.bbox_seg_labels(image, boxes, classes, info.num_classes)
    filled = np.asarray(kseg.weak.box_label_map(boxes, classes, *mask.shape, info.num_classes))
    # What training on the boxes alone would use: each box filled with its class.
    naive = np.where(filled[..., 1:].any(-1), np.argmax(filled[..., 1:], -1) + 1, 0)
    fig, axes = plt.subplots(1, 4, figsize=(11, 2.9))
    _panels(
        axes,
        (
            (image, "image and boxes"),
            (
                kseg.viz.colorize(naive, info.palette),
                f"boxes filled: {_pixel_accuracy(naive, mask):.0%} right",
            ),
            (
                kseg.viz.colorize(pseudo, info.palette),
                f"bbox_seg_labels: {_pixel_accuracy(pseudo, mask):.0%} right",
            ),
            (kseg.viz.colorize(mask, info.palette), "full mask"),
        ),
    )
    _draw_boxes(axes[0], boxes, classes, info.palette)
    _save(fig, out, "weak_bbox_seg.png")


FIGURES = (
    dilated_receptive_field,
    segnet_unpooling,
    fcn_bilinear_kernel,
    unet_weight_map,
    refinenet_chained_pooling,
    pspnet_bins,
    deeplab_aspp_taps,
    dense_crf,
    inference_windows,
    roi_align_sampling,
    fpn_levels,
    fpn_anchors,
    mask_rcnn_matched_anchors,
    mask_rcnn_mask_targets,
    weak_labels,
    scribblesup_propagation,
    weak_ccnn_latent,
    weak_em_adapt,
    weak_bbox_seg,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the PNGs")
    parser.add_argument("--only", nargs="*", help="names of the figure functions to draw")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    for figure in FIGURES:
        if not args.only or figure.__name__ in args.only:
            figure(args.out)


if __name__ == "__main__":
    main()
