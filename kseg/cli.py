"""The `kseg` command line: demo, train, evaluate, predict, export, list.

Flags map onto builder arguments: `--backbone`, `--output-stride`, `--backbone-weights`, and any
other builder keyword through `--model-arg NAME=VALUE` (e.g. `--model-arg alpha=0.35`).
"""

import argparse
import ast
import json
import os
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _parse_model_args(pairs):
    kwargs = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"--model-arg takes NAME=VALUE. Received: {pair!r}")
        name, value = pair.split("=", 1)
        try:
            kwargs[name.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[name.strip()] = value
    return kwargs


def _size(text):
    parts = [int(p) for p in text.replace("x", ",").split(",")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHT,WIDTH. Received: {text!r}")
    return tuple(parts)


def _load(source, split, resize, num_classes=None):
    import kseg.data

    kwargs = {}
    if num_classes is not None and kseg.data.describe_source(source) == "folders":
        # Plain folders declare no class count: given one, the loader checks every label.
        kwargs["num_classes"] = num_classes
    dataset, info = kseg.data.load_dataset(source, split, with_info=True, **kwargs)
    if resize is not None:
        dataset = dataset.map(lambda image, mask: kseg.data.resize_pair(image, mask, resize))
    return dataset, info


def _model_arguments(args, num_classes):
    kwargs = {"num_classes": num_classes}
    if args.backbone:
        kwargs["backbone"] = args.backbone
    if args.backbone_weights:
        kwargs["backbone_weights"] = args.backbone_weights
    if args.output_stride:
        kwargs["output_stride"] = args.output_stride
    kwargs.update(_parse_model_args(args.model_arg))
    return kwargs


def _loss(name, num_classes, ignore_label):
    import kseg.losses

    cross_entropy = kseg.losses.SegmentationCrossEntropy(ignore_label=ignore_label)
    choices = {
        "ce": cross_entropy,
        "focal": kseg.losses.FocalLoss(ignore_label=ignore_label),
        "dice": kseg.losses.DiceLoss(num_classes, ignore_label=ignore_label),
        "ce+dice": kseg.losses.CombinedLoss(
            [cross_entropy, kseg.losses.DiceLoss(num_classes, ignore_label=ignore_label)],
            [1.0, 1.0],
        ),
    }
    return choices[name]


def train_model(
    *,
    train_ds,
    val_ds,
    num_classes,
    model_name,
    model_kwargs,
    run_dir,
    epochs,
    steps_per_epoch,
    learning_rate,
    optimizer,
    loss,
    ignore_label,
    batchnorm_momentum=None,
    jit_compile=False,
    verbose="auto",
    strategy=None,
):
    """Builds, compiles and trains a registered model with kseg's resumable `fit`.

    The model and its optimizer are created inside `strategy.scope()` (the current strategy when
    None), so their variables are mirrored on every replica. Under a multi-worker strategy only
    the chief writes into `run_dir`; other workers keep their backups and checkpoints in
    `run_dir/workers/<task>` (see `kseg.distribute.worker_run_dir`).
    """
    import tensorflow as tf

    import kseg.distribute
    import kseg.metrics
    import kseg.models
    import kseg.training

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = kseg.models.get_model(model_name, **model_kwargs)
        if batchnorm_momentum is not None:
            kseg.training.set_batchnorm_momentum(model, batchnorm_momentum)
        schedule = kseg.training.poly_schedule(learning_rate, epochs * steps_per_epoch, power=0.9)
        kseg.training.compile_model(
            model,
            num_classes=num_classes,
            optimizer=optimizer,
            learning_rate=schedule,
            loss=_loss(loss, num_classes, ignore_label),
            metrics=[kseg.metrics.MeanIoU(num_classes, ignore_label=ignore_label, name="mean_iou")],
            ignore_label=ignore_label,
            jit_compile=jit_compile,
        )
    history = kseg.training.fit(
        model,
        train_ds.repeat(),
        val_ds,
        epochs=epochs,
        run_dir=kseg.distribute.worker_run_dir(run_dir, strategy),
        steps_per_epoch=steps_per_epoch,
        verbose=verbose,
    )
    kseg.distribute.save_on_chief(model, Path(run_dir) / "model.keras", strategy)
    return model, history


def _print_scores(scores, class_names):
    names = class_names or [str(i) for i in range(len(scores["iou"]))]
    width = max(len(n) for n in names)
    for name, iou in zip(names, scores["iou"]):
        print(f"  {name:{width}s}  IoU {iou:.4f}")
    print(
        f"mean IoU {scores['mean_iou']:.4f}  pixel accuracy {scores['pixel_accuracy']:.4f}  "
        f"mean accuracy {scores['mean_accuracy']:.4f}"
    )


def _write_scores(path, scores, class_names):
    record = {
        key: (value.tolist() if hasattr(value, "tolist") else value)
        for key, value in scores.items()
    }
    record["class_names"] = list(class_names) if class_names else None
    Path(path).write_text(json.dumps(record, indent=2, allow_nan=True))


def cmd_demo(args):
    """Trains DeepLabV3+ on the built-in shapes data and reports validation mIoU."""
    import numpy as np

    import kseg.data
    import kseg.evaluation
    import kseg.export
    import kseg.training
    import kseg.viz

    policy = kseg.training.set_precision(args.precision)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = kseg.data.shapes_info()
    weights = None
    if not args.scratch:
        # The ImageNet file kseg ships, so the demo fine-tunes without a network; other
        # backbones download theirs through keras.applications.
        weights = kseg.backbones.bundled_weights_path(args.backbone, args.alpha) or "imagenet"
    print(
        f"kseg demo: DeepLabV3+ ({args.backbone}, alpha {args.alpha}, "
        f"{'random' if weights is None else 'ImageNet'} initialisation) on {args.train_samples} "
        f"shapes images of {args.image_size}px, {args.epochs} epochs, precision {policy}"
    )
    train = kseg.data.make_pipeline(
        kseg.data.shapes_dataset("train", args.train_samples, args.image_size, seed=args.seed),
        args.batch_size,
        crop_size=args.image_size,
        scale_range=(0.75, 1.25),
        jitter=False,
        seed=args.seed,
    )
    val_source = kseg.data.shapes_dataset("val", args.val_samples, args.image_size, seed=args.seed)
    val = kseg.data.make_pipeline(val_source, 50, augment=False)
    steps = args.train_samples // args.batch_size
    model, _ = train_model(
        train_ds=train,
        val_ds=val,
        num_classes=info.num_classes,
        model_name="deeplabv3plus",
        model_kwargs=dict(
            num_classes=info.num_classes,
            backbone=args.backbone,
            output_stride=16,
            num_filters=args.num_filters,
            backbone_weights=weights,
            **({"alpha": args.alpha} if args.backbone.startswith("mobilenet") else {}),
        ),
        run_dir=out / "run",
        epochs=args.epochs,
        steps_per_epoch=steps,
        learning_rate=args.learning_rate,
        optimizer="adam",
        loss="ce",
        ignore_label=info.ignore_label,
        batchnorm_momentum=0.9,
        verbose=2 if args.quiet_progress else "auto",
    )
    scores = kseg.evaluation.evaluate_model(model, val, info.num_classes)
    _print_scores(scores, info.class_names)
    _write_scores(out / "scores.json", scores, info.class_names)

    images, masks = next(iter(val.unbatch().batch(4)))
    predictions = np.argmax(model.predict(images, verbose=0), axis=-1)
    rows = [
        images.numpy().astype(np.uint8),
        [kseg.viz.colorize(p, info.palette) for p in predictions],
        [kseg.viz.colorize(m, info.palette) for m in masks.numpy()],
    ]
    from PIL import Image

    Image.fromarray(np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)).save(
        out / "overlay.png"
    )
    kseg.export.saved_model(model, out / "saved_model")
    print(f"validation mIoU {scores['mean_iou']:.4f}")
    print(f"wrote {out / 'overlay.png'} (rows: image, prediction, ground truth), "
          f"{out / 'saved_model'}, {out / 'run' / 'model.keras'}")
    return scores


def cmd_train(args):
    """Trains a registered model on a dataset, resuming an interrupted run in the same folder.

    `--batch-size` is the global batch: each of the strategy's N replicas gets batch-size / N
    examples per step. `--scale-learning-rate` multiplies `--learning-rate` by N (linear scaling).
    """
    import kseg.data
    import kseg.distribute
    import kseg.models
    import kseg.training

    if args.model.lower() not in kseg.models.list_models():
        raise SystemExit(
            f"kseg: error: unknown model {args.model!r}; registered: "
            f"{', '.join(kseg.models.list_models())}"
        )

    try:
        # First: MultiWorkerMirroredStrategy must be set up before any other TensorFlow work.
        strategy = kseg.distribute.get_strategy(args.strategy)
        per_replica = kseg.distribute.per_replica_batch_size(args.batch_size, strategy)
    except kseg.distribute.DistributionError as error:
        raise SystemExit(f"kseg: error: {error}") from None
    learning_rate = args.learning_rate
    if args.scale_learning_rate:
        learning_rate = kseg.distribute.scale_learning_rate(learning_rate, strategy)
    policy = kseg.training.set_precision(args.precision)
    train_source, info = _load(args.data, args.train_split, args.resize, args.num_classes)
    val_source, _ = _load(args.data, args.val_split, args.resize, args.num_classes)
    num_classes = args.num_classes or info.num_classes
    if num_classes is None:
        raise SystemExit(f"the number of classes of {args.data!r} is unknown: pass --num-classes")
    with strategy.scope():
        # Element-wise sharding: every step sees the same global batch whatever the worker count.
        train = kseg.distribute.shard_by_data(kseg.data.make_pipeline(
            train_source, args.batch_size, crop_size=args.crop_size, seed=args.seed,
            ignore_label=info.ignore_label,
        ))
        val = kseg.distribute.shard_by_data(kseg.data.make_pipeline(
            val_source, args.val_batch_size, augment=False, ignore_label=info.ignore_label
        ))
    steps = args.steps_per_epoch or max(1, sum(1 for _ in train_source) // args.batch_size)
    replicas = strategy.num_replicas_in_sync
    print(f"training {args.model} on {args.data} ({num_classes} classes), precision {policy}, "
          f"{args.epochs} epochs of {steps} steps, run folder {args.run_dir}")
    print(f"strategy {args.strategy}: {replicas} replica{'s' if replicas > 1 else ''}, "
          f"global batch {args.batch_size} ({per_replica} per replica), "
          f"learning rate {learning_rate:g}")
    model, _ = train_model(
        train_ds=train,
        val_ds=val,
        num_classes=num_classes,
        model_name=args.model,
        model_kwargs=_model_arguments(args, num_classes),
        run_dir=args.run_dir,
        epochs=args.epochs,
        steps_per_epoch=steps,
        learning_rate=learning_rate,
        optimizer=args.optimizer,
        loss=args.loss,
        ignore_label=info.ignore_label,
        jit_compile=args.jit,
        strategy=strategy,
    )
    import kseg.evaluation

    scores = kseg.evaluation.evaluate_model(model, val, num_classes, ignore_label=info.ignore_label)
    _print_scores(scores, info.class_names)
    if kseg.distribute.is_chief(strategy):
        _write_scores(Path(args.run_dir) / "scores.json", scores, info.class_names)


def _load_model(path):
    import keras

    import kseg  # noqa: F401  (registers kseg's layers, losses and metrics)

    if not Path(path).exists():
        raise SystemExit(f"model file not found: {path}")
    if str(path).endswith(".keras") and not zipfile.is_zipfile(path):
        raise SystemExit(f"not a .keras model archive (a zip file saved by model.save): {path}")
    return keras.saving.load_model(path)


def cmd_evaluate(args):
    """Scores a saved model on a dataset split: per-class IoU, mIoU, accuracies."""
    import kseg.data
    import kseg.evaluation

    model = _load_model(args.model)
    source, info = _load(args.data, args.split, args.resize, args.num_classes)
    num_classes = args.num_classes or info.num_classes or int(model.output.shape[-1])
    val = kseg.data.make_pipeline(source, args.batch_size, augment=False, ignore_label=info.ignore_label)
    scores = kseg.evaluation.evaluate_model(
        model, val, num_classes, ignore_label=info.ignore_label, predict_fn=_predictor(model, args)
    )
    _print_scores(scores, info.class_names)
    if args.output:
        _write_scores(args.output, scores, info.class_names)


def _predictor(model, args):
    """The `--scales/--flip/--window/--crf` inference modes as an images -> labels function."""
    import kseg.inference

    if args.scales == (1.0,) and not args.flip and args.window is None and not args.crf:
        return None
    return kseg.inference.make_predictor(
        model,
        scales=args.scales,
        flip=args.flip,
        window=args.window,
        overlap=args.overlap,
        crf=args.crf,
    )


def _scales(text):
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        scales = ()
    if not scales or any(scale <= 0 for scale in scales):
        raise argparse.ArgumentTypeError(f"expected positive numbers like 0.5,1,1.5, got {text!r}")
    return scales


def _add_inference_flags(parser):
    parser.add_argument("--scales", type=_scales, default=(1.0,),
                        help="average over these image scales, e.g. 0.5,0.75,1,1.25,1.5,1.75")
    parser.add_argument("--flip", action="store_true", help="also average over mirrored images")
    parser.add_argument("--window", type=_size,
                        help="sliding-window inference with this window (SIZE or HEIGHT,WIDTH)")
    parser.add_argument("--overlap", type=float, default=1 / 3,
                        help="fraction shared by neighbouring windows")
    parser.add_argument("--crf", action="store_true", help="refine with the dense CRF")


def _image_files(inputs):
    suffixes = {".png", ".jpg", ".jpeg", ".bmp"}
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes))
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"input not found: {item}")
    if not files:
        raise SystemExit(f"no images found in {', '.join(inputs)}")
    return files


