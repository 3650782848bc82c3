import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kseg import cli


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    status = cli.main(
        [
            "demo",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--train-samples",
            "32",
            "--val-samples",
            "8",
            "--image-size",
            "64",
            "--backbone",
            "tiny",
            "--num-filters",
            "16",
            "--quiet-progress",
            "--scratch",
        ]
    )
    assert status == 0
    return out, json.loads((out / "scores.json").read_text())


def test_demo_writes_scores_overlay_model_and_saved_model(demo_run):
    out, scores = demo_run
    assert 0.0 <= scores["mean_iou"] <= 1.0
    assert len(scores["iou"]) == 5 and scores["class_names"][1] == "circle"
    overlay = np.asarray(Image.open(out / "overlay.png"))
    assert overlay.shape == (192, 256, 3)  # rows image, prediction, truth; 4 images of 64 px
    serving = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    outputs = serving(images=tf.zeros((1, 40, 56, 3), tf.uint8))
    assert outputs["labels"].shape == (1, 40, 56)
    assert (out / "run" / "model.keras").is_file()


def test_evaluate_predict_export_on_the_demo_model(demo_run, tmp_path, capsys):
    out, _scores = demo_run
    model = str(out / "run" / "model.keras")
    cli.main(
        [
            "evaluate",
            "--model",
            model,
            "--data",
            "shapes",
            "--split",
            "val",
            "--output",
            str(tmp_path / "eval.json"),
        ]
    )
    assert "mean IoU" in capsys.readouterr().out
    image = np.random.default_rng(0).integers(0, 255, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    cli.main(
        ["predict", "--model", model, str(tmp_path / "photo.png"), "--out", str(tmp_path / "pred")]
    )
    labels = np.asarray(Image.open(tmp_path / "pred" / "photo_labels.png"))
    assert labels.shape == (30, 44) and labels.max() < 5
    cli.main(["export", "--model", model, "--out", str(tmp_path / "exported")])
    assert (tmp_path / "exported" / "saved_model.pb").is_file()


def test_evaluate_and_predict_with_inference_modes(demo_run, tmp_path):
    import keras

    from kseg.inference import make_predictor

    out, _scores = demo_run
    model_path = str(out / "run" / "model.keras")
    model = keras.saving.load_model(model_path)
    rng = np.random.default_rng(3)
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "masks" / "val").mkdir(parents=True)
    images = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    masks = rng.integers(0, 5, (2, 64, 64), dtype=np.uint8)
    for index, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(tmp_path / "images" / "val" / f"{index}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / "val" / f"{index}.png")
    scores_path = tmp_path / "scores.json"
    cli.main(
        [
            "evaluate",
            "--model",
            model_path,
            "--data",
            str(tmp_path),
            "--num-classes",
            "5",
            "--scales",
            "0.75,1,1.25",
            "--flip",
            "--crf",
            "--output",
            str(scores_path),
        ]
    )
    predict = make_predictor(model, scales=(0.75, 1.0, 1.25), flip=True, crf=True)
    labels = predict(images.astype("float32"))
    expected = np.bincount(
        masks.astype(np.int64).ravel() * 5 + labels.ravel(), minlength=25
    ).reshape(5, 5)
    np.testing.assert_array_equal(json.loads(scores_path.read_text())["confusion_matrix"], expected)

    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    cli.main(
        [
            "predict",
            "--model",
            model_path,
            str(tmp_path / "photo.png"),
            "--out",
            str(tmp_path / "pred"),
            "--window",
            "48",
            "--overlap",
            "0.5",
        ]
    )
    labels = np.asarray(Image.open(tmp_path / "pred" / "photo_labels.png"))
    np.testing.assert_array_equal(labels, cli_free_sliding_window(model, image))


def cli_free_sliding_window(model, image):
    from kseg.inference.sliding_window import sliding_window_predict

    return sliding_window_predict(
        model, image.astype("float32"), window=48, overlap=0.5, output="labels"
    )


@pytest.mark.parametrize("flag", [["--scales", "0,1"], ["--scales", "a"], ["--window", "0"]])
def test_bad_inference_flags_are_named(flag, capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--model", "m.keras", "--data", "shapes", *flag])
    assert flag[0] in capsys.readouterr().err


def test_train_on_folders_then_reports_a_bad_label_by_file(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for folder in ("images", "masks"):
            (tmp_path / folder / split).mkdir(parents=True)
        for index in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "images" / split / f"{index}.png"
            )
            Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8)).save(
                tmp_path / "masks" / split / f"{index}.png"
            )
    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(tmp_path),
        "--num-classes",
        "3",
        "--backbone",
        "tiny",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--crop-size",
        "32",
        "--run-dir",
        str(run),
        "--precision",
        "float32",
    ]
    cli.main(args)
    assert (run / "model.keras").is_file()
    assert "mean IoU" in capsys.readouterr().out

    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(tmp_path / "masks" / "train" / "2.png")
    with pytest.raises(SystemExit) as stop:
        cli.main(args[:-4] + ["--run-dir", str(tmp_path / "run2"), "--precision", "float32"])
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert "2.png" in message and "7" in message


