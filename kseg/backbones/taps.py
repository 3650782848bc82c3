"""Which layer of each backbone gives the feature map at each stride.

A tap is the deepest tensor a network computes at a given stride, keyed `"P{n}"` for stride
2**n: the block output just before the next downsampling step, the place where FPN (Lin et
al., 2017), U-Net-style decoders and DeepLabv3+ (Chen et al., 2018) read their skip features.
Where a network downsamples inside a block (MobileNetV2 and EfficientNet downsample in the
depthwise convolution of an inverted residual, ResNetV2 in the last unit of each stack) the tap
is the last tensor still at the finer stride. The keys here are the strides of the standard
stride-32 network; `kseg.backbones.get_backbone` re-derives every stride from the graph, so a
dilated backbone keys its taps by the strides they really have.
"""

import math

from kseg.backbones.mobilenet_v3 import mobilenet_v3_taps
from kseg.backbones.resnet import BOTTLENECK_UNITS, resnet_taps

# EfficientNet-B0 repeats per stage and the depth coefficient of each variant (Tan & Le, 2019,
# Table 1 and section 3.3), as keras.applications.efficientnet builds them.
_EFFICIENTNET_B0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_EFFICIENTNET_DEPTH = {0: 1.0, 1: 1.1, 2: 1.2, 3: 1.4, 4: 1.8, 5: 2.2, 6: 2.6, 7: 3.1}


def _resnet_taps(depth, version=1):
    units = BOTTLENECK_UNITS[depth]
    # ResNetV2 strides in the last unit of stages 2-4, so the unit before it is the last one
    # at the finer stride; its stem has no normalisation before the max pool, and its last
    # stage ends in a post-activation.
    last_at_stride = [count - (version == 2) for count in units[:3]]
    return {
        "P1": "conv1_relu" if version == 1 else "conv1_conv",
        **{f"P{stage}": f"conv{stage}_block{last_at_stride[stage - 2]}_out" for stage in (2, 3, 4)},
        "P5": f"conv5_block{units[3]}_out" if version == 1 else "post_relu",
    }


def _efficientnet_taps(variant):
    repeats = [math.ceil(_EFFICIENTNET_DEPTH[variant] * r) for r in _EFFICIENTNET_B0_REPEATS]

    def last_block_output(stage):
        count = repeats[stage - 1]
        if count == 1:
            # A single block has no residual add; its output is the projection's BN.
            return f"block{stage}a_project_bn"
        return f"block{stage}{chr(ord('a') + count - 1)}_add"

    # Stages 2, 3, 4 and 6 start with a stride-2 block; stage 5 keeps stride 16.
    return {
        "P1": last_block_output(1),
        "P2": last_block_output(2),
        "P3": last_block_output(3),
        "P4": last_block_output(5),
        "P5": "top_activation",
    }


TAPS = {
    "vgg16": {
        "P1": "block1_pool",
        "P2": "block2_pool",
        "P3": "block3_pool",
        "P4": "block4_pool",
        "P5": "block5_pool",
    },
    **{f"resnet{depth}": _resnet_taps(depth) for depth in BOTTLENECK_UNITS},
    **{f"resnet{depth}v2": _resnet_taps(depth, version=2) for depth in BOTTLENECK_UNITS},
    **{f"resnet{depth}_v1.5": resnet_taps(depth) for depth in BOTTLENECK_UNITS},
    "mobilenet_v3_large": mobilenet_v3_taps(),
    # keras.applications.Xception leaves its residual adds unnamed, so the taps are the
    # named activations that read those adds.
    "xception": {
        "P1": "block1_conv2_act",
        "P2": "block3_sepconv1_act",
        "P3": "block4_sepconv1_act",
        "P4": "block13_sepconv1_act",
        "P5": "block14_sepconv2_act",
    },
    "mobilenet": {
        "P1": "conv_pw_1_relu",
        "P2": "conv_pw_3_relu",
        "P3": "conv_pw_5_relu",
        "P4": "conv_pw_11_relu",
        "P5": "conv_pw_13_relu",
    },
    # The expansion output feeding each stride-2 depthwise convolution: the widest tensor at
    # the finer stride, the tap DeepLabv3+ uses for its MobileNetV2 decoder.
    "mobilenetv2": {
        "P1": "block_1_expand_relu",
        "P2": "block_3_expand_relu",
        "P3": "block_6_expand_relu",
        "P4": "block_13_expand_relu",
        "P5": "out_relu",
    },
    **{f"efficientnetb{variant}": _efficientnet_taps(variant) for variant in range(8)},
    "xception65": {
        "P1": "entry_flow_block1_sepconv2_pointwise_relu",
        "P2": "entry_flow_block2_sepconv2_pointwise_relu",
        "P3": "entry_flow_block3_sepconv2_pointwise_relu",
        "P4": "exit_flow_block1_sepconv2_pointwise_relu",
        "P5": "exit_flow_block2_sepconv3_pointwise_relu",
    },
    "tiny": {f"P{n}": f"stage{n}_conv2_relu" for n in range(1, 6)},
}
