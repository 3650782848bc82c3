"""Heads shared by the segmentation architectures, and the model class for deep supervision."""

import keras

from kseg.backbones.taps import TAPS
from kseg.layers import ConvBNReLU, ResizeToMatch


def logits_head(features, num_classes, image, *, name):
    """A 1x1 classifier followed by bilinear upsampling to the image size.

    The classifier keeps the compute dtype; the resize and therefore the
    model's output are float32 under any mixed policy, so losses and softmax
    see full-precision logits.

    Args:
        features: the decoder's last feature map `(B, h, w, C)`.
        num_classes: number of output channels.
        image: the model's input, whose height and width the logits take.
        name: prefix of the layer names (`{name}_classifier`, `{name}_upsample`).

    Returns:
        Logits `(B, H, W, num_classes)`, float32.

    Example:
        >>> import keras, kseg
        >>> image = keras.Input((None, None, 3))
        >>> feats = keras.layers.Conv2D(8, 3, strides=4, padding="same")(image)
        >>> kseg.models.heads.logits_head(feats, 5, image, name="demo").shape
        (None, None, None, 5)
    """
    if int(num_classes) <= 0:
        raise ValueError(
            f"num_classes must be a positive integer. Received: num_classes={num_classes}"
        )
    logits = keras.layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(features)
    return ResizeToMatch(name=f"{name}_upsample", dtype="float32")([logits, image])


def auxiliary_head(features, num_classes, image, *, filters=256, dropout=0.1, name):
    """A deep-supervision head: 3x3 conv + BN + ReLU, spatial dropout, then `logits_head`.

    PSPNet (Zhao et al. 2017, "Pyramid Scene Parsing Network", Sec. 3.4) supervises an
    intermediate stage (res4b22 of ResNet-101) with its own classifier during training, its
    loss weighted 0.4 against the main one; the public code sizes it as a 3x3 convolution to
    256 channels with batch normalisation and ReLU, dropout 0.1 and a 1x1 classifier. The
    head is dropped at inference.

    Args:
        features: the intermediate feature map `(B, h, w, C)`.
        num_classes: number of output channels.
        image: the model's input, whose height and width the logits take.
        filters: channels of the 3x3 convolution.
        dropout: spatial dropout rate before the classifier.
        name: prefix of the layer names (`{name}_conv`, `{name}_dropout`,
            `{name}_classifier`, `{name}_upsample`).

    Returns:
        Logits `(B, H, W, num_classes)`, float32.

    Example:
        >>> import keras, kseg
        >>> image = keras.Input((None, None, 3))
        >>> feats = keras.layers.Conv2D(8, 3, strides=8, padding="same")(image)
        >>> kseg.models.heads.auxiliary_head(feats, 5, image, filters=4, name="aux").shape
        (None, None, None, 5)
    """
    if int(filters) <= 0:
        raise ValueError(f"filters must be a positive integer. Received: filters={filters}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
    x = ConvBNReLU(int(filters), 3, name=f"{name}_conv")(features)
    x = keras.layers.SpatialDropout2D(float(dropout), name=f"{name}_dropout")(x)
    return logits_head(x, num_classes, image, name=name)


MAIN_OUTPUT = "logits"
AUXILIARY_OUTPUT = "auxiliary_logits"


@keras.saving.register_keras_serializable(package="kseg")
class DeepSupervisionModel(keras.Model):
    """A functional model with a training-only auxiliary output whose loss is weighted.

    Deep supervision (Lee et al. 2015, "Deeply-Supervised Nets"; PSPNet's auxiliary loss,
    Zhao et al. 2017, Sec. 3.4) trains an intermediate stage with its own classifier. The
    graph returns `{"logits": ..., "auxiliary_logits": ...}`; calling the model returns the
    dict only with `training=True` and the main logits otherwise, so `predict`, `evaluate`,
    metrics and SavedModel export see one tensor. During `fit` the compiled loss is applied
    to both and summed as `main + auxiliary_loss_weight * auxiliary`.

    Args:
        inputs: the functional inputs.
        outputs: a dict with the keys "logits" and "auxiliary_logits".
        auxiliary_loss_weight: weight of the auxiliary loss (0.4 in PSPNet).
        **kwargs: standard functional `keras.Model` arguments (`name`, `trainable`).

    Returns:
        A model whose inference output is the "logits" tensor.

    Example:
        >>> import keras, kseg
        >>> from kseg.models.heads import DeepSupervisionModel
        >>> image = keras.Input((None, None, 3))
        >>> mid = keras.layers.Conv2D(4, 3, padding="same")(image)
        >>> outputs = {"logits": keras.layers.Conv2D(2, 1)(mid),
        ...            "auxiliary_logits": keras.layers.Conv2D(2, 1)(mid)}
        >>> model = DeepSupervisionModel(image, outputs, auxiliary_loss_weight=0.4)
        >>> model.output.shape
        (None, None, None, 2)
    """

    def __init__(self, *args, auxiliary_loss_weight=0.4, **kwargs):
        super().__init__(*args, **kwargs)
        outputs = self._outputs_struct
        if not isinstance(outputs, dict) or set(outputs) != {MAIN_OUTPUT, AUXILIARY_OUTPUT}:
            raise ValueError(
                f"outputs must be a dict with the keys {MAIN_OUTPUT!r} and {AUXILIARY_OUTPUT!r}. "
                f"Received: outputs={outputs}"
            )
        if float(auxiliary_loss_weight) < 0:
            raise ValueError(
                "auxiliary_loss_weight must be non-negative. "
                f"Received: auxiliary_loss_weight={auxiliary_loss_weight}"
            )
        self.auxiliary_loss_weight = float(auxiliary_loss_weight)

    @property
    def output(self):
        """The inference output, the main logits (the auxiliary one is `auxiliary_output`)."""
        return self._outputs_struct[MAIN_OUTPUT]

    @property
    def auxiliary_output(self):
        """The symbolic auxiliary logits of the graph."""
        return self._outputs_struct[AUXILIARY_OUTPUT]

    def call(self, inputs, training=None, mask=None, **kwargs):
        outputs = super().call(inputs, training=training, mask=mask, **kwargs)
        return outputs if training else outputs[MAIN_OUTPUT]

    def compute_output_spec(self, inputs, training=None, mask=None):
        outputs = super().compute_output_spec(inputs, training=training, mask=mask)
        return outputs if training else outputs[MAIN_OUTPUT]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, dict):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        # The parent adds the regularisation losses once, with the main loss.
        loss = super().compute_loss(x, y, y_pred[MAIN_OUTPUT], sample_weight, training=training)
        if self._compile_loss is not None and self.auxiliary_loss_weight > 0:
            auxiliary = self._compile_loss(y, y_pred[AUXILIARY_OUTPUT], sample_weight)
            if auxiliary is not None:
                loss = loss + self.auxiliary_loss_weight * keras.ops.cast(auxiliary, loss.dtype)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, dict):
            y_pred = y_pred[MAIN_OUTPUT]
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config["auxiliary_loss_weight"] = self.auxiliary_loss_weight
        return config


