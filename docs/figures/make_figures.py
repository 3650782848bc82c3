"""Draws the documentation's figures with kseg itself and writes them as PNGs next to this file.

Every number in a figure comes from a kseg function or layer (receptive fields, pooling indices,
bilinear kernels, adaptive pooling, the dense CRF, sliding-window geometry); matplotlib only
draws them. Runs in well under a minute on a CPU:

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
from kseg.inference.sliding_window import window_starts, window_weights
from kseg.layers.pyramid_pooling import adaptive_average_pooling_2d

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
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the PNGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    for figure in FIGURES:
        figure(args.out)


if __name__ == "__main__":
    main()
