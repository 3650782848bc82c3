"""U-Net: a contracting path, a symmetric expanding path and crop-and-concatenate skips."""

import itertools

import keras

from kseg.layers import CenteredPadToMultiple, CropToMatch, UNetInputSizeCheck
from kseg.models.backbone_input import resolve_backbone
from kseg.models.registry import register_model


def unet_output_size(input_size, depth=4, padding="valid"):
    """The output height (or width) of a U-Net for an input of `input_size` pixels.

    With unpadded convolutions every 2x2 max pooling must see an even size, or
    the up-convolved map no longer lines up with its skip (Ronneberger et al.
    2015, section 2: "select the input tile size such that all 2x2 max-pooling
    operations are applied to a layer with an even x- and y-size").

    Args:
        input_size: the input height or width in pixels.
        depth: the number of 2x2 poolings.
        padding: "valid" (the paper) or "same" (the size is kept).

    Returns:
        The output size; a `ValueError` names the nearest valid sizes when
        `input_size` does not tile.

    Example:
        >>> import kseg
        >>> kseg.models.unet.unet_output_size(572)
        388
    """
    if padding == "same":
        return input_size
    size = input_size
    for _ in range(depth):
        size -= 4
        if size <= 0 or size % 2:
            valid = [s for s in range(max(1, input_size - 64), input_size + 64) if _tiles(s, depth)]
            below = [s for s in valid if s < input_size]
            above = [s for s in valid if s > input_size]
            raise ValueError(
                f"an unpadded U-Net of depth {depth} needs every 2x2 pooling to see an even size; "
                f"nearest valid input sizes: {below[-1:] + above[:1]}. "
                f"Received: input_size={input_size}"
            )
        size //= 2
    size -= 4
    for _ in range(depth):
        size = 2 * size - 4
    if size <= 0:
        raise ValueError(
            f"input too small for an unpadded U-Net. Received: input_size={input_size}"
        )
    return size


def _tiles(size, depth):
    for _ in range(depth):
        size -= 4
        if size <= 0 or size % 2:
            return False
        size //= 2
    return size - 4 > 0


def valid_input_sizes(depth=4):
    """The input sizes an unpadded U-Net of `depth` poolings accepts, as `(smallest, step)`.

    Every valid height or width is `smallest + k * step` for `k >= 0`, with `step = 2**depth`:
    each level subtracts 4 and halves, so sizes that tile differ by multiples of `2**depth`.
    For the paper's depth 4 this gives `(188, 16)`, and 572 = 188 + 24 * 16.

    Args:
        depth: the number of 2x2 poolings.

    Returns:
        A tuple `(smallest, step)` of ints.

    Example:
        >>> import kseg
        >>> kseg.models.unet.valid_input_sizes(4)
        (188, 16)
    """
    step = 2**depth
    size = 1
    while True:
        try:
            unet_output_size(size, depth)
            return size, step
        except ValueError:
            size += 1


def _double_conv(x, filters, padding, name):
    for index in (1, 2):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding=padding,
            activation="relu",
            kernel_initializer="he_normal",
            name=f"{name}_conv_{index}",
        )(x)
    return x


def _up_block(x, skip, filters, ratio, padding, name):
    # The paper's "up-convolution": a learned 2x2 upsampling that also halves the channels.
    x = keras.layers.Conv2DTranspose(filters, ratio, strides=ratio, name=f"{name}_upconv")(x)
    if skip is not None:
        skip = CropToMatch(name=f"{name}_crop")([skip, x])
        x = keras.layers.Concatenate(name=f"{name}_concat")([skip, x])
    return _double_conv(x, filters, padding, name)


