"""The CamVid data recipe the CamVid benchmarks share, so their tables compare like with like.

CamVid train (367 images) and val (101), images and masks downsampled from 360x480 to 192x256
(image bilinear, mask nearest) and cached; training batches add a random scale of 0.75-1.5, a
192x256 crop and a horizontal flip (seed 0), repeated so that an epoch is `steps_per_epoch`
batches. Used by `camvid_context_family.py` and `camvid_pretrained_vs_scratch.py`.
"""

SIZE = (192, 256)
TRAIN_IMAGES = 367


def camvid_pairs(root, split):
    """The (image, mask) pairs of a CamVid split at `SIZE`, cached."""
    import kseg

    return (
        kseg.data.camvid_dataset(root, split)
        .map(lambda image, mask: kseg.data.resize_pair(image, mask, SIZE))
        .cache()
    )


def camvid_training_batches(root, batch_size):
    """The augmented, repeated training batches of the recipe."""
    import kseg

    return kseg.data.make_pipeline(
        camvid_pairs(root, "train"),
        batch_size,
        crop_size=SIZE,
        scale_range=(0.75, 1.5),
        jitter=False,
        seed=0,
        repeat=True,
    )


def steps_per_epoch(batch_size):
    """Optimizer steps in one pass over the training images."""
    return TRAIN_IMAGES // batch_size
