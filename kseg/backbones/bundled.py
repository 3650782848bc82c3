"""ImageNet weights shipped inside the kseg package, for work that must run without a network."""

from pathlib import Path

WEIGHTS_FOLDER = Path(__file__).parent / "weights"

# keras.applications' own file names, so a file can also be dropped into the Keras cache
# ($KERAS_HOME/models) where `weights="imagenet"` looks first.
BUNDLED_IMAGENET_WEIGHTS = {
    ("mobilenetv2", 0.35): "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
}


def bundled_weights_path(name, alpha=None):
    """Path of ImageNet weights that ship with kseg for backbone `name`, or None.

    kseg ships one small file, MobileNetV2 with width 0.35 (2 MB, keras.applications' no-top
    weights), so that the demo and tutorials fine-tune a pretrained backbone on a machine with
    no network. The path goes to `get_backbone(..., weights=path)`; every other backbone uses
    `weights="imagenet"`, which downloads through keras.applications.

    Args:
        name: backbone name, e.g. "mobilenetv2".
        alpha: width multiplier of a MobileNet.

    Returns:
        A `pathlib.Path`, or None when kseg ships no weights for that backbone.

    Example:
        >>> import kseg
        >>> kseg.backbones.bundled_weights_path("mobilenetv2", alpha=0.35).name
        'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5'
    """
    filename = BUNDLED_IMAGENET_WEIGHTS.get((name.lower(), alpha))
    if filename is None:
        return None
    path = WEIGHTS_FOLDER / filename
    return path if path.is_file() else None