@register_model("unet")
def UNet(
    num_classes=2,
    backbone=None,
    input_shape=(None, None, 3),
    num_filters=64,
    depth=4,
    padding=None,
    dropout=0.0,
    backbone_weights=None,
    name="unet",
    **backbone_kwargs,
):
    """U-Net: the unpadded encoder-decoder of Ronneberger et al., or a padded one.

    Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for
    Biomedical Image Segmentation". The contracting path repeats two unpadded
    3x3 convolutions with ReLU and a 2x2 max pooling, doubling the channels at
    each of `depth` steps (64 to 1024); the expanding path repeats a 2x2
    up-convolution halving the channels, concatenation with the centre-cropped
    contracting feature map, and two 3x3 convolutions with ReLU; a 1x1
    convolution gives the logits. With the paper's settings a 572x572 tile gives
    388x388 logits and the network has 31,031,685 parameters for one input
    channel and two classes.

    Input sizes: the unpadded form is not padded automatically, since its
    output is smaller than its input by design and the paper meets other
    sizes with overlap-tile inference (`kseg.inference.overlap_tile_predict`). Its valid
    heights and widths are `smallest + k * 2**depth`
    (`kseg.models.unet.valid_input_sizes`; 188, 204, ..., 572, ... for
    depth 4). Any other size raises an error naming the size and the valid
    ones: a static `input_shape` when the model is built
    (`kseg.models.unet.unet_output_size`), a dynamic one when the model runs
    (`kseg.layers.UNetInputSizeCheck`).

    `padding="same"` keeps the size: the input is zero-padded (centred) to a
    multiple of `2**depth` and the logits are cropped back, so every input size
    (down to 1x1) works and sizes already divisible by `2**depth` are untouched. With
    `backbone`, a registry backbone replaces the contracting path: its deepest
    feature is the bottleneck, the shallower ones ("P4".."P1") are the skips,
    the input is padded to a multiple of the deepest stride, and the decoder
    width at stride `s` is `num_filters * s`; this form is always padded.

    The model takes images with values in [0, 255] (divided by 255 without a
    backbone; the backbone's own preprocessing otherwise) and returns float32
    logits.

    Args:
        num_classes: number of classes (2 in the paper).
        backbone: None for the paper's encoder, or a name from
            `kseg.backbones.list_backbones()` or a model from `get_backbone`.
        input_shape: `(H, W, C)`; H and W may be None; C is 1 or 3 without a
            backbone, 3 with one.
        num_filters: channels of the first level (64); level `i` has
            `num_filters * 2**i`.
        depth: number of poolings (4).
        padding: "valid" (the paper), "same", or None: "valid" without a
            backbone, "same" with one.
        dropout: dropout rate at the end of the contracting path (the paper
            uses dropout there without giving its rate; 0 disables it).
        backbone_weights: None, "imagenet" or a path, for a named backbone.
        name: model name.
        **backbone_kwargs: forwarded to the backbone.

    Returns:
        A `keras.Model` mapping `(B, H, W, C)` images to `(B, H', W', num_classes)`
        logits, `H' = H` when padded.

    Example:
        >>> import numpy as np, kseg
        >>> model = kseg.models.UNet(num_classes=2, input_shape=(188, 188, 1), num_filters=4)
        >>> model.output.shape
        (None, 4, 4, 2)
        >>> same = kseg.models.UNet(num_classes=3, num_filters=4, padding="same")
        >>> same.predict(np.zeros((1, 65, 97, 3)), verbose=0).shape
        (1, 65, 97, 3)
    """
    if padding is None:
        padding = "valid" if backbone is None else "same"
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same'. Received: padding={padding!r}")
    if backbone is not None and padding != "same":
        raise ValueError(
            "a backbone encoder is same-padded, so U-Net with a backbone needs padding='same'. "
            f"Received: padding={padding!r}"
        )
    if int(num_classes) <= 0:
        raise ValueError(
            f"num_classes must be a positive integer. Received: num_classes={num_classes}"
        )
    if int(depth) <= 0 or int(num_filters) <= 0:
        raise ValueError(
            "depth and num_filters must be positive. "
            f"Received: depth={depth}, num_filters={num_filters}"
        )
    image = keras.Input(shape=input_shape, name="image")

    if backbone is None:
        if padding == "valid":
            for size in input_shape[:2]:
                if size is not None:
                    unet_output_size(size, depth, padding)
        x = image
        if padding == "valid":
            smallest, step = valid_input_sizes(depth)
            x = UNetInputSizeCheck(smallest, step, name="input_size_check")(x)
        x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
        if padding == "same":
            x = CenteredPadToMultiple(2**depth, name="pad")(x)
        skips = []
        for level in range(depth):
            x = _double_conv(x, num_filters * 2**level, padding, f"down_{level + 1}")
            skips.append((x, 2))
            x = keras.layers.MaxPooling2D(2, name=f"down_{level + 1}_pool")(x)
        x = _double_conv(x, num_filters * 2**depth, padding, "bottleneck")
        final_ratio = None
    else:
        encoder = resolve_backbone(
            backbone,
            input_shape=input_shape,
            weights=backbone_weights,
            output_stride=32,
            **backbone_kwargs,
        )
        infos = sorted(encoder.feature_info, key=lambda info: info["stride"])
        features = encoder(CenteredPadToMultiple(infos[-1]["stride"], name="pad")(image))
        x = features[infos[-1]["key"]]
        skips = []
        for shallow, deep in itertools.pairwise(infos):
            skips.append((features[shallow["key"]], deep["stride"] // shallow["stride"]))
        final_ratio = infos[0]["stride"]

    if dropout:
        x = keras.layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level, (skip, ratio) in reversed(list(enumerate(skips))):
        filters = (
            num_filters * 2**level if backbone is None else num_filters * infos[level]["stride"]
        )
        x = _up_block(x, skip, filters, ratio, padding, f"up_{level + 1}")
    if final_ratio is not None and final_ratio > 1:
        x = _up_block(x, None, num_filters, final_ratio, padding, "up_0")
    logits = keras.layers.Conv2D(num_classes, 1, dtype="float32", name="logits")(x)
    if padding == "same":
        logits = CropToMatch(dtype="float32", name="logits_crop")([logits, image])
    return keras.Model(image, logits, name=name)