def with_auxiliary_tap(encoder, backbone, auxiliary_layer, deepest_key):
    """The backbone re-tapped for deep supervision: `{"context": deepest, "auxiliary": ...}`.

    Args:
        encoder: the backbone model.
        backbone: the backbone's registered name (for the default layer), or a model.
        auxiliary_layer: the backbone layer whose output the auxiliary head reads; None: the
            registered stride-16 tap of the undilated network ("P4": res4 of a ResNet).
        deepest_key: the key of the backbone's output the main head reads.

    Returns:
        A `keras.Model` on the backbone's input with outputs "context" and "auxiliary".

    Raises:
        ValueError: no default layer for a prebuilt backbone, or no layer of that name.

    Example:
        >>> encoder = kseg.backbones.get_backbone("resnet50_v1.5", base_channels=2)
        >>> tapped = kseg.models.heads.with_auxiliary_tap(encoder, "resnet50_v1.5", None, "P5")
        >>> sorted(tapped.output), tapped.output["auxiliary"].shape[-1]
        (['auxiliary', 'context'], 32)
    """
    if auxiliary_layer is None:
        if not isinstance(backbone, str) or backbone.lower() not in TAPS:
            raise ValueError(
                "auxiliary_layer must name the backbone layer the auxiliary head reads when the "
                "backbone is a prebuilt model. "
                f"Received: backbone={getattr(backbone, 'name', backbone)!r}"
            )
        auxiliary_layer = TAPS[backbone.lower()]["P4"]
    try:
        auxiliary = encoder.get_layer(auxiliary_layer).output
    except ValueError:
        raise ValueError(
            f"backbone {encoder.name!r} has no layer named {auxiliary_layer!r}. "
            f"Received: auxiliary_layer={auxiliary_layer!r}"
        ) from None
    outputs = {"context": encoder.output[deepest_key], "auxiliary": auxiliary}
    return keras.Model(encoder.input, outputs, name=encoder.name)


def check_auxiliary_loss_weight(auxiliary_loss_weight):
    """The weight as a float, refusing a negative one."""
    if float(auxiliary_loss_weight) < 0:
        raise ValueError(
            "auxiliary_loss_weight must be non-negative. "
            f"Received: auxiliary_loss_weight={auxiliary_loss_weight}"
        )
    return float(auxiliary_loss_weight)


def supervised_model(
    image, logits, auxiliary_features, num_classes, *, weight, filters, dropout, name
):
    """The model of `logits`, with an `auxiliary_head` on `auxiliary_features` when weighted.

    Args:
        image: the model's input.
        logits: the main logits.
        auxiliary_features: the intermediate features, or None when `weight` is 0.
        num_classes: classes of the auxiliary classifier.
        weight: the auxiliary loss weight; 0 gives a plain functional model.
        filters: channels of the auxiliary 3x3 convolution.
        dropout: the auxiliary head's dropout.
        name: the model's name.

    Returns:
        A `DeepSupervisionModel`, or a `keras.Model` when `weight` is 0.

    Example:
        >>> image = keras.Input((None, None, 3))
        >>> mid = keras.layers.Conv2D(4, 3, strides=4, padding="same")(image)
        >>> logits = kseg.models.heads.logits_head(mid, 2, image, name="logits")
        >>> model = kseg.models.heads.supervised_model(
        ...     image, logits, mid, 2, weight=0.5, filters=4, dropout=0.1, name="demo")
        >>> type(model).__name__, model.auxiliary_loss_weight
        ('DeepSupervisionModel', 0.5)
    """
    if weight == 0:
        return keras.Model(image, logits, name=name)
    auxiliary = auxiliary_head(
        auxiliary_features, num_classes, image, filters=filters, dropout=dropout, name="auxiliary"
    )
    return DeepSupervisionModel(
        image,
        {MAIN_OUTPUT: logits, AUXILIARY_OUTPUT: auxiliary},
        auxiliary_loss_weight=weight,
        name=name,
    )
