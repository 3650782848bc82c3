"""Overlap-tile inference: whole images through a network whose output is smaller than its input."""

import numpy as np


def overlap_tile_predict(model, images, tile_size=572, batch_size=4):
    """Segments images of any size with U-Net's overlap-tile strategy.

    Ronneberger et al. 2015, Fig. 2: an unpadded network predicts a smaller centre region of its
    input tile, so the image is covered by output tiles laid edge to edge, each read from an
    input tile that extends `(tile_size - output_size) / 2` pixels beyond it; context missing
    at the image border is filled by mirroring the image (numpy's "symmetric" mode). Each tile
    is predicted on its own, so memory stays bounded by `batch_size` tiles. When the output size
    is a multiple of `2**depth` every tile shares one pooling grid and the result equals a
    single pass over the whole mirrored image; the paper's 388 (= 4 x 97) is not, so its tiles
    differ from such a pass by their pooling phase, as in the paper.

    Args:
        model: a U-Net (or any network mapping an input tile to its centred output region).
        images: `(H, W, C)` or `(B, H, W, C)` array, values as the model expects.
        tile_size: input tile height and width; must be a size the model accepts
            (`kseg.models.unet.unet_output_size` tells for U-Net).
        batch_size: tiles per forward pass.

    Returns:
        float32 logits `(H, W, K)` or `(B, H, W, K)`, matching the input's rank.

    Example:
        >>> import numpy as np, kseg
        >>> model = kseg.models.UNet(
        ...     num_classes=2, input_shape=(None, None, 1), num_filters=2, depth=2
        ... )
        >>> kseg.inference.overlap_tile_predict(model, np.zeros((70, 90, 1)), tile_size=92).shape
        (70, 90, 2)
    """
    images = np.asarray(images, np.float32)
    single = images.ndim == 3
    if single:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(
            f"images must be (H, W, C) or (B, H, W, C). Received: shape={images.shape}"
        )
    count, height, width, _ = images.shape
    probe = model.predict(
        np.zeros((1, tile_size, tile_size, images.shape[-1]), np.float32), verbose=0
    )
    output_size = probe.shape[1]
    if probe.shape[2] != output_size or (tile_size - output_size) % 2:
        raise ValueError(
            "the model must map a square tile to a centred square output. "
            f"Received: tile_size={tile_size} giving output {probe.shape[1:3]}"
        )
    margin = (tile_size - output_size) // 2
    rows, cols = -(-height // output_size), -(-width // output_size)
    padded = np.pad(
        images,
        (
            (0, 0),
            (margin, margin + rows * output_size - height),
            (margin, margin + cols * output_size - width),
            (0, 0),
        ),
        mode="symmetric",
    )
    tiles = np.stack(
        [
            padded[
                b,
                r * output_size : r * output_size + tile_size,
                c * output_size : c * output_size + tile_size,
            ]
            for b in range(count)
            for r in range(rows)
            for c in range(cols)
        ]
    )
    logits = model.predict(tiles, batch_size=batch_size, verbose=0).astype(np.float32)
    logits = logits.reshape(count, rows, cols, output_size, output_size, -1)
    logits = logits.transpose(0, 1, 3, 2, 4, 5).reshape(
        count, rows * output_size, cols * output_size, -1
    )
    logits = logits[:, :height, :width]
    return logits[0] if single else logits
