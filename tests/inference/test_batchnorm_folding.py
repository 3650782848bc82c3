"""Batch normalisation folded into convolutions gives the unfolded model's outputs.

The reference is always the original model run by Keras in inference mode, with moving
statistics and affine parameters drawn at random so that a wrong fold shows.
"""

import os

import keras
import numpy as np
import pytest

import kseg
from kseg.inference.batchnorm_folding import (
    BatchNormFolded,
    FoldedConvBNReLU,
    fold_batch_norm,
    foldable_pairs,
    supports_batch_norm_folding,
)

NUM_CLASSES = 3
TOLERANCE = 1e-4  # relative to the largest output magnitude


def randomise(model, seed=0):
    """Random BN statistics and affine parameters; random values for all-zero kernels."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.5, channels))
            layer.moving_variance.assign(rng.uniform(0.2, 2.0, channels))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            if layer.center:
                layer.beta.assign(rng.normal(0.0, 0.5, channels))
    # FCN zero-initialises its score layers; their outputs would hide any folding error.
    for variable in model.trainable_weights:
        value = np.asarray(variable)
        if value.ndim >= 2 and not value.any():
            variable.assign(rng.normal(0.0, 0.05, value.shape))
    return model


def assert_close(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual / scale, expected / scale, rtol=0, atol=TOLERANCE)


def batchnorms(model):
    return [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def block_batchnorms(model):
    """The normalisations inside ConvBNReLU blocks (folded by class, not by graph)."""
    found = []
    for layer in model._flatten_layers():
        if isinstance(layer, kseg.layers.ConvBNReLU):
            found += [layer.bn] + ([layer.depthwise_bn] if layer.separable else [])
    return found


def perturb_statistics(model, seed=7):
    """New moving statistics and gamma for every normalisation left in `model`."""
    rng = np.random.default_rng(seed)
    for layer in batchnorms(model):
        channels = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(3.0, 1.0, channels))
        layer.moving_variance.assign(rng.uniform(5.0, 9.0, channels))
        layer.gamma.assign(rng.uniform(2.0, 3.0, channels))


SEMANTIC_MODELS = kseg.models.list_models(task="semantic")


def test_every_registered_model_is_covered():
    assert sorted(SEMANTIC_MODELS + ["mask_rcnn"]) == kseg.models.list_models()


@pytest.mark.parametrize("name", SEMANTIC_MODELS)
def test_registered_model_folds_exactly_and_reloads(name, tmp_path):
    model = randomise(kseg.testing.build_small_model(name, NUM_CLASSES))
    images = np.random.default_rng(1).uniform(0, 255, (2, 48, 64, 3)).astype("float32")
    expected = np.asarray(model(images, training=False))
    before = [np.array(w) for w in model.weights]

    folded = fold_batch_norm(model)

    # Every normalisation is folded: into the convolution before it, or inside a block.
    folded_by_graph = {id(batchnorm) for _, batchnorm in foldable_pairs(model)}
    folded_in_blocks = {id(batchnorm) for batchnorm in block_batchnorms(model)}
    assert {id(layer) for layer in batchnorms(model)} == folded_by_graph | folded_in_blocks
    assert_close(folded(images), expected)
    # The normalisations left inside folded blocks are never read.
    perturb_statistics(folded)
    assert_close(folded(images, training=False), expected)
    # The original model is untouched.
    for weight, value in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(np.asarray(weight), value)

    path = os.fspath(tmp_path / "folded.keras")
    folded.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded) is type(model)
    assert_close(reloaded(images, training=False), expected)


def test_mask_rcnn_is_left_alone_but_its_backbone_folds():
    model = kseg.testing.build_small_model("mask_rcnn", NUM_CLASSES)
    assert not supports_batch_norm_folding(model)
    with pytest.raises(TypeError, match="MaskRCNN"):
        fold_batch_norm(model)
    backbone = randomise(model.backbone)
    images = np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    expected = backbone(images, training=False)
    folded = fold_batch_norm(backbone)
    assert len(foldable_pairs(backbone)) == len(batchnorms(backbone))
    got = folded(images)
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert_close(got[key], expected[key])


def test_frozen_batch_norm_of_the_torchvision_resnet_folds():
    model = kseg.models.DeepLabV3(
        num_classes=NUM_CLASSES,
        backbone="resnet50_v1.5",
        frozen_batchnorm=True,
        base_channels=4,
        num_filters=8,
    )
    randomise(model)
    frozen = [
        layer
        for layer in batchnorms(model)
        if isinstance(layer, kseg.backbones.resnet.FrozenBatchNormalization)
    ]
    assert len(frozen) == 53
    folded_by_graph = {id(batchnorm) for _, batchnorm in foldable_pairs(model)}
    assert {id(layer) for layer in frozen} <= folded_by_graph
    images = np.random.default_rng(3).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    assert_close(fold_batch_norm(model)(images), model(images, training=False))


def _single_pair(conv, batchnorm, input_shape):
    inputs = keras.Input(input_shape)
    outputs = keras.layers.ReLU()(batchnorm(conv(inputs)))
    return randomise(keras.Model(inputs, outputs), seed=4)


@pytest.mark.parametrize(
    "conv, input_shape",
    [
        (keras.layers.Conv2D(6, 3, padding="same", use_bias=True), (9, 7, 4)),
        (keras.layers.Conv2D(6, 3, groups=2, dilation_rate=2, use_bias=False), (9, 7, 4)),
        (keras.layers.DepthwiseConv2D(3, depth_multiplier=2, strides=2), (9, 7, 4)),
        (keras.layers.SeparableConv2D(5, 3, depth_multiplier=2, use_bias=True), (9, 7, 4)),
        (keras.layers.Conv2DTranspose(5, 3, strides=2, use_bias=False), (9, 7, 4)),
        (keras.layers.Conv1D(5, 3), (11, 4)),
        (keras.layers.Conv3D(3, 2), (5, 4, 6, 2)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, keras.layers.Layer) else None,
)
@pytest.mark.parametrize("center, scale", [(True, True), (False, False)])
def test_each_convolution_kind_folds_exactly(conv, input_shape, center, scale):
    conv = type(conv).from_config(conv.get_config())  # a fresh layer per parametrisation
    batchnorm = keras.layers.BatchNormalization(center=center, scale=scale, epsilon=1e-3)
    model = _single_pair(conv, batchnorm, input_shape)
    assert foldable_pairs(model) == [(conv, batchnorm)]
    images = np.random.default_rng(5).normal(size=(2, *input_shape)).astype("float32")
    folded = fold_batch_norm(model)
    assert batchnorms(folded) == []
    assert folded.get_layer(conv.name).use_bias
    assert_close(folded(images), model(images, training=False))


def _kept(build):
    inputs = keras.Input((8, 8, 3))
    model = randomise(keras.Model(inputs, build(inputs)), seed=6)
    images = np.random.default_rng(6).normal(size=(2, 8, 8, 3)).astype("float32")
    folded = fold_batch_norm(model)
    assert_close(folded(images), model(images, training=False))
    return foldable_pairs(model), folded


def test_pairs_that_would_not_fold_exactly_are_kept():
    layers = keras.layers

    def activated(x):
        return layers.BatchNormalization()(layers.Conv2D(4, 3, activation="relu")(x))

    def read_twice(x):
        y = layers.Conv2D(4, 3)(x)
        return layers.Add()([layers.BatchNormalization()(y), y])

    def after_add(x):
        return layers.BatchNormalization()(layers.Add()([x, x]))

    def forced_training(x):
        return layers.BatchNormalization()(layers.Conv2D(4, 3)(x), training=True)

    def conv_output_is_a_model_output(x):
        y = layers.Conv2D(4, 3)(x)
        return [y, layers.BatchNormalization()(y)]

    def shared_conv(x):
        conv = layers.Conv2D(3, 3, padding="same")
        return layers.BatchNormalization()(conv(conv(x)))

    for build in (activated, read_twice, after_add, conv_output_is_a_model_output, shared_conv):
        pairs, folded = _kept(build)
        assert pairs == [], build.__name__
        assert len(batchnorms(folded)) == 1, build.__name__
    inputs = keras.Input((8, 8, 3))
    assert foldable_pairs(keras.Model(inputs, forced_training(inputs))) == []


def test_conv_bn_relu_blocks_fold_alone_and_inside_composites(tmp_path):
    inputs = keras.Input((None, None, 6))
    x = kseg.layers.ConvBNReLU(8, 3, separable=True, name="block")(inputs)
    x = kseg.layers.ASPP(filters=4, dilation_rates=(2, 3), separable=True, name="aspp")(x)
    x = kseg.layers.PyramidPooling(bins=(1, 2), name="ppm")(x)  # creates its blocks in build
    model = randomise(keras.Model(inputs, x), seed=8)
    images = np.random.default_rng(8).normal(size=(2, 13, 11, 6)).astype("float32")
    folded = fold_batch_norm(model)
    wrapped = [layer for layer in folded.layers if isinstance(layer, BatchNormFolded)]
    assert [layer.name for layer in wrapped] == ["block", "aspp", "ppm"]
    # The block, ASPP's 1x1, two atrous, image-pooling and projection blocks, PPM's two levels.
    blocks = [layer for layer in folded._flatten_layers() if isinstance(layer, FoldedConvBNReLU)]
    assert len(blocks) == 8
    assert_close(folded(images), model(images, training=False))
    path = os.fspath(tmp_path / "blocks.keras")
    folded.save(path)
    assert_close(keras.saving.load_model(path)(images), model(images, training=False))


def test_sequential_models_fold_and_subclassed_ones_are_refused():
    model = keras.Sequential(
        [keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3), keras.layers.BatchNormalization()]
    )
    randomise(model, seed=9)
    images = np.random.default_rng(9).normal(size=(1, 6, 6, 2)).astype("float32")
    folded = fold_batch_norm(model)
    assert batchnorms(folded) == []
    assert_close(folded(images), model(images, training=False))
    with pytest.raises(ValueError, match="keras.Input"):
        fold_batch_norm(keras.Sequential([keras.layers.Conv2D(3, 3)]))
    with pytest.raises(TypeError, match="Dense"):
        fold_batch_norm(keras.layers.Dense(2))


# --- the default in kseg's predict and export paths ---------------------------------------------


def test_fold_if_exact_skips_subclassed_unfoldable_and_bfloat16_models():
    model = kseg.testing.build_small_model("deeplabv3plus", NUM_CLASSES)
    assert kseg.inference.fold_batch_norm_if_exact(model) is not model
    mask_rcnn = kseg.testing.build_small_model("mask_rcnn", NUM_CLASSES)
    assert kseg.inference.fold_batch_norm_if_exact(mask_rcnn) is mask_rcnn
    nothing = kseg.testing.build_small_model("fcn_alexnet", NUM_CLASSES)
    assert kseg.inference.fold_batch_norm_if_exact(nothing) is nothing
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = kseg.testing.build_small_model("segnet_basic", NUM_CLASSES)
    finally:
        keras.config.set_dtype_policy("float32")
    assert kseg.inference.fold_batch_norm_if_exact(mixed) is mixed


def assert_labels_are_the_argmax(labels, logits):
    """Equal labels wherever the two best classes are not within float32 rounding of a tie."""
    logits = np.asarray(logits)
    best_two = np.sort(logits, axis=-1)[..., -2:]
    clear = best_two[..., 1] - best_two[..., 0] > TOLERANCE * np.abs(logits).max()
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(labels[clear], logits.argmax(-1)[clear])


def conv_bn_logits(seed):
    """A 1x1 convolution and a BN as the logits: varied labels the BN's beta can override."""
    inputs = keras.Input((None, None, 3))
    # Each class scores one colour channel, so the labels follow the random images.
    conv = keras.layers.Conv2D(NUM_CLASSES, 1)
    model = keras.Model(inputs, keras.layers.BatchNormalization()(conv(inputs)))
    conv.kernel.assign(np.eye(3, NUM_CLASSES)[None, None])
    return randomise(model, seed)


