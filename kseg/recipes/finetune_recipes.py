"""Each registered model's `finetune` recipe: a short run from ImageNet weights on 2 CPU cores.

The one ImageNet backbone kseg can load offline is the MobileNetV2 (width 0.35) file it ships
(`kseg.backbones.bundled_weights_path`), so models that take any backbone fine-tune from it;
models tied to their own encoder (FCN-AlexNet, SegNet, SegNet-Basic, U-Net) start from random
weights (`backbone_weights` None) and say so. Each entry is one block, to be retuned in place;
`source` says where its values were measured.
"""

from kseg.recipes.recipe import Recipe

# The shared CamVid benchmark recipe (benchmarks/camvid_recipe.py, camvid_context_family.py):
# MobileNetV2-0.35 from the bundled ImageNet file, CamVid at 192x256, Adam 1e-3 under poly decay,
# batch-norm momentum 0.9, batch 8, 6 epochs of one pass.
_MOBILENET = {"backbone": "mobilenetv2", "alpha": 0.35, "backbone_weights": "imagenet"}
_CONTEXT_FAMILY = (
    "measured on CamVid train -> val at 192x256 by benchmarks/camvid_context_family.py "
    "(2 CPU cores): val mIoU {miou} after 6 epochs ({minutes} min)"
)

