"""receptive_field: the paper's figures, known backbones, and gradients of real networks."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.utils.receptive_field import receptive_field


def conv(dilation=1, kernel=3, stride=1, filters=4):
    return keras.layers.Conv2D(
        filters, kernel, strides=stride, dilation_rate=dilation, padding="same"
    )


@pytest.mark.parametrize(
    ("dilations", "expected"),
    [((1,), 3), ((1, 2), 7), ((1, 2, 4), 15), ((1, 2, 4, 8), 31)],
)
def test_dilated_stack_grows_exponentially_as_in_yu_koltun_figure_1(dilations, expected):
    # Yu & Koltun 2016, figure 1: F_{i+1} has a (2^{i+2} - 1)^2 field.
    assert (
        receptive_field([conv(d) for d in dilations]) == expected == 2 ** (len(dilations) + 1) - 1
    )


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_plain_stack_grows_linearly(depth):
    assert receptive_field([conv() for _ in range(depth)]) == 2 * depth + 1


def test_sequential_and_list_agree_and_strides_multiply_later_growth():
    layers = [conv(stride=2), keras.layers.MaxPooling2D(2), conv(dilation=2), conv()]
    # 3; pooling +1*2 = 5 at jump 4; dilated 3x3 +4*4 = 21; 3x3 +2*4 = 29.
    assert receptive_field(layers) == 29
    assert receptive_field(keras.Sequential(layers)) == 29


def test_each_axis_is_tracked_and_reported_when_they_differ():
    layers = [keras.layers.Conv2D(2, (1, 5)), keras.layers.Conv2D(2, 3, dilation_rate=(2, 1))]
    assert receptive_field(layers) == (5, 7)


def test_global_pooling_sees_everything():
    assert receptive_field([conv(), keras.layers.GlobalAveragePooling2D()]) == math.inf


def test_unknown_and_upsampling_layers_are_refused_with_the_layer_named():
    with pytest.raises(TypeError, match="up_x2.*UpSampling2D"):
        receptive_field([conv(), keras.layers.UpSampling2D(name="up_x2")])
    with pytest.raises(TypeError, match="model_or_layers"):
        receptive_field("conv")


def test_vgg16_pool5_field_is_212():
    # The widely quoted theoretical field of VGG16's last pooling layer (e.g. Araujo et al.
    # 2019, Distill, table of receptive fields).
    vgg16 = keras.applications.VGG16(weights=None, include_top=False)
    assert receptive_field(vgg16) == 212
    assert receptive_field(vgg16, output="block5_pool") == 212
    # conv1 5, pool1 6, conv2 14, pool2 16, conv3 40, pool3 44, conv4 92, pool4 100.
    assert receptive_field(vgg16, output="block4_pool") == 100


def test_branches_take_the_widest_path_and_keep_the_jump_that_later_wins():
    image = keras.Input((None, None, 1))
    wide = conv(dilation=4)(conv()(image))  # field 11, jump 1
    strided = conv(stride=2)(image)  # field 3, jump 2
    merged = keras.layers.Concatenate()([wide, strided])
    model = keras.Model(image, merged)
    assert receptive_field(model) == 11
    # A following 5x5 adds 4 * jump: 11 + 4 = 15 on the wide path, 3 + 8 = 11 on the strided.
    head = keras.layers.Conv2D(1, 5, padding="same")
    assert receptive_field(keras.Model(image, head(merged))) == 15
    deeper = keras.Model(image, conv(kernel=9)(conv(kernel=9)(merged)))
    # Two 9x9: wide 11 + 8 + 8 = 27, strided 3 + 16 + 16 = 35; the narrower path wins.
    assert receptive_field(deeper) == 35


def test_output_selects_a_dict_key_of_a_nested_backbone_and_dilation_keeps_the_field():
    from kseg.backbones import get_backbone

    # Tiny stage n: a stride-2 3x3 (+2 * jump), then a 3x3 at twice the jump (+4 * jump).
    # Stage 1: 3, 7; stage 2: 11, 19; stage 3: 27, 43; stage 4: 59, 91; stage 5: 123, 187.
    strided = get_backbone("tiny")
    assert receptive_field(strided, output="P3") == 43
    assert receptive_field(strided, output="P5") == receptive_field(strided) == 187
    # Atrous conversion trades stride for dilation and keeps the field (Chen et al. 2017).
    dense = get_backbone("tiny", output_stride=8)
    image = keras.Input((None, None, 3))
    model = keras.Model(image, dense(image)["P3"])
    assert receptive_field(model) == receptive_field(dense, output="P3") == 187
    with pytest.raises(ValueError, match="output keys"):
        receptive_field(dense, output="P9")


def empirical_field(model, size):
    """Extent of the input pixels whose gradient reaches the centre output pixel."""
    image = tf.constant(np.random.default_rng(0).uniform(0.5, 1.0, (1, size, size, 1)), "float32")
    with tf.GradientTape() as tape:
        tape.watch(image)
        output = model(image)
        centre_y, centre_x = output.shape[1] // 2, output.shape[2] // 2
        value = tf.reduce_sum(output[0, centre_y, centre_x])
    gradient = np.abs(tape.gradient(value, image).numpy()[0, ..., 0])
    rows = np.flatnonzero(gradient.sum(axis=1) > 0)
    cols = np.flatnonzero(gradient.sum(axis=0) > 0)
    assert rows[0] > 0 and cols[0] > 0, "the field touches the border: use a larger input"
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def positive_linear_model(build):
    """A network of strictly positive kernels and no activation, so no gradient cancels."""
    keras.utils.set_random_seed(0)
    image = keras.Input((None, None, 1))
    model = keras.Model(image, build(image))
    for weight in model.weights:
        weight.assign(np.random.default_rng(1).uniform(0.1, 1.0, weight.shape))
    return model


def test_field_matches_the_gradient_of_a_strided_dilated_network():
    def build(x):
        x = keras.layers.Conv2D(2, 3, strides=2, padding="same")(x)
        x = keras.layers.Conv2D(2, 3, dilation_rate=2, padding="same")(x)
        x = keras.layers.AveragePooling2D(2)(x)
        x = keras.layers.DepthwiseConv2D(3, dilation_rate=3, padding="same")(x)
        return keras.layers.Conv2D(1, (5, 3), padding="same")(x)

    model = positive_linear_model(build)
    expected = receptive_field(model)
    # 3; +2*2*2 = 11 (jump 2); pool +1*2 = 13 (jump 4); +6*4 = 37; then (+4*4, +2*4).
    assert expected == (53, 45)
    assert empirical_field(model, 96) == expected


def test_field_matches_the_gradient_of_a_branched_network():
    def build(x):
        x = keras.layers.Conv2D(2, 3, strides=2, padding="same")(x)
        context = keras.layers.Conv2D(2, 3, dilation_rate=4, padding="same")(x)
        context = keras.layers.Conv2D(2, 3, dilation_rate=2, padding="same")(context)
        local = keras.layers.Conv2D(2, 1)(x)
        return keras.layers.Add()([context, local])

    model = positive_linear_model(build)
    # 3; dilation 4 at jump 2: +16 = 19; dilation 2: +8 = 27.
    assert receptive_field(model) == 27
    assert empirical_field(model, 64) == (27, 27)
