"""Export a `.keras` model as a SavedModel and a TFLite file, check them, and serve predictions.

`kseg.export.saved_model` writes a SavedModel whose "serving_default" signature takes uint8 RGB
images of any size and returns "labels" (and here "probabilities" and "logits"); the
preprocessing is inside, so the artefact runs with TensorFlow alone, without kseg or Keras.
`kseg.export.tflite_from_saved_model` converts that signature to TFLite (float, float16 or int8
dynamic-range weights). Both artefacts are reloaded and run on images of a dataset split, and
their outputs are compared with the Keras model's: the share of pixels whose label agrees and
the largest logit difference, printed and written to `<out>/parity.json`.

With `--serve PORT`, the reloaded SavedModel then answers HTTP requests: POST the bytes of a
PNG or JPEG image to `/predict` and the reply is a PNG of class ids at the image's size
(`curl --data-binary @photo.png http://localhost:8000/predict -o labels.png`).

Usage:
    python examples/train_semantic.py --out runs/train_semantic     # gives a model to export
    python examples/export_and_serve.py --model runs/train_semantic/model.keras
    python examples/export_and_serve.py --model runs/train_semantic/model.keras \\
        --quantization float16 --serve 8000
"""

import argparse
import json
import sys
import warnings
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import kseg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a .keras file")
    parser.add_argument("--out", default="runs/export_and_serve", help="output folder")
    parser.add_argument(
        "--data", default="shapes", help="'shapes' or any source kseg.data.load_dataset reads"
    )
    parser.add_argument("--split", default="val")
    parser.add_argument("--num-images", type=int, default=8, help="images compared")
    parser.add_argument("--image-size", type=int, default=128, help="shapes image size")
    parser.add_argument(
        "--quantization",
        default="none",
        choices=("none", "float16", "int8"),
        help="TFLite weights (int8: dynamic range)",
    )
    parser.add_argument("--no-tflite", action="store_true", help="SavedModel only")
    parser.add_argument(
        "--serve", type=int, metavar="PORT", help="then serve on this port (0 picks a free one)"
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=None,
        help="stop serving after this many requests (default: never)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="smoke-test size: 2 shapes images of 64 px"
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.num_images, args.image_size = 2, 64
    return args


def load_images(args):
    """The first `--num-images` images of the split, each as uint8 `(1, H, W, 3)`."""
    if args.data == "shapes":
        source = kseg.data.load_dataset(
            "shapes", args.split, num_samples=args.num_images, image_size=args.image_size
        )
    else:
        source = kseg.data.load_dataset(args.data, args.split)
    return [
        np.clip(np.rint(image.numpy()), 0, 255).astype(np.uint8)[None]
        for image, _ in source.take(args.num_images)
    ]


def tflite_runner(path):
    """The "serving_default" signature of a TFLite file, from LiteRT or TensorFlow's interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        # tf.lite.Interpreter announces its move to ai_edge_litert; both run the same file.
        warnings.simplefilter("ignore", UserWarning)
        return Interpreter(model_path=str(path)).get_signature_runner("serving_default")


def compare(name, run, images, keras_logits):
    """Label agreement and largest logit difference of an artefact against the Keras model."""
    agree, total, worst = 0, 0, 0.0
    for image, expected in zip(images, keras_logits):
        outputs = {key: np.asarray(value) for key, value in run(images=image).items()}
        agree += int(np.sum(outputs["labels"] == expected.argmax(-1)))
        total += expected[..., 0].size
        worst = max(worst, float(np.max(np.abs(outputs["logits"] - expected))))
    figures = {"label_agreement": agree / total, "max_abs_logit_difference": worst}
    print(
        f"{name:10s} labels agree on {100 * figures['label_agreement']:.2f}% of pixels, "
        f"largest logit difference {worst:.2e}"
    )
    return figures


def make_handler(serving, counter):
    """An HTTP handler answering POST /predict (image bytes) with a PNG of class ids."""

    class PredictHandler(BaseHTTPRequestHandler):
        def do_POST(self):
            if self.path != "/predict":
                self.send_error(404, "POST the image to /predict")
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                image = tf.io.decode_image(body, channels=3, expand_animations=False)
            except tf.errors.InvalidArgumentError:
                self.send_error(400, "the request body is not a PNG, JPEG, BMP or GIF image")
                return
            labels = serving(images=tf.cast(image, tf.uint8)[None])["labels"][0]
            reply = tf.io.encode_png(tf.cast(labels, tf.uint8)[..., None]).numpy()
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            counter.append(self.path)

        def log_message(self, format, *args):
            sys.stderr.write(f"served {self.command} {self.path}: {format % args}\n")

    return PredictHandler


def serve(serving, port, max_requests=None):
    """Answers requests with the SavedModel's signature until interrupted or `max_requests`."""
    counter = []
    # One request at a time: the model is the bottleneck, and `handle_request` then returns only
    # once the reply has gone out, so `max_requests` is exact.
    server = HTTPServer(("127.0.0.1", port), make_handler(serving, counter))
    print(f"serving on http://127.0.0.1:{server.server_address[1]}/predict", flush=True)
    try:
        while max_requests is None or len(counter) < max_requests:
            server.handle_request()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv=None):
    """Export, reload, compare with Keras, optionally serve; returns the parity figures."""
    args = parse_args(argv)
    if not Path(args.model).is_file():
        raise SystemExit(f"model file not found: {args.model}")
    model = keras.saving.load_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    saved = kseg.export.saved_model(model, out / "saved_model", include_logits=True)
    print(f"wrote SavedModel {saved}")
    artefacts = {"savedmodel": tf.saved_model.load(str(saved)).signatures["serving_default"]}
    if not args.no_tflite:
        lite = kseg.export.tflite_from_saved_model(
            saved, out / "model.tflite", quantization=args.quantization
        )
        print(
            f"wrote {lite} ({lite.stat().st_size / 1e6:.2f} MB, quantization {args.quantization})"
        )
        artefacts["tflite"] = tflite_runner(lite)

    images = load_images(args)
    keras_logits = [model.predict(image.astype(np.float32), verbose=0) for image in images]
    parity = {name: compare(name, run, images, keras_logits) for name, run in artefacts.items()}
    parity["images"] = len(images)
    parity["quantization"] = None if args.no_tflite else args.quantization
    (out / "parity.json").write_text(json.dumps(parity, indent=2))
    print(f"wrote {out / 'parity.json'}")

    if args.serve is not None:
        serve(artefacts["savedmodel"], args.serve, args.max_requests)
    return parity


if __name__ == "__main__":
    main()
