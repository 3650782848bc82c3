"""keras-segmentation (divamgupta, PyPI `keras-segmentation` 0.3.0) as the FCN and PSPNet peer.

It is the packaged Keras FCN-8s on VGG16 (`fcn_8_vgg`): fc6 7x7 and fc7 1x1 with
4096 channels, score layers on pool3/pool4, learned transposed convolutions
(4x4 stride 2 twice, 16x16 stride 8), crop-and-sum fusion. Unlike the paper it
omits the 100 px input padding (fc6 is same-padded), so its conv body sees the
raw image only, and its output is 8 px larger than the input; the labels match
its output. The package imports Keras 2 as `keras`, so this module points
`keras` at tf-keras before importing it; it is installed with `--no-deps`
(its pins, h5py<=2.10 and imgaug 0.2.9, do not build on Python 3.11) plus tqdm
and opencv-python-headless. `fcn_8` gets the VGG encoder with
`pretrained=None`, since the default downloads ImageNet weights. The model's
softmax is dropped so the loss sees logits as kseg's does.

Its `pspnet_50` is the port of the authors' Caffe PSPNet (dilated ResNet-50
with the three-conv stem, output stride 8, pyramid bins 1/2/3/6 with 512
channels each, 3x3 conv to 512, no auxiliary head); its pooling sizes are
fixed for 473x473 and 713x713 inputs only.
"""

import functools
import importlib.metadata
import sys

import tf_keras

sys.modules["keras"] = tf_keras
for _name in ("models", "layers", "backend", "utils", "callbacks", "losses", "optimizers"):
    sys.modules[f"keras.{_name}"] = getattr(tf_keras, _name)

# The PSPNet module still imports the Keras 1/2.0 module path of the merge layers.
sys.modules["keras.layers.merge"] = tf_keras.layers

from keras_segmentation.models.fcn import fcn_8  # noqa: E402
from keras_segmentation.models.pspnet import pspnet_50  # noqa: E402
from keras_segmentation.models.vgg16 import get_vgg_encoder  # noqa: E402


def _fcn8s(height, width, num_classes):
    model = fcn_8(
        num_classes,
        encoder=functools.partial(get_vgg_encoder, pretrained=None),
        input_height=height,
        input_width=width,
    )
    # The last layer is the softmax over the (H*W, K) reshape; its input is the logits.
    logits = tf_keras.Model(model.input, model.layers[-2].output, name="fcn_8_vgg_logits")
    return logits, "keras_segmentation.models.fcn.fcn_8(encoder=get_vgg_encoder(pretrained=None))"


def _pspnet_473(height, width, num_classes):
    model = pspnet_50(num_classes, input_height=height, input_width=width)
    logits = tf_keras.Model(model.input, model.layers[-2].output, name="pspnet_50_logits")
    return logits, "keras_segmentation.models.pspnet.pspnet_50"


CASES = {"fcn8s": _fcn8s, "pspnet_473": _pspnet_473}


def build(case, height, width, num_classes):
    model, description = CASES[case](height, width, num_classes)
    return {
        "model": model,
        "keras": tf_keras,
        "label_shape": tuple(int(d) for d in model.output_shape[1:-1]),
        "description": description,
        "library": "keras_segmentation",
        "versions": {
            "keras-segmentation": importlib.metadata.version("keras-segmentation"),
            "tf-keras": importlib.metadata.version("tf-keras"),
        },
    }
