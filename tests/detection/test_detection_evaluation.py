"""evaluate_instances: batching, and images at their own size for a model that resizes."""

import kseg
from kseg.detection import evaluation
from kseg.models.mask_rcnn import MaskRCNN

SMALL = {"backbone": "tiny", **kseg.testing.SMALL_MODEL_CONFIGS["mask_rcnn"]}


def test_a_resizing_model_sees_each_image_unpadded(monkeypatch):
    calls = []
    real = evaluation.pad_instance_batch

    def recording(examples, batch_size, **kwargs):
        calls.append((batch_size, kwargs))
        for images, targets in real(examples, batch_size, **kwargs):
            calls.append(tuple(images.shape))
            yield images, targets

    monkeypatch.setattr(evaluation, "pad_instance_batch", recording)
    examples = kseg.data.shapes_instance_examples("val", num_samples=2, image_size=50)
    categories = kseg.data.shapes_info()
    plain = MaskRCNN(num_classes=4, **SMALL)
    resizing = MaskRCNN(num_classes=4, resize_min_side=64, resize_max_side=96, **SMALL)
    scores = evaluation.evaluate_instances(plain, examples, categories, batch_size=2)
    assert calls == [(2, {}), (2, 64, 64, 3)] and scores["num_images"] == 2
    calls.clear()
    scores = evaluation.evaluate_instances(resizing, examples, categories, batch_size=2)
    assert calls == [(1, {"pad_to_multiple": 1}), (1, 50, 50, 3), (1, 50, 50, 3)]
    assert scores["num_images"] == 2