def test_unknown_model_file_is_named(tmp_path):
    with pytest.raises(SystemExit, match="missing.keras"):
        cli.main(
            ["export", "--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "x")]
        )


def _tiny_folder_dataset(root, size=32, count=4):
    rng = np.random.default_rng(5)
    for split in ("train", "val"):
        for folder in ("images", "masks"):
            (root / folder / split).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{index}.png"
            )
            Image.fromarray(rng.integers(0, 3, (size, size), dtype=np.uint8)).save(
                root / "masks" / split / f"{index}.png"
            )


def test_train_with_mirrored_strategy_end_to_end(tmp_path, capsys):
    import keras

    _tiny_folder_dataset(tmp_path)
    run = tmp_path / "run"
    cli.main(
        [
            "train",
            "--data",
            str(tmp_path),
            "--num-classes",
            "3",
            "--backbone",
            "tiny",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--crop-size",
            "32",
            "--run-dir",
            str(run),
            "--precision",
            "float32",
            "--strategy",
            "mirrored",
            "--scale-learning-rate",
            "--learning-rate",
            "0.02",
        ]
    )
    out = capsys.readouterr().out
    # One CPU is one replica: the global batch is the per-replica batch, the rate is unscaled.
    assert "strategy mirrored: 1 replica, global batch 2 (2 per replica), learning rate 0.02" in out
    scores = json.loads((run / "scores.json").read_text())
    assert len(scores["iou"]) == 3
    model = keras.saving.load_model(run / "model.keras")
    assert model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 32, 32, 3)
    assert (run / "backup").is_dir() and not (run / "workers").exists()


def test_train_multiworker_without_tf_config_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit, match="TF_CONFIG is not set"):
        cli.main(
            [
                "train",
                "--data",
                "shapes",
                "--strategy",
                "multiworker",
                "--run-dir",
                str(tmp_path / "run"),
            ]
        )
    assert not (tmp_path / "run").exists()


def test_train_tpu_strategy_without_a_tpu_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(SystemExit, match="no reachable TPU"):
        cli.main(
            ["train", "--data", "shapes", "--strategy", "tpu", "--run-dir", str(tmp_path / "run")]
        )


def test_export_formats_write_files_that_run(demo_run, tmp_path):
    out, _scores = demo_run
    model = str(out / "run" / "model.keras")
    target = tmp_path / "model_int8.tflite"
    cli.main(
        [
            "export",
            "--model",
            model,
            "--format",
            "tflite",
            "--out",
            str(target),
            "--quantization",
            "int8",
            "--calibration-data",
            "shapes",
            "--calibration-split",
            "val",
            "--calibration-steps",
            "2",
        ]
    )
    interpreter = tf.lite.Interpreter(model_path=str(target))
    runner = interpreter.get_signature_runner("serving_default")
    outputs = runner(images=np.zeros((1, 32, 48, 3), np.uint8))
    assert outputs["labels"].shape == (1, 32, 48) and outputs["labels"].max() < 5