def _runs_a_snapshot(predict, model, images):
    """Whether `predict` ignores a later change of `model` that makes its labels all 0."""
    before = predict(images)
    assert len(np.unique(before)) > 1
    (batchnorm,) = batchnorms(model)
    batchnorm.beta.assign([1e6] + [0.0] * (NUM_CLASSES - 1))
    return np.array_equal(predict(images), before)


def test_make_predictor_and_the_task_predictor_run_a_folded_copy():
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(12).uniform(0, 255, (2, 32, 40, 3)).astype("float32")
    model = randomise(kseg.testing.build_small_model("deeplabv3plus", NUM_CLASSES))
    logits = model(images, training=False)
    assert_labels_are_the_argmax(kseg.inference.make_predictor(model)(images), logits)
    assert_labels_are_the_argmax(kseg.tasks.SemanticTask().predictor(model)(images[0]), logits[0])

    model = conv_bn_logits(0)
    assert _runs_a_snapshot(kseg.inference.make_predictor(model), model, images)
    model = conv_bn_logits(1)
    predict = kseg.inference.make_predictor(model, fold_batchnorm=False)
    assert not _runs_a_snapshot(predict, model, images)
    model = conv_bn_logits(2)
    predict_one = kseg.tasks.SemanticTask().predictor(model)
    assert _runs_a_snapshot(lambda batch: predict_one(batch[0])[None], model, images[:1])


def test_saved_model_exports_the_folded_model_by_default(tmp_path):
    import tensorflow as tf

    model = randomise(kseg.testing.build_small_model("segnet_basic", NUM_CLASSES))
    images = np.random.default_rng(13).integers(0, 256, (1, 32, 48, 3)).astype("uint8")
    expected = np.asarray(model(images.astype("float32"), training=False))
    variables = {}
    for fold in (True, False):
        path = kseg.export.saved_model(
            model, tmp_path / f"fold_{fold}", include_logits=True, fold_batchnorm=fold
        )
        loaded = tf.saved_model.load(str(path))
        logits = loaded.signatures["serving_default"](images=tf.constant(images))["logits"]
        assert_close(logits, expected)
        variables[fold] = [variable.name for variable in loaded.variables]
    assert not any("moving_mean" in name for name in variables[True])
    assert sum("moving_mean" in name for name in variables[False]) == 8
