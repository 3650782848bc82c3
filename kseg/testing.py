"""Shared checks for kseg's own tests and for users writing layers in kseg's style."""

import os
import tempfile
from pathlib import Path

import keras
import numpy as np

# The smallest configuration of each registered model that still exercises its architecture,
# on top of `backbone="tiny"`; the contract and export tests build every model this way.
SMALL_MODEL_CONFIGS = {
    # SegNet builds its own encoders; narrow widths keep them fast.
    "segnet": {"backbone": "vgg16_bn", "num_filters": 4},
    "segnet_basic": {"backbone": None, "num_filters": 4},
    # The backbone form of U-Net is padded, so it keeps every input size; narrow decoder for speed.
    "unet": {"num_filters": 4},
    # FCN's fc6/fc7 are 4096 wide in the paper; 8 keeps the tiny-backbone build fast.
    **{name: {"num_filters": 8} for name in ("fcn32s", "fcn16s", "fcn8s")},
    # FCN-AlexNet is its own encoder; narrow convolutions and fc6/fc7 keep it fast.
    "fcn_alexnet": {"backbone": None, "conv_filters": (4, 4, 4, 4, 4), "num_filters": 8},
    "refinenet": {"num_filters": 8},
    "dilatednet": {"num_filters": 8},
    "deeplabv1": {"num_filters": 16},
    # Two scales keep the pyramid's fit step short; the tiny backbone's last stage has two
    # convolutions, too few for DeepLab v3's three-way multi-grid.
    "deeplabv2": {"input_scales": (1.0, 0.5)},
    "deeplabv3": {"multi_grid": None, "num_filters": 16},
    "pspnet": {"num_filters": 8, "auxiliary_filters": 8},
    # Narrow heads and few regions keep an instance model's build, save and step to seconds.
    "mask_rcnn": {
        "fpn_channels": 16,
        "box_fc_units": 32,
        "mask_channels": 16,
        "anchor_sizes": (16, 32, 64, 128, 256),
        "roi_batch_size": 32,
        "rpn_train_nms": (200, 100),
        "rpn_test_nms": (100, 50),
        "detections_per_image": 10,
    },
}


def build_small_model(name, num_classes=3, **overrides):
    """Builds registered model `name` on the tiny backbone in its `SMALL_MODEL_CONFIGS` form.

    Example:
        >>> import kseg
        >>> model = kseg.testing.build_small_model("fcn8s")
        >>> model.output.shape[-1]
        3
    """
    from kseg.models import get_model

    kwargs = {"num_classes": num_classes, "backbone": "tiny", **SMALL_MODEL_CONFIGS.get(name, {})}
    kwargs.update(overrides)
    return get_model(name, **kwargs)


def offline_keras_cache(monkeypatch, home, stand_ins=()):
    """Serves keras.applications' weight files from `home/models` with downloading forbidden.

    Keras's download cache moves to `home` (both `KERAS_HOME` and the folder Keras read at
    import), and any download attempt fails the test. Files listed in `stand_ins` (for
    instance seeded random weights saved under an official file name) pass Keras's hash
    check and every other file fails it; without `stand_ins` the real check runs.

    Args:
        monkeypatch: pytest's `monkeypatch` fixture (or a `pytest.MonkeyPatch`).
        home: folder to use as the Keras home; `home/models` is created.
        stand_ins: paths of files to accept whatever their hash.

    Returns:
        The list to which each hash Keras asks for is appended (when `stand_ins` are given).

    Example:
        >>> def test_offline(tmp_path, monkeypatch):
        ...     kseg.testing.offline_keras_cache(monkeypatch, tmp_path)
    """
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    home = Path(home)
    (home / "models").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    # Keras reads KERAS_HOME once at import; get_file asks keras_home(), which returns this.
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))

    def refuse_download(url, *args, **kwargs):
        raise AssertionError(f"the test tried to download {url}")

    monkeypatch.setattr(file_utils, "urlretrieve", refuse_download)
    hashes_checked = []
    if stand_ins:
        accepted = {Path(path) for path in stand_ins}

        def accept_stand_ins(path, file_hash, **kwargs):
            hashes_checked.append(file_hash)
            return Path(path) in accepted

        monkeypatch.setattr(file_utils, "validate_file", accept_stand_ins)
    return hashes_checked


def _as_list(value):
    return (
        list(value)
        if isinstance(value, (list, tuple)) and isinstance(value[0], (list, tuple))
        else [value]
    )


def run_layer_test(layer_class, init_kwargs, input_shapes, *, expected_channels=None, seed=0):
    """Runs the checks every kseg layer must pass and returns the layer's output.

    Checks: the config round-trips exactly; the layer accepts `None` height and
    width; a model holding it saves to `.keras` and reloads in safe mode with no
    `custom_objects`, giving identical outputs; under `mixed_bfloat16` its
    outputs are bfloat16 (unless the layer pins its dtype) and finite; and one
    SGD step on a tiny model through it gives a finite loss.

    Args:
        layer_class: the layer class.
        init_kwargs: constructor arguments.
        input_shapes: one shape `(B, H, W, C)` or a list of shapes for a
            multi-input layer.
        expected_channels: if given, the last output dimension.
        seed: seed of the random inputs.

    Returns:
        The layer's output on the random inputs, as numpy.

    Example:
        >>> import kseg
        >>> out = kseg.testing.run_layer_test(
        ...     kseg.layers.ASPP, {"filters": 8}, (2, 9, 11, 4))
        >>> out.shape
        (2, 9, 11, 8)
    """
    shapes = _as_list(input_shapes)
    rng = np.random.default_rng(seed)
    data = [rng.normal(size=shape).astype("float32") for shape in shapes]
    single = len(shapes) == 1

    layer = layer_class(**init_kwargs)
    config = layer.get_config()
    clone = layer_class.from_config(config)
    if clone.get_config() != config:
        raise AssertionError(f"{layer_class.__name__}: config does not round-trip: {config}")

    inputs = [keras.Input(shape=(None, None, shape[-1])) for shape in shapes]
    outputs = layer(inputs[0] if single else inputs)
    model = keras.Model(inputs, outputs)
    expected = np.asarray(model(data[0] if single else data, training=False))
    if expected_channels is not None and expected.shape[-1] != expected_channels:
        raise AssertionError(f"expected {expected_channels} channels, got {expected.shape}")

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "layer.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path, safe_mode=True)
    again = np.asarray(reloaded(data[0] if single else data, training=False))
    np.testing.assert_allclose(again, expected, rtol=1e-5, atol=1e-5)

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = layer_class(**init_kwargs)
        mixed_out = mixed(data[0] if single else data)
        pinned = init_kwargs.get("dtype") is not None
        if not pinned and keras.backend.standardize_dtype(mixed_out.dtype) != "bfloat16":
            raise AssertionError(f"mixed_bfloat16 output dtype is {mixed_out.dtype}")
        if not np.all(np.isfinite(np.asarray(keras.ops.cast(mixed_out, "float32")))):
            raise AssertionError("non-finite output under mixed_bfloat16")
    finally:
        keras.config.set_dtype_policy(previous)

    trainable = keras.Model(inputs, layer_class(**init_kwargs)(inputs[0] if single else inputs))
    trainable.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    target = np.zeros_like(expected)
    loss = trainable.train_on_batch(data[0] if single else data, target)
    if not np.isfinite(loss):
        raise AssertionError(f"training step gave a non-finite loss: {loss}")
    return expected
