"""Each registered model's `paper` recipe: the training settings its paper reports, cited.

Values a paper does not state are marked in `source` with where kseg's value comes from.
kseg has no step decay: papers that divide the learning rate by 10 at set iterations get the
poly decay here, as said in their `source`. Run lengths of N iterations are written as
`epochs=N // 1000, steps_per_epoch=1000`.
"""

from kseg.recipes.recipe import Recipe

_FCN_SOURCE = (
    "Long, Shelhamer & Darrell, CVPR 2015, sec. 4.3: SGD with momentum 0.9, minibatch 20, fixed "
    "learning rate {rate} ({backbone}), weight decay 5e-4 (2e-4 also used); no class balancing; "
    "whole images, no crop or scale augmentation (crop here: the usual 500x500 VOC padding). "
    "The journal version (Shelhamer et al., TPAMI 2017) trains online with batch 1 and momentum "
    "0.99 instead. Run length: the paper gives days on a GPU, not epochs; 100 epochs is kseg's "
    "choice."
)


def _fcn(model, rate="1e-4", backbone="VGG16", learning_rate=1e-4):
    return Recipe(
        model=model,
        purpose="paper",
        model_args={"backbone": "vgg16", "backbone_weights": "imagenet"}
        if model != "fcn_alexnet"
        else {},
        optimizer="sgd",
        learning_rate=learning_rate,
        schedule="constant",
        weight_decay=5e-4,
        momentum=0.9,
        batch_size=20,
        crop_size=(500, 500),
        scale_range=None,
        flip=False,
        jitter=False,
        epochs=100,
        source=_FCN_SOURCE.format(rate=rate, backbone=backbone),
    )


_DEEPLAB_V3_SOURCE = (
    "Chen, Papandreou, Schroff & Adam 2017 (DeepLab v3), sec. 4.1: poly decay (power 0.9) from "
    "0.007, crop 513x513, batch 16, batch-norm decay 0.9997, output stride 16, 30K iterations, "
    "random scale 0.5-2 and left-right flip. Momentum 0.9 and weight decay 4e-5 are not in the "
    "paper: they are the released code's (tensorflow/models research/deeplab)."
)