FINETUNE_RECIPES = (
    Recipe(
        model="deeplabv3plus",
        purpose="finetune",
        model_args={"backbone": "mobilenetv2", "alpha": 0.35, "backbone_weights": "imagenet"},
        optimizer="adam",
        learning_rate=1e-3,
        schedule="poly",
        warmup_steps=0,
        weight_decay=None,
        batchnorm_momentum=0.9,
        batch_size=8,
        # Images at 288x384, trained on 192x256 crops: thin classes (poles, signs) keep pixels
        # while a step costs what a 192x256 image does.
        crop_size=(192, 256),
        resize=(288, 384),
        scale_range=(0.75, 1.5),
        flip=True,
        jitter=False,
        epochs=18,
        steps_per_epoch=None,
        loss="ce",
        class_weighting="sqrt_median_frequency",
        source="tuned on CamVid (2 CPU cores) training on the first 300 training images and "
        "scoring the last 67, 340-900 steps each: square-root median-frequency weights 0.489 "
        "against 0.466 unweighted and 0.443 fully weighted; 288x384 images with 192x256 crops "
        "0.539 against 0.513 for 192x256 images; the val figure is in "
        "benchmarks/results/recipe_results.json",
    ),
    Recipe(
        model="deeplabv3",
        purpose="finetune",
        model_args=dict(_MOBILENET),
        optimizer="adam",
        learning_rate=1e-3,
        batchnorm_momentum=0.9,
        batch_size=8,
        crop_size=(192, 256),
        resize=(192, 256),
        scale_range=(0.75, 1.5),
        flip=True,
        jitter=False,
        epochs=6,
        source=_CONTEXT_FAMILY.format(miou="0.423", minutes=38),
    ),
    Recipe(
        model="lraspp",
        purpose="finetune",
        model_args=dict(_MOBILENET),
        optimizer="adam",
        learning_rate=1e-3,
        batchnorm_momentum=0.9,
        batch_size=8,
        crop_size=(192, 256),
        resize=(192, 256),
        scale_range=(0.75, 1.5),
        flip=True,
        jitter=False,
        epochs=6,
        source="not measured yet: the shared CamVid settings of the deeplabv3 finetune recipe "
        "(benchmarks/camvid_context_family.py) on the bundled MobileNetV2-0.35; kseg has not "
        "run LR-ASPP with them",
    ),
    Recipe(
        model="deeplabv2",
        purpose="finetune",
        model_args={**_MOBILENET, "input_scales": (1.0, 0.75, 0.5)},
        optimizer="adam",
        learning_rate=1e-3,
        batchnorm_momentum=0.9,
        batch_size=8,
        crop_size=(192, 256),
        resize=(192, 256),
        scale_range=(0.75, 1.5),
        flip=True,
        jitter=False,
        epochs=6,
        source=_CONTEXT_FAMILY.format(miou="0.393", minutes=26),
    ),
    Recipe(
        model="deeplabv1",
        purpose="finetune",
        model_args=dict(_MOBILENET),
        optimizer="adam",
        learning_rate=1e-3,
        batchnorm_momentum=0.9,
        batch_size=8,
        crop_size=(192, 256),
        resize=(192, 256),
        scale_range=(0.75, 1.5),
        flip=True,
        jitter=False,
        epochs=6,
        source=_CONTEXT_FAMILY.format(miou="0.383", minutes=44),
    ),
    Recipe(
        model="pspnet",
        purpose="finetune",
        model_args={**_MOBILENET, "auxiliary_loss_weight": 0.4},
        optimizer="adam",
        learning_rate=1e-3,
        batchnorm_momentum=0.9,
        batch_size=8,
        crop_size=(192, 256),
        resize=(192, 256),
        scale_range=(0.75, 1.5),
        flip=True,
        jitter=False,
        epochs=6,
        source=_CONTEXT_FAMILY.format(miou="0.424", minutes=25),
    ),
    Recipe(
        model="refinenet",
        purpose="finetune",
        model_args=dict(_MOBILENET),
        optimizer="adam",
        learning_rate=1e-3,
        # Adam's first step over RefineNet's BN-free decoder blew the loss up (issue 4): a
        # one-epoch (45-step) warm-up keeps it stable.
        warmup_steps=45,
        batchnorm_momentum=0.9,
        batch_size=8,
        crop_size=(192, 256),
        resize=(192, 256),
        scale_range=(0.75, 1.5),
        flip=True,
        jitter=False,
        epochs=6,
        source=_CONTEXT_FAMILY.format(miou="0.439", minutes=66),
    ),
    Recipe(
        model="dilatednet",
        purpose="finetune",
        # The paper's 4096-channel head does not fit a CPU run; 512 channels as measured.
        model_args={**_MOBILENET, "num_filters": 512},
        optimizer="adam",
        learning_rate=1e-3,
        batchnorm_momentum=0.9,
        batch_size=8,
        crop_size=(192, 256),
        resize=(192, 256),
        scale_range=(0.75, 1.5),
        flip=True,
        jitter=False,
        epochs=6,
        source=_CONTEXT_FAMILY.format(miou="0.314", minutes=57),
    ),
    Recipe(
        model="fcn8s",
        purpose="finetune",
        # fc6/fc7 at 512 channels: the paper's 4096 over MobileNetV2 make 274M parameters.
        model_args={**_MOBILENET, "num_filters": 512},
        optimizer="adam",
        learning_rate=1e-3,
        batchnorm_momentum=0.9,
        batch_size=8,
        crop_size=(192, 256),
        resize=(192, 256),
        scale_range=(0.75, 1.5),
        flip=True,
        jitter=False,
        epochs=6,
        source="the CamVid benchmark recipe of the DeepLab family (benchmarks/camvid_recipe.py) "
        "applied to FCN-8s on the same backbone; not measured for FCN",
    ),
    Recipe(
        model="fcn16s",
        purpose="finetune",
        # fc6/fc7 at 512 channels: the paper's 4096 over MobileNetV2 make 274M parameters.
        model_args={**_MOBILENET, "num_filters": 512},
        optimizer="adam",
        learning_rate=1e-3,
        batchnorm_momentum=0.9,
        batch_size=8,
        crop_size=(192, 256),
        resize=(192, 256),
        scale_range=(0.75, 1.5),
        flip=True,
        jitter=False,
        epochs=6,
        source="the CamVid benchmark recipe of the DeepLab family (benchmarks/camvid_recipe.py) "
        "applied to FCN-16s on the same backbone; not measured for FCN",
    ),
    Recipe(
        model="fcn32s",
        purpose="finetune",
        # fc6/fc7 at 512 channels: the paper's 4096 over MobileNetV2 make 274M parameters.
        model_args={**_MOBILENET, "num_filters": 512},
        optimizer="adam",
        learning_rate=1e-3,
        batchnorm_momentum=0.9,
        batch_size=8,
        crop_size=(192, 256),
        resize=(192, 256),
        scale_range=(0.75, 1.5),
        flip=True,
        jitter=False,
        epochs=6,
        source="the CamVid benchmark recipe of the DeepLab family (benchmarks/camvid_recipe.py) "
        "applied to FCN-32s on the same backbone; not measured for FCN",
    ),
    Recipe(
        model="fcn_alexnet",
        purpose="finetune",
        # FCN-AlexNet builds its own AlexNet encoder; kseg has no AlexNet ImageNet file offline.
        model_args={},
        optimizer="adam",
        learning_rate=1e-3,
        batch_size=8,
        crop_size=(192, 256),
        resize=(192, 256),
        scale_range=(0.75, 1.5),
        flip=True,
        jitter=False,
        epochs=6,
        source="the CamVid benchmark recipe (benchmarks/camvid_recipe.py) from random weights: "
        "no ImageNet AlexNet kseg can load offline; not measured",
    ),
    Recipe(
        model="segnet_basic",
        purpose="finetune",
        # SegNet-Basic has no pretrained encoder: trained from scratch, as in the paper.
        model_args={},
        optimizer="adam",
        learning_rate=1e-3,
        # Poly decay rather than the example's constant rate: at a constant 1e-3 the validation
        # mIoU swung 0.23 -> 0.14 between the last two of 4 epochs.
        schedule="poly",
        batch_size=4,
        crop_size=(180, 240),
        resize=(180, 240),
        scale_range=None,
        flip=True,
        jitter=False,
        # Keras's default 0.99 leaves the moving statistics far from the data after a few hundred
        # steps: validation mIoU 0.114 against 0.257 in training after these 4 epochs.
        batchnorm_momentum=0.9,
        epochs=5,
        class_weighting="median_frequency",
        source="examples/segnet_basic_camvid.py's settings on CamVid at 180x240 (val mIoU 0.481 "
        "after 16 epochs, about 2 hours on 2 shared cores: "
        "benchmarks/results/segnet_basic_camvid.json) cut to 5 epochs under poly decay, about "
        "9 minutes; its measured figure is in benchmarks/results/recipe_results.json",
    ),
    Recipe(
        model="segnet",
        purpose="finetune",
        # No ImageNet VGG16-BN file kseg can load offline: random weights.
        model_args={"backbone_weights": None},
        optimizer="adam",
        learning_rate=1e-3,
        schedule="constant",
        batch_size=4,
        crop_size=(180, 240),
        resize=(180, 240),
        scale_range=None,
        flip=True,
        jitter=False,
        epochs=40,
        class_weighting="median_frequency",
        source="the SegNet-Basic CamVid recipe (examples/segnet_basic_camvid.py) applied to "
        "SegNet from random weights: no ImageNet VGG16-BN kseg can load offline; not measured",
    ),
    Recipe(
        model="unet",
        purpose="finetune",
        # The plain U-Net has no pretrained encoder; padded so outputs match the input size.
        model_args={"padding": "same"},
        optimizer="adam",
        learning_rate=1e-4,
        batch_size=1,
        crop_size=(252, 252),
        scale_range=(0.8, 1.25),
        flip=True,
        jitter=False,
        epochs=15,
        steps_per_epoch=50,
        source="examples/unet_isbi.py's settings on the ISBI 2012 slices (Adam 1e-4, one "
        "252-pixel tile per step, 50 steps an epoch), padded, for 15 epochs; random weights: "
        "the plain U-Net has no ImageNet encoder; its measured figure is in "
        "benchmarks/results/recipe_results.json",
    ),
    Recipe(
        model="mask_rcnn",
        purpose="finetune",
        # examples/mask_rcnn_shapes.py's model: MobileNetV2-0.35 from the bundled ImageNet file
        # under a 128-channel FPN and heads, proposals and detections cut to a CPU's budget.
        model_args={
            "backbone": "mobilenetv2",
            "alpha": 0.35,
            "backbone_weights": "imagenet",
            "fpn_channels": 128,
            "box_fc_units": 512,
            "mask_channels": 128,
            "anchor_sizes": (16, 32, 64, 128, 256),
            "roi_batch_size": 128,
            "rpn_train_nms": (1000, 500),
            "rpn_test_nms": (500, 100),
            "detections_per_image": 20,
        },
        optimizer="adam",
        learning_rate=3e-4,
        warmup_steps=0,
        batch_size=4,
        crop_size=None,
        scale_range=None,
        flip=False,
        jitter=False,
        epochs=3,
        source="examples/mask_rcnn_shapes.py's model and optimizer (Adam 3e-4, batch 4; mask AP "
        "0.87 on shapes after 2,400 steps, benchmarks/results/mask_rcnn_shapes.json) cut to "
        "3 passes over 1,000 shapes images; its measured figure is in "
        "benchmarks/results/recipe_results.json",
    ),
)
"""The `finetune` recipe of every registered model."""
