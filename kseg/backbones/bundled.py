"""ImageNet weights offline: the files kseg ships, and one clear line when a download fails.

`weights="imagenet"` makes keras.applications fetch a file into the Keras cache. kseg ships
the one small file its demo and tutorials need, and `get_backbone` loads it instead of
downloading when it is the very file keras.applications would fetch. Any other fetch that fails
(no network, proxy, HTTP error) becomes a `WeightsDownloadError` naming the file, its URL and
the path where a copy downloaded elsewhere is found next time.
"""

import contextlib
from pathlib import Path

WEIGHTS_FOLDER = Path(__file__).parent / "weights"

# keras.applications' own file names, so a file can also be dropped into the Keras cache
# ($KERAS_HOME/models) where `weights="imagenet"` looks first.
BUNDLED_IMAGENET_WEIGHTS = {
    ("mobilenetv2", 0.35): "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
}

# The input sizes MobileNetV2 has ImageNet weights for; any other input loads the 224 ones.
_MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)


class WeightsDownloadError(RuntimeError):
    """ImageNet weights could not be fetched; the message names the file and where to put it."""


def bundled_weights_path(name, alpha=None):
    """Path of ImageNet weights that ship with kseg for backbone `name`, or None.

    kseg ships one small file, MobileNetV2 with width 0.35 (2 MB, keras.applications' no-top
    weights for 224-pixel inputs), so that the demo and tutorials fine-tune a pretrained
    backbone on a machine with no network. `get_backbone(..., weights="imagenet")` uses it by
    itself when it is the file keras.applications would fetch (see `bundled_imagenet_weights`).

    Args:
        name: backbone name, e.g. "mobilenetv2".
        alpha: width multiplier of a MobileNet.

    Returns:
        A `pathlib.Path`, or None when kseg ships no weights for that backbone.

    Example:
        >>> import kseg
        >>> kseg.backbones.bundled_weights_path("mobilenetv2", alpha=0.35).name
        'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5'
    """
    filename = BUNDLED_IMAGENET_WEIGHTS.get((name.lower(), alpha))
    if filename is None:
        return None
    path = WEIGHTS_FOLDER / filename
    return path if path.is_file() else None


def _mobilenet_v2_file(input_shape, alpha=1.0, **_):
    # keras.applications.MobileNetV2 loads the weights of its input size when the input is
    # square and one of _MOBILENET_V2_SIZES, else (unknown or other sizes) the 224 ones.
    rows, cols = input_shape[0], input_shape[1]
    size = rows if rows == cols and rows in _MOBILENET_V2_SIZES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{size}_no_top.h5"


_KERAS_FILE_NAMES = {"mobilenetv2": _mobilenet_v2_file}


def bundled_imagenet_weights(name, input_shape=(None, None, 3), **app_kwargs):
    """The bundled file `keras.applications` would download for a no-top backbone, or None.

    Only an exact match counts: for MobileNetV2 the width (`alpha`) and the input size decide
    the file, so alpha 0.35 with inputs of unknown size (or non-square, or 224) matches the
    bundled file, while alpha 0.5, or square 128-pixel inputs, need other files.

    Args:
        name: backbone name as `get_backbone` takes it.
        input_shape: the backbone's `(height, width, 3)`.
        **app_kwargs: the keras.applications arguments, e.g. `alpha`.

    Returns:
        A `pathlib.Path` to load with `weights=path`, or None.

    Example:
        >>> import kseg
        >>> kseg.backbones.bundled_imagenet_weights("mobilenetv2", alpha=0.35).name
        'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5'
        >>> print(kseg.backbones.bundled_imagenet_weights("mobilenetv2", (128, 128, 3), alpha=0.35))
        None
    """
    file_name = _KERAS_FILE_NAMES.get(name.lower())
    if file_name is None:
        return None
    wanted = file_name(input_shape, **app_kwargs)
    if wanted not in BUNDLED_IMAGENET_WEIGHTS.values():
        return None
    path = WEIGHTS_FOLDER / wanted
    return path if path.is_file() else None


def download_failure_reason(error):
    """The short reason of an error `keras.utils.get_file` raised, for a one-line message.

    Example:
        >>> kseg.backbones.bundled.download_failure_reason(
        ...     Exception("URL fetch failure on https://x/w.h5: None -- [Errno -2] Name unknown"))
        '[Errno -2] Name unknown'
    """
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    # keras.utils.get_file words it "URL fetch failure on <origin>: <code> -- <reason>".
    return reason.split(" -- ", 1)[-1]


def _failed_fetch(error):
    """`(origin, file name, target path)` of the keras.utils.get_file call `error` left, or None."""
    fetch_failure = isinstance(error, OSError) or str(error).startswith("URL fetch failure")
    if not fetch_failure:
        return None
    traceback = error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        names = frame.f_locals
        if frame.f_code.co_name == "get_file" and {"origin", "download_target"} <= set(names):
            target = Path(names["download_target"])
            return names["origin"], target.name, target
        traceback = traceback.tb_next
    return None


@contextlib.contextmanager
def explain_failed_download():
    """Turns a failed keras.applications weights download into a one-line `WeightsDownloadError`.

    Inside the block, an error that `keras.utils.get_file` raised while fetching (a URL,
    HTTP, connection or timeout error) is re-raised as `WeightsDownloadError` naming the file,
    its URL and the exact path of the Keras cache (`$KERAS_HOME/models`, by default
    `~/.keras/models`) where a copy downloaded on another machine is found next time. Other
    errors pass unchanged.

    Example:
        >>> import kseg
        >>> with kseg.backbones.explain_failed_download():
        ...     backbone = kseg.backbones.get_backbone("tiny")
    """
    try:
        yield
    except WeightsDownloadError:
        raise
    except Exception as error:
        fetch = _failed_fetch(error)
        if fetch is None:
            raise
        origin, name, target = fetch
        raise WeightsDownloadError(
            f"could not download the ImageNet weights file {name} from {origin} "
            f"({download_failure_reason(error)}); "
            f"download it on a machine with network access and copy it to {target}, or pass "
            "the path of a weights file instead of 'imagenet'"
        ) from None