PAPER_RECIPES = (
    _fcn("fcn32s"),
    _fcn("fcn16s"),
    _fcn("fcn8s"),
    _fcn("fcn_alexnet", rate="1e-3", backbone="AlexNet", learning_rate=1e-3),
    Recipe(
        model="unet",
        purpose="paper",
        model_args={"padding": "valid"},
        optimizer="sgd",
        learning_rate=0.01,
        schedule="constant",
        momentum=0.99,
        batch_size=1,
        crop_size=(572, 572),
        scale_range=None,
        flip=True,
        jitter=False,
        epochs=100,
        source="Ronneberger, Fischer & Brox, MICCAI 2015, sec. 3: SGD (Caffe), batches of a "
        "single 572x572 input tile, momentum 0.99; shifts, rotations, elastic deformations and "
        "a pixel-weight map (eq. 2; see kseg.data.unet_weight_map). The paper states no learning "
        "rate, weight decay or run length (10 hours on a GPU): 0.01 and 100 epochs are kseg's "
        "choice.",
    ),
    Recipe(
        model="segnet",
        purpose="paper",
        model_args={"backbone_weights": "imagenet"},
        optimizer="sgd",
        learning_rate=0.1,
        schedule="constant",
        momentum=0.9,
        batch_size=12,
        crop_size=(360, 480),
        resize=(360, 480),
        scale_range=None,
        flip=False,
        jitter=False,
        epochs=100,
        class_weighting="median_frequency",
        source="Badrinarayanan, Kendall & Cipolla, TPAMI 2017, sec. 3.3 (training): SGD with a "
        "fixed learning rate 0.1 and momentum 0.9, mini-batch 12, training-set shuffling, "
        "median frequency class balancing, CamVid at 360x480. The paper trains until the "
        "training loss converges and states no weight decay: 100 epochs is kseg's choice.",
    ),
    Recipe(
        model="segnet_basic",
        purpose="paper",
        optimizer="sgd",
        learning_rate=0.1,
        schedule="constant",
        momentum=0.9,
        batch_size=12,
        crop_size=(360, 480),
        resize=(360, 480),
        scale_range=None,
        flip=False,
        jitter=False,
        epochs=100,
        class_weighting="median_frequency",
        source="Badrinarayanan, Kendall & Cipolla, TPAMI 2017, sec. 3.3 and 4 (SegNet-Basic, "
        "trained from scratch): SGD, fixed learning rate 0.1, momentum 0.9, mini-batch 12, "
        "median frequency class balancing, CamVid at 360x480. Run length not stated: 100 "
        "epochs is kseg's choice.",
    ),
    Recipe(
        model="deeplabv1",
        purpose="paper",
        model_args={"backbone": "vgg16", "backbone_weights": "imagenet"},
        optimizer="sgd",
        learning_rate=1e-3,
        schedule="poly",
        weight_decay=5e-4,
        momentum=0.9,
        batch_size=20,
        crop_size=(321, 321),
        scale_range=None,
        flip=True,
        jitter=False,
        epochs=6,
        steps_per_epoch=1000,
        source="Chen, Papandreou, Kokkinos, Murphy & Yuille, ICLR 2015, sec. 4: SGD, mini-batch "
        "20, learning rate 1e-3 (x10 on the classifier) divided by 10 every 2000 iterations, "
        "momentum 0.9, weight decay 5e-4. kseg has no step decay: poly over 6000 iterations "
        "here. Crop 321 is the released models' (the v1 paper does not state it).",
    ),
    Recipe(
        model="deeplabv2",
        purpose="paper",
        model_args={"backbone": "resnet101", "backbone_weights": "imagenet", "output_stride": 8},
        optimizer="sgd",
        learning_rate=1e-3,
        schedule="poly",
        weight_decay=5e-4,
        momentum=0.9,
        batch_size=10,
        crop_size=(321, 321),
        scale_range=(0.5, 1.5),
        flip=True,
        jitter=False,
        epochs=20,
        steps_per_epoch=1000,
        source="Chen et al., TPAMI 2017 (DeepLab v2), sec. 4: poly decay (power 0.9) from 1e-3 "
        "(x10 on the classifier), momentum 0.9, weight decay 5e-4, batch 10, 20K iterations, "
        "321x321 crops, random scaling 0.5-1.5 (ResNet-101). Flip: kseg's choice.",
    ),
    Recipe(
        model="deeplabv3",
        purpose="paper",
        model_args={"backbone": "resnet101", "backbone_weights": "imagenet", "output_stride": 16},
        optimizer="sgd",
        learning_rate=0.007,
        schedule="poly",
        weight_decay=4e-5,
        momentum=0.9,
        batchnorm_momentum=0.9997,
        batch_size=16,
        crop_size=(513, 513),
        scale_range=(0.5, 2.0),
        flip=True,
        jitter=False,
        epochs=30,
        steps_per_epoch=1000,
        source=_DEEPLAB_V3_SOURCE,
    ),
    Recipe(
        model="lraspp",
        purpose="paper",
        model_args={"backbone": "mobilenet_v3_large", "output_stride": 16},
        optimizer="sgd",
        learning_rate=0.01,
        schedule="poly",
        weight_decay=1e-6,
        momentum=0.9,
        batch_size=32,
        crop_size=(480, 480),
        scale_range=(0.5, 2.0),
        flip=True,
        jitter=False,
        epochs=30,
        source="Howard et al. 2019 (MobileNetV3), sec. 6.4, describes the head but not its "
        "training; these are torchvision's references/segmentation settings that trained its "
        "lraspp_mobilenet_v3_large weights: SGD momentum 0.9, learning rate 0.01 with poly "
        "decay (power 0.9), weight decay 1e-6 (coupled, in torch's SGD), 8 GPUs x 4 images, 30 "
        "epochs, shorter side randomly resized to 0.5-2x 520 pixels, 480x480 crops, left-right "
        "flip. kseg has no ImageNet MobileNetV3 weights: backbone_weights stays None.",
    ),
    Recipe(
        model="deeplabv3plus",
        purpose="paper",
        model_args={
            "backbone": "xception65",
            "backbone_weights": "imagenet",
            "output_stride": 16,
        },
        optimizer="sgd",
        learning_rate=0.007,
        schedule="poly",
        weight_decay=4e-5,
        momentum=0.9,
        batchnorm_momentum=0.9997,
        batch_size=16,
        crop_size=(513, 513),
        scale_range=(0.5, 2.0),
        flip=True,
        jitter=False,
        epochs=30,
        steps_per_epoch=1000,
        source="Chen, Zhu, Papandreou, Schroff & Adam, ECCV 2018 (DeepLab v3+), sec. 4: the "
        "training protocol of DeepLab v3 (sec. 4.1 there): poly decay from 0.007, crop 513x513, "
        "batch 16, batch-norm decay 0.9997, output stride 16, 30K iterations, scale 0.5-2, "
        "flip. Momentum and weight decay are the released code's.",
    ),
    Recipe(
        model="pspnet",
        purpose="paper",
        model_args={
            "backbone": "resnet101",
            "backbone_weights": "imagenet",
            "auxiliary_loss_weight": 0.4,
        },
        optimizer="sgd",
        learning_rate=0.01,
        schedule="poly",
        weight_decay=1e-4,
        momentum=0.9,
        batch_size=16,
        crop_size=(473, 473),
        scale_range=(0.5, 2.0),
        flip=True,
        jitter=False,
        epochs=30,
        steps_per_epoch=1000,
        source="Zhao, Shi, Qi, Wang & Jia, CVPR 2017, sec. 5.1: poly decay (power 0.9) from "
        "0.01, momentum 0.9, weight decay 1e-4, batch 16, 30K iterations (PASCAL VOC), random "
        "mirror and resize 0.5-2 (also rotation and blur, not in kseg's pipeline), auxiliary "
        "loss weight 0.4 (sec. 4.3). Crop 473 is the released code's for VOC/ADE20K.",
    ),
    Recipe(
        model="refinenet",
        purpose="paper",
        model_args={"backbone": "resnet101", "backbone_weights": "imagenet"},
        optimizer="sgd",
        learning_rate=5e-4,
        schedule="constant",
        momentum=0.9,
        batch_size=1,
        crop_size=(400, 400),
        scale_range=(0.7, 1.3),
        flip=True,
        jitter=False,
        epochs=70,
        source="Lin, Milan, Shen & Reid, CVPR 2017, sec. 4: random scaling, cropping and "
        "flipping; the paper states no optimizer constants. These are the released code's "
        "(guosheng/refinenet demo_refinenet_train.m): fixed learning rate 5e-4 for about 70 "
        "epochs (then 5e-5), crop 400, one image per batch, MatConvNet's momentum 0.9. Scale "
        "range 0.7-1.3: kseg's choice.",
    ),
    Recipe(
        model="dilatednet",
        purpose="paper",
        model_args={"backbone": "vgg16", "backbone_weights": "imagenet"},
        optimizer="sgd",
        learning_rate=1e-3,
        schedule="constant",
        momentum=0.9,
        batch_size=14,
        crop_size=(500, 500),
        scale_range=None,
        flip=False,
        jitter=False,
        epochs=60,
        steps_per_epoch=1000,
        source="Yu & Koltun, ICLR 2016, sec. 4 (front end): SGD, mini-batch 14, learning rate "
        "1e-3, momentum 0.9, 60K iterations on PASCAL VOC; the context module is then trained "
        "on the front end's output (not modelled by one recipe). Crop 500x500: the padded VOC "
        "size of the released code, not checked against the paper.",
    ),
    Recipe(
        model="mask_rcnn",
        purpose="paper",
        model_args={"backbone": "resnet50", "backbone_weights": "imagenet"},
        optimizer="sgd",
        learning_rate=0.02,
        schedule="poly",
        warmup_steps=500,
        weight_decay=1e-4,
        momentum=0.9,
        batch_size=16,
        crop_size=None,
        scale_range=None,
        flip=True,
        jitter=False,
        epochs=16,
        steps_per_epoch=10000,
        source="He, Gkioxari, Dollar & Girshick, ICCV 2017, sec. 3.1: SGD, 16 images per "
        "mini-batch (8 GPUs), learning rate 0.02 divided by 10 at 120K of 160K iterations, "
        "weight decay 1e-4, momentum 0.9, images resized to an 800-pixel shorter side. kseg has "
        "no step decay: poly over the 160K iterations here. The 500-step linear warm-up is "
        "Detectron's (not stated in the paper).",
    ),
)
"""The `paper` recipe of every registered model."""