def cmd_predict(args):
    """Writes a label PNG and a colour overlay for every input image."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError
    from tqdm.auto import tqdm

    import kseg.viz

    model = _load_model(args.model)
    num_classes = int(model.output.shape[-1])
    predict = _predictor(model, args)
    palette = kseg.viz.CAMVID_PALETTE if args.palette == "camvid" else kseg.viz.palette(num_classes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(_image_files(args.inputs), desc="predicting", unit="image"):
        try:
            image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        except (UnidentifiedImageError, OSError) as error:
            raise SystemExit(f"cannot read image {path}: {error}") from None
        if predict is None:
            labels = np.argmax(model.predict(image[None], verbose=0)[0], axis=-1)
        else:
            labels = predict(image[None])[0]
        labels = labels.astype(np.uint8)
        Image.fromarray(labels).save(out / f"{path.stem}_labels.png")
        kseg.viz.save_overlay(out / f"{path.stem}_overlay.png", image, labels, palette=palette)
    print(f"wrote predictions to {out}")


def cmd_export(args):
    """Exports a saved `.keras` model: SavedModel (uint8 images in), TFLite or ONNX."""
    import kseg.export

    model = _load_model(args.model)
    common = {"include_logits": args.logits, "image_size": args.image_size}
    if args.format == "savedmodel":
        path = kseg.export.saved_model(model, args.out, **common)
        print(f"wrote SavedModel {path} (signature serving_default: uint8 images -> labels, "
              "probabilities)")
    elif args.format == "tflite":
        representative = None
        if args.calibration_data:
            import kseg.data

            source, _ = _load(args.calibration_data, args.calibration_split, None, None)
            representative = source.take(args.calibration_steps)
        path = kseg.export.tflite(
            model, args.out, quantization=args.quantization,
            representative_images=representative, allow_select_tf_ops=args.select_tf_ops,
            **common,
        )
        print(f"wrote {path} (TFLite, quantization {args.quantization})")
    else:
        print(f"wrote {kseg.export.onnx(model, args.out, opset=args.opset, **common)} (ONNX)")
    if args.tflite:
        print(f"wrote {kseg.export.tflite(model, args.tflite, **common)}")


def cmd_list(args):
    """Lists the registered models and backbones."""
    import kseg

    print("models:    " + ", ".join(kseg.models.list_models()))
    print("backbones: " + ", ".join(kseg.backbones.list_backbones()))


def _add_model_flags(parser):
    parser.add_argument("--model", default="deeplabv3plus", help="registered model name")
    parser.add_argument("--backbone", help="backbone name (see `kseg list`)")
    parser.add_argument("--backbone-weights", help="None, 'imagenet' or a weights file")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32))
    parser.add_argument("--model-arg", action="append", metavar="NAME=VALUE",
                        help="any other builder argument, e.g. alpha=0.35 (repeatable)")


def build_parser():
    parser = argparse.ArgumentParser(prog="kseg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help=cmd_demo.__doc__, description=cmd_demo.__doc__)
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument("--epochs", type=int, default=6)
    demo.add_argument("--train-samples", type=int, default=2000)
    demo.add_argument("--val-samples", type=int, default=200)
    demo.add_argument("--image-size", type=int, default=128)
    demo.add_argument("--batch-size", type=int, default=16)
    demo.add_argument("--backbone", default="mobilenetv2")
    demo.add_argument("--alpha", type=float, default=0.35, help="width of a MobileNet backbone")
    demo.add_argument("--scratch", action="store_true",
                      help="random backbone initialisation instead of ImageNet weights")
    demo.add_argument("--num-filters", type=int, default=64, help="ASPP and decoder channels")
    demo.add_argument("--learning-rate", type=float, default=2e-3)
    demo.add_argument("--precision", default="float32",
                      choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"))
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet-progress", action="store_true", help="one line per epoch")
    demo.set_defaults(handler=cmd_demo)

    train = commands.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    train.add_argument("--data", required=True,
                       help="'shapes', 'tfds:NAME', a VOC or CamVid root, or IMAGES,MASKS folders")
    train.add_argument("--train-split", default="train")
    train.add_argument("--val-split", default="val")
    train.add_argument("--num-classes", type=int)
    _add_model_flags(train)
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--steps-per-epoch", type=int)
    train.add_argument("--batch-size", type=int, default=8,
                       help="global batch per step, split evenly over the replicas")
    train.add_argument("--val-batch-size", type=int, default=1)
    train.add_argument("--crop-size", type=_size, default=(512, 512), help="SIZE or HEIGHT,WIDTH")
    train.add_argument("--resize", type=_size, help="resize every image first (HEIGHT,WIDTH)")
    train.add_argument("--optimizer", default="sgd", choices=("sgd", "adam", "adamw"))
    train.add_argument("--learning-rate", type=float, default=0.01)
    train.add_argument("--loss", default="ce", choices=("ce", "focal", "dice", "ce+dice"))
    train.add_argument("--precision", default="auto",
                       choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"))
    train.add_argument("--jit", action="store_true", help="compile the train step with XLA")
    train.add_argument("--run-dir", default="runs/train",
                       help="checkpoints, logs and model.keras; rerun to resume")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--strategy", default="default",
                       choices=("default", "mirrored", "multiworker", "tpu"),
                       help="tf.distribute strategy; multiworker reads the cluster from TF_CONFIG")
    train.add_argument("--scale-learning-rate", action="store_true",
                       help="multiply --learning-rate by the number of replicas (linear scaling)")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help=cmd_evaluate.__doc__,
                                   description=cmd_evaluate.__doc__)
    evaluate.add_argument("--model", required=True, help="a .keras file")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--split", default="val")
    evaluate.add_argument("--num-classes", type=int)
    evaluate.add_argument("--batch-size", type=int, default=1)
    evaluate.add_argument("--resize", type=_size)
    evaluate.add_argument("--output", help="write the scores as JSON")
    _add_inference_flags(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser("predict", help=cmd_predict.__doc__, description=cmd_predict.__doc__)
    predict.add_argument("--model", required=True, help="a .keras file")
    predict.add_argument("inputs", nargs="+", help="image files or folders")
    predict.add_argument("--out", default="predictions")
    predict.add_argument("--palette", default="voc", choices=("voc", "camvid"))
    _add_inference_flags(predict)
    predict.set_defaults(handler=cmd_predict)

    export = commands.add_parser("export", help=cmd_export.__doc__, description=cmd_export.__doc__)
    export.add_argument("--model", required=True, help="a .keras file")
    export.add_argument("--out", required=True,
                        help="SavedModel folder, or the .tflite / .onnx file")
    export.add_argument("--format", default="savedmodel", choices=("savedmodel", "tflite", "onnx"))
    export.add_argument("--quantization", default="none", choices=("none", "float16", "int8"),
                        help="TFLite weights: int8 alone is dynamic-range")
    export.add_argument("--calibration-data",
                        help="images for full-integer int8 (same forms as --data of kseg train)")
    export.add_argument("--calibration-split", default="train")
    export.add_argument("--calibration-steps", type=int, default=100,
                        help="calibration images to use")
    export.add_argument("--image-size", type=_size,
                        help="fix the signature's HEIGHT,WIDTH (some models need it for TFLite/ONNX)")
    export.add_argument("--select-tf-ops", action="store_true",
                        help="let TFLite fall back to TensorFlow ops (SegNet's argmax pooling)")
    export.add_argument("--opset", type=int, help="ONNX opset")
    export.add_argument("--logits", action="store_true", help="also output the logits")
    export.add_argument("--tflite", help="also write a float TFLite file here")
    export.set_defaults(handler=cmd_export)

    listing = commands.add_parser("list", help=cmd_list.__doc__, description=cmd_list.__doc__)
    listing.set_defaults(handler=cmd_list)
    return parser


def _pipeline_error_message(error):
    """The readable part of an error raised inside a tf.data pipeline or a graph assertion."""
    text = getattr(error, "message", str(error))
    for marker in ("DatasetError: ", "assertion failed: "):
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0]
    return text.splitlines()[0]


def main(argv=None):
    """Entry point of the `kseg` command."""
    args = build_parser().parse_args(argv)
    import tensorflow as tf

    import kseg.data

    try:
        args.handler(args)
    except kseg.data.DatasetError as error:
        print(f"kseg: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except tf.errors.InvalidArgumentError as error:
        # A bad file met while streaming: checkpoints written so far are kept, so after a fix
        # the same command resumes.
        print(f"kseg: error: {_pipeline_error_message(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    return 0


if __name__ == "__main__":
    main()
