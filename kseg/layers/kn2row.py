"""A stride-1 convolution as one matrix product and shifted sums (the kn2row method)."""


def kn2row_conv2d(inputs, kernel, padding):
    """Stride-1, undilated 2D convolution of NHWC `inputs` as one matmul plus shifted sums.

    Every kernel tap `(i, j)` is a 1x1 convolution, so one matrix product of the
    `(batch * height * width, in_channels)` input with the taps side by side,
    `(in_channels, kernel_h * kernel_w * out_channels)`, gives all of them at once; the
    output is the sum of each tap's slice shifted by its offset (Vasudevan et al. 2017,
    "Parallel Multi Channel Convolution using General Matrix Multiplication"). It pays when
    the input is wide: on 2 AVX-512 cores TensorFlow's oneDNN convolution runs the 3x3,
    2048-to-512 head of torchvision's FCN on a 49x66 map at 334 GFLOP/s, the matmul at 452
    (`benchmarks/kn2row.py` measures the shapes kseg's models use).

    Args:
        inputs: `(batch, height, width, in_channels)` tensor.
        kernel: `(kernel_h, kernel_w, in_channels, out_channels)` tensor of the same dtype.
        padding: "same" (TensorFlow's convention: the extra row and column of an even
            kernel go after) or "valid".

    Returns:
        The `(batch, out_h, out_w, out_channels)` convolution, as `tf.nn.conv2d`.

    Example:
    >>> import tensorflow as tf
    >>> from kseg.layers.kn2row import kn2row_conv2d
    >>> x = tf.random.normal((1, 7, 9, 16))
    >>> k = tf.random.normal((3, 3, 16, 4))
    >>> ref = tf.nn.conv2d(x, k, 1, "SAME")
    >>> bool(tf.reduce_max(tf.abs(kn2row_conv2d(x, k, "same") - ref)) < 1e-3)
    True
    """
    import tensorflow as tf

    kernel_h, kernel_w, in_channels, out_channels = kernel.shape
    shape = tf.shape(inputs)
    batch, height, width = shape[0], shape[1], shape[2]
    taps = tf.reshape(tf.transpose(kernel, [2, 0, 1, 3]), [in_channels, -1])
    products = tf.matmul(tf.reshape(inputs, [-1, in_channels]), taps)
    products = tf.reshape(products, [batch, height, width, kernel_h * kernel_w * out_channels])
    if padding == "same":
        top, left = (kernel_h - 1) // 2, (kernel_w - 1) // 2
        products = tf.pad(
            products,
            [[0, 0], [top, kernel_h - 1 - top], [left, kernel_w - 1 - left], [0, 0]],
        )
        out_h, out_w = height, width
    else:
        out_h, out_w = height - kernel_h + 1, width - kernel_w + 1
    # Output pixel (h, w) takes tap (i, j)'s product at padded pixel (h + i, w + j).
    shifted = []
    for i in range(kernel_h):
        for j in range(kernel_w):
            first = (i * kernel_w + j) * out_channels
            shifted.append(
                products[:, i : i + out_h, j : j + out_w, first : first + out_channels]
            )
    return tf.add_n(shifted)
