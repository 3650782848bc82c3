"""Is bfloat16 a speed lever on this CPU? One convolution and one matmul, float32 versus bfloat16.

`kseg.training.set_precision("auto")` picks mixed_bfloat16 on CPUs only where this ratio is
above 1: on AVX512_BF16 CPUs without AMX, TensorFlow's oneDNN bfloat16 kernels measured slower
than float32.

Usage:
    python benchmarks/bf16_kernels.py [--out benchmarks/results/bf16_kernels.json]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

import results_io


def seconds_per_call(function, *args, repeats=10):
    function(*args).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        function(*args).numpy()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=results_io.result_path("bf16_kernels"))
    args = parser.parse_args()

    conv = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"))
    matmul = tf.function(lambda a, b: tf.matmul(a, b))
    images = tf.random.normal((4, 64, 64, 256))
    kernel = tf.random.normal((3, 3, 256, 256))
    matrix = tf.random.normal((2048, 2048))
    conv_flops = 2 * 4 * 64 * 64 * 256 * 256 * 9
    matmul_flops = 2 * 2048**3
    report = {"machine": results_io.machine_facts()}
    for dtype in (tf.float32, tf.bfloat16):
        conv_s = seconds_per_call(conv, tf.cast(images, dtype), tf.cast(kernel, dtype))
        matmul_s = seconds_per_call(matmul, tf.cast(matrix, dtype), tf.cast(matrix, dtype))
        report[dtype.name] = {
            "conv3x3_256_gflops": conv_flops / conv_s / 1e9,
            "matmul_2048_gflops": matmul_flops / matmul_s / 1e9,
        }
        print(
            f"{dtype.name:9s} conv {report[dtype.name]['conv3x3_256_gflops']:6.0f} GFLOP/s   "
            f"matmul {report[dtype.name]['matmul_2048_gflops']:6.0f} GFLOP/s"
        )
    for key in ("conv3x3_256_gflops", "matmul_2048_gflops"):
        ratio = report["bfloat16"][key] / report["float32"][key]
        report[f"bf16/fp32 {key}"] = ratio
        print(f"bf16/fp32 {key}: {ratio:.2f}x")
    print(f"wrote {results_io.write_result(args.out, report)}")


if __name__ == "__main__":
    main()