def test_export_onnx_when_tf2onnx_is_installed(demo_run, tmp_path):
    pytest.importorskip("tf2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    out, _scores = demo_run
    target = tmp_path / "model.onnx"
    cli.main(
        [
            "export",
            "--model",
            str(out / "run" / "model.keras"),
            "--format",
            "onnx",
            "--out",
            str(target),
            "--image-size",
            "32,48",
        ]
    )
    session = onnxruntime.InferenceSession(str(target))
    feeds = {session.get_inputs()[0].name: np.zeros((1, 32, 48, 3), np.uint8)}
    names = [output.name for output in session.get_outputs()]
    labels = dict(zip(names, session.run(None, feeds)))["labels"]
    assert labels.shape == (1, 32, 48)


# ----------------------------------------------------------------- instance segmentation

REPO = Path(__file__).resolve().parents[1]
COCO_CATEGORIES = [  # sparse COCO ids, numbered 1..4 by kseg in id order
    {"id": 2, "name": "block"},
    {"id": 5, "name": "wedge"},
    {"id": 9, "name": "bar"},
    {"id": 11, "name": "dot"},
]


def mask_rcnn_small_config():
    """The SMALL Mask R-CNN configuration of tests/models/test_mask_rcnn.py."""
    spec = importlib.util.spec_from_file_location(
        "mask_rcnn_model_tests", REPO / "tests" / "models" / "test_mask_rcnn.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SMALL


def write_tiny_coco(root, count=3, size=(64, 80), seed=0):
    """A COCO-format folder: `count` PNGs in root/images and root/annotations.json.

    Each image holds two polygons (a rectangle and a triangle) painted in flat colours over
    noise; their categories cycle through COCO_CATEGORIES. Returns (annotations, image_dir).
    """
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    height, width = size
    for index in range(count):
        image = Image.fromarray(rng.integers(0, 80, (height, width, 3), dtype=np.uint8))
        pen = ImageDraw.Draw(image)
        top, left = int(rng.integers(2, 20)), int(rng.integers(2, 30))
        rectangle = [left, top, left + 24, top, left + 24, top + 18, left, top + 18]
        triangle = [50, 40, 76, 60, 50, 62]
        for number, polygon in enumerate((rectangle, triangle)):
            pen.polygon(polygon, fill=(220, 60 + 120 * number, 40))
            xs, ys = polygon[0::2], polygon[1::2]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 10,
                    "category_id": COCO_CATEGORIES[(index + number) % 4]["id"],
                    "segmentation": [[float(v) for v in polygon]],
                    "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                    "area": 1.0,
                    "iscrowd": 0,
                }
            )
        image.save(image_dir / f"scene_{index}.png")
        images.append(
            {"id": index + 10, "file_name": f"scene_{index}.png", "height": height, "width": width}
        )
    path = root / "annotations.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": COCO_CATEGORIES})
    )
    return path, image_dir


@pytest.fixture(scope="module")
def mask_rcnn_file(tmp_path_factory):
    """A tiny untrained MaskRCNN (5 classes as the shapes data) saved as .keras."""
    import keras

    from kseg.models.mask_rcnn import MaskRCNN

    path = tmp_path_factory.mktemp("mask_rcnn") / "mask_rcnn.keras"
    keras.utils.set_random_seed(0)
    # Every region scores above 0, so the untrained model still returns detections.
    MaskRCNN(num_classes=5, score_threshold=0.0, **mask_rcnn_small_config()).save(path)
    return path


def spy_on_evaluate_instances(monkeypatch):
    """Records the arguments and the result of every kseg.detection.evaluate_instances call."""
    import kseg.detection

    calls = []
    real = kseg.detection.evaluate_instances

    def recording(model, examples, categories, **kwargs):
        images = [example["image"] for example in examples.as_numpy_iterator()]
        result = real(model, examples, categories, **kwargs)
        calls.append(
            {
                "model": model,
                "images": images,
                "categories": categories,
                "kwargs": kwargs,
                "result": result,
            }
        )
        return result

    monkeypatch.setattr(kseg.detection, "evaluate_instances", recording)
    return calls


def test_evaluate_mask_rcnn_on_a_coco_folder(mask_rcnn_file, tmp_path, capsys, monkeypatch):
    import kseg

    calls = spy_on_evaluate_instances(monkeypatch)
    annotations, image_dir = write_tiny_coco(tmp_path)
    output = tmp_path / "scores.json"
    cli.main(
        [
            "evaluate",
            "--model",
            str(mask_rcnn_file),
            "--data",
            f"coco:{annotations},{image_dir}",
            "--output",
            str(output),
        ]
    )
    scores = json.loads(output.read_text())
    (call,) = calls
    assert call["categories"] == kseg.data.coco_categories(annotations)
    assert call["categories"].coco_ids == (2, 5, 9, 11)
    for index, image in enumerate(call["images"]):
        np.testing.assert_array_equal(
            image, np.asarray(Image.open(image_dir / f"scene_{index}.png"))
        )
    assert scores["num_images"] == 3
    assert scores["class_names"] == [c["name"] for c in COCO_CATEGORIES]
    for key in ("mask_AP", "mask_AP75", "box_AP", "box_AP50"):
        assert scores[key] == call["result"][key]
    assert "(3 images)" in capsys.readouterr().out


