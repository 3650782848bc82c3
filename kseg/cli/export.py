"""`kseg export`: a saved model as a SavedModel, TFLite or ONNX file."""

import kseg.data
import kseg.export
import kseg.tasks
from kseg.cli import arguments

DESCRIPTION = "Exports a saved `.keras` model: SavedModel (uint8 images in), TFLite or ONNX."


def run(args):
    """Runs `kseg export` with the parsed arguments (see `DESCRIPTION`)."""
    model = arguments.load_model(args.model)
    task = kseg.tasks.for_model(model)
    if task is kseg.tasks.INSTANCE:
        return _export_instances(model, task, args)
    common = {"include_logits": args.logits, "image_size": args.image_size}
    if args.format == "savedmodel":
        path = task.export(model, args.out, **common)
        print(
            f"wrote SavedModel {path} (signature serving_default: uint8 images -> labels, "
            "probabilities)"
        )
    elif args.format == "tflite":
        representative = None
        if args.calibration_data:
            source, _ = kseg.data.load_split(args.calibration_data, args.calibration_split)
            representative = source.take(args.calibration_steps)
        path = kseg.export.tflite(
            model,
            args.out,
            quantization=args.quantization,
            representative_images=representative,
            allow_select_tf_ops=args.select_tf_ops,
            **common,
        )
        print(f"wrote {path} (TFLite, quantization {args.quantization})")
    else:
        print(f"wrote {kseg.export.onnx(model, args.out, opset=args.opset, **common)} (ONNX)")
    if args.tflite:
        print(f"wrote {kseg.export.tflite(model, args.tflite, **common)}")


def _export_instances(model, task, args):
    if args.format != "savedmodel" or args.tflite:
        given = f"--format {args.format}" if args.format != "savedmodel" else "--tflite"
        raise SystemExit(
            f"kseg: error: {given} is not supported for instance segmentation models "
            f"({args.model} is a MaskRCNN, whose proposal and NMS stages have no TFLite or ONNX "
            "export in kseg); use --format savedmodel."
        )
    arguments.refuse_semantic_flags(
        args,
        [
            ("--logits", args.logits),
            ("--image-size", args.image_size is not None),
            ("--quantization", args.quantization != "none"),
            ("--calibration-data", args.calibration_data is not None),
        ],
    )
    path = task.export(model, args.out)
    print(
        f"wrote SavedModel {path} (signature serving_default: one uint8 image (H, W, 3) -> "
        "boxes, scores, classes, masks, num_detections)"
    )


def add_parser(commands):
    """Adds `kseg export` and its flags to the subcommands."""
    export = commands.add_parser("export", help=DESCRIPTION, description=DESCRIPTION)
    export.add_argument("--model", required=True, help="a .keras file")
    export.add_argument(
        "--out", required=True, help="SavedModel folder, or the .tflite / .onnx file"
    )
    export.add_argument(
        "--format",
        default="savedmodel",
        choices=("savedmodel", "tflite", "onnx"),
        help="what to write (MaskRCNN: savedmodel only)",
    )
    export.add_argument(
        "--quantization",
        default="none",
        choices=("none", "float16", "int8"),
        help="TFLite weights: int8 alone is dynamic-range",
    )
    export.add_argument(
        "--calibration-data",
        help="images for full-integer int8 (same forms as --data of kseg train)",
    )
    export.add_argument(
        "--calibration-split", default="train", help="split of --calibration-data to read"
    )
    export.add_argument(
        "--calibration-steps", type=int, default=100, help="calibration images to use"
    )
    export.add_argument(
        "--image-size",
        type=arguments.size,
        help="fix the signature's HEIGHT,WIDTH (some models need it for TFLite/ONNX); None "
        "keeps any size",
    )
    export.add_argument(
        "--select-tf-ops",
        action="store_true",
        help="let TFLite fall back to TensorFlow ops (SegNet's argmax pooling)",
    )
    export.add_argument("--opset", type=int, help="ONNX opset; None lets tf2onnx choose")
    export.add_argument("--logits", action="store_true", help="also output the logits")
    export.add_argument("--tflite", help="also write a float TFLite file here; None writes none")
    export.set_defaults(handler=run)