def test_instance_evaluation_errors_name_the_problem(mask_rcnn_file, demo_run, tmp_path, capsys):
    annotations, image_dir = write_tiny_coco(tmp_path)
    model = str(mask_rcnn_file)
    with pytest.raises(SystemExit) as stop:
        cli.main(
            [
                "evaluate",
                "--model",
                model,
                "--data",
                f"coco:{tmp_path / 'missing.json'},{image_dir}",
            ]
        )
    assert stop.value.code == 2 and "missing.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(
            ["evaluate", "--model", model, "--data", f"coco:{annotations},{tmp_path / 'no_images'}"]
        )
    assert stop.value.code == 2 and "no_images" in capsys.readouterr().err
    (image_dir / "scene_1.png").unlink()
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", "--model", model, "--data", f"coco:{annotations},{image_dir}"])
    assert "scene_1.png" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="coco:ANNOTATIONS.json,IMAGE_DIR"):
        cli.main(["evaluate", "--model", model, "--data", f"coco:{annotations}"])
    with pytest.raises(SystemExit, match="'shapes' or|--data shapes or"):
        cli.main(["evaluate", "--model", model, "--data", str(tmp_path)])
    with pytest.raises(SystemExit, match="--class-names gives 2 names but the model predicts 4"):
        cli.main(["predict", "--model", model, str(image_dir), "--class-names", "a,b"])
    with pytest.raises(SystemExit, match="--scales, --flip apply to semantic"):
        cli.main(["evaluate", "--model", model, "--data", "shapes", "--scales", "1,2", "--flip"])
    semantic = str(demo_run[0] / "run" / "model.keras")
    with pytest.raises(SystemExit, match="only MaskRCNN models"):
        cli.main(["evaluate", "--model", semantic, "--data", f"coco:{annotations},{image_dir}"])


def test_evaluate_refuses_a_class_count_that_differs_from_the_data(tmp_path):
    from kseg.models.mask_rcnn import MaskRCNN

    path = tmp_path / "three.keras"
    MaskRCNN(num_classes=3, **mask_rcnn_small_config()).save(path)
    with pytest.raises(SystemExit, match="predicts 2 object classes but shapes has 4"):
        cli.main(["evaluate", "--model", str(path), "--data", "shapes", "--num-samples", "1"])


def test_predict_with_mask_rcnn_writes_overlays_and_detections(mask_rcnn_file, tmp_path):
    import keras

    import kseg

    # Sides that are multiples of 64: no padding, so no detection can fall in a padded margin
    # outside the photo (where an untrained model may put all of them).
    image = np.random.default_rng(4).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    out = tmp_path / "pred"
    cli.main(
        [
            "predict",
            "--model",
            str(mask_rcnn_file),
            str(tmp_path / "photo.png"),
            "--out",
            str(out),
            "--min-score",
            "0",
            "--class-names",
            "a,b,c,d",
            "--mask-threshold",
            "0.01",
        ]
    )
    record = json.loads((out / "photo_instances.json").read_text())
    # An untrained mask head sits near probability 0.5 everywhere, so the default threshold
    # could leave every mask empty; a low one makes each mask fill its box and the tint visible.
    serve = kseg.detection.instance_serving_function(
        keras.saving.load_model(mask_rcnn_file), mask_threshold=0.01
    )
    expected = {key: value.numpy() for key, value in serve(image).items()}
    count = int(expected["num_detections"])
    detections = record["detections"]
    assert (record["height"], record["width"]) == (64, 128) and len(detections) == count > 0
    np.testing.assert_allclose(
        [d["box"] for d in detections], expected["boxes"][:count], atol=0.006
    )
    np.testing.assert_allclose(
        [d["score"] for d in detections], expected["scores"][:count], atol=6e-5
    )
    assert [d["class"] for d in detections] == expected["classes"][:count].tolist()
    assert [d["class_name"] for d in detections] == [
        "abcd"[c - 1] for c in expected["classes"][:count]
    ]
    assert [d["mask_area"] for d in detections] == expected["masks"][:count].sum((1, 2)).tolist()

    drawn = np.asarray(Image.open(out / "photo_instances.png"))
    assert drawn.shape == image.shape
    covered = expected["masks"][:count].any(axis=0)
    outlines = np.zeros(covered.shape, bool)
    for y1, x1, y2, x2 in expected["boxes"][:count]:
        rows = slice(int(y1), int(np.ceil(y2)) + 1)
        cols = slice(int(x1), int(np.ceil(x2)) + 1)
        outlines[rows, cols] = True  # the box and its outline, generously
    assert covered.any()
    untouched = ~covered & ~outlines
    # Pixels outside every mask and box are the photo's; masked pixels are tinted.
    np.testing.assert_array_equal(drawn[untouched], image[untouched])
    assert (drawn[covered] != image[covered]).any(axis=-1).mean() > 0.9


@pytest.mark.parametrize(
    "flags",
    [
        ["--format", "tflite", "--out", "m.tflite"],
        ["--format", "onnx", "--out", "m.onnx"],
        ["--out", "saved", "--tflite", "m.tflite"],
    ],
)
def test_export_of_mask_rcnn_refuses_tflite_and_onnx(mask_rcnn_file, tmp_path, flags):
    with pytest.raises(SystemExit, match="not supported for instance segmentation models"):
        cli.main(
            [
                "export",
                "--model",
                str(mask_rcnn_file),
                *[str(tmp_path / f) if f.startswith(("m.", "saved")) else f for f in flags],
            ]
        )
    assert not any(tmp_path.iterdir())


def small_config_flags():
    """The SMALL Mask R-CNN configuration as `--backbone` / `--model-arg` flags."""
    flags = []
    for name, value in mask_rcnn_small_config().items():
        flags += (
            ["--backbone", value] if name == "backbone" else ["--model-arg", f"{name}={value!r}"]
        )
    return flags


def test_train_mask_rcnn_on_shapes_then_evaluate_agrees(tmp_path, capsys):
    import keras

    from kseg.models.mask_rcnn import MaskRCNN

    run = tmp_path / "run"
    cli.main(
        [
            "train",
            "--model",
            "mask_rcnn",
            "--data",
            "shapes",
            "--num-samples",
            "4",
            *small_config_flags(),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--batch-size",
            "2",
            "--val-batch-size",
            "2",
            "--optimizer",
            "adam",
            "--learning-rate",
            "1e-3",
            "--precision",
            "float32",
            "--run-eagerly",
            "--run-dir",
            str(run),
        ]
    )
    printed = capsys.readouterr().out
    assert (
        "training MaskRCNN (tiny) on shapes (4 classes: circle, square, triangle, star)" in printed
    )
    model = keras.saving.load_model(run / "model.keras")
    assert isinstance(model, MaskRCNN) and model.num_classes == 5
    assert model.fpn_channels == 16 and model.anchor_sizes == (16.0, 32.0, 64.0, 128.0, 256.0)
    assert len((run / "history.csv").read_text().strip().splitlines()) == 2  # header, 1 epoch
    trained = json.loads((run / "scores.json").read_text())
    assert trained["num_images"] == 4 and 0.0 <= trained["mask_AP"] <= 1.0

    # The saved model scores the same on the same held-out images through `kseg evaluate`.
    output = tmp_path / "again.json"
    cli.main(
        [
            "evaluate",
            "--model",
            str(run / "model.keras"),
            "--data",
            "shapes",
            "--split",
            "val",
            "--num-samples",
            "4",
            "--batch-size",
            "2",
            "--output",
            str(output),
        ]
    )
    assert json.loads(output.read_text()) == trained
    assert trained["class_names"] == ["circle", "square", "triangle", "star"]
    printed = capsys.readouterr().out
    for kind in ("mask", "box "):
        key = kind.strip()
        assert (
            f"{kind} AP {trained[f'{key}_AP']:.4f}  AP50 {trained[f'{key}_AP50']:.4f}  "
            f"AP75 {trained[f'{key}_AP75']:.4f}"
        ) in printed


def test_train_mask_rcnn_refuses_semantic_flags_and_mixed_up_data(tmp_path):
    base = ["train", "--model", "mask_rcnn", "--run-dir", str(tmp_path / "run")]
    with pytest.raises(
        SystemExit,
        match="--loss, --output-stride apply to semantic|--output-stride, --loss apply to semantic",
    ):
        cli.main([*base, "--data", "shapes", "--loss", "dice", "--output-stride", "16"])
    with pytest.raises(SystemExit, match="--val-data goes with --data coco"):
        cli.main([*base, "--data", "shapes", "--val-data", "coco:a.json,images"])
    with pytest.raises(SystemExit, match="train --model mask_rcnn on it"):
        cli.main(["train", "--data", "coco:a.json,images", "--run-dir", str(tmp_path / "r")])
    assert not (tmp_path / "run").exists() and not (tmp_path / "r").exists()
