"""Published checkpoints in the Keras cache: fetched once, verified, never left half-written.

`fetch_checkpoint` downloads with `keras.utils.get_file` but guards against what that function
leaves behind. `get_file` writes straight to the final file name, so a process killed mid-download
leaves a truncated file that a later call without a hash takes for the real one; and when a
downloaded file fails its hash check it raises but keeps the bad file in the cache. It also only
knows full MD5 or SHA-256 digests, while torchvision publishes the first hex digits of a file's
SHA-256 in its name (`deeplabv3_resnet50_coco-cd0a2569.pth`, the convention torch.hub checks).

So here a download goes to a temporary name in the cache folder, is checked against a full
SHA-256 or such a prefix, and only then is renamed (`os.replace`, atomic) to its final name; a
file that fails the check is deleted and `ChecksumMismatchError` names it, its URL and both
hashes. A cached file with the right hash is used without touching the network. When the fetch
itself fails (offline, proxy, HTTP error), `CheckpointDownloadError` names the URL and the exact
path where a copy downloaded elsewhere can be placed, with the hash it must have.

`atomic_path` and `cached_conversion_path` give the same guarantee to the Keras weights a
converter writes beside a checkpoint.
"""

import contextlib
import hashlib
import os
import re
import secrets
import tempfile
import urllib.parse
from pathlib import Path

from kseg.backbones.bundled import download_failure_reason

DEFAULT_CACHE_SUBDIR = "kseg/pretrained"
"""Folder under the Keras cache (`$KERAS_HOME`, by default `~/.keras`) holding checkpoints."""

MIN_HASH_PREFIX_LENGTH = 8
"""Fewest hex digits accepted as a SHA-256 prefix (torchvision's file names carry 8)."""

# torch.hub's convention: the hex digits between the last "-" and the first "." that follows.
_NAME_HASH = re.compile(r"-([a-f0-9]+)\.")
_PARTIAL_MARK = ".part-"


class ChecksumMismatchError(ValueError):
    """A checkpoint's SHA-256 differs from the expected one; the file was deleted."""


class CheckpointDownloadError(RuntimeError):
    """A checkpoint could not be fetched; the message names the URL and where to put a copy."""


def hash_prefix_in_name(url_or_name):
    """The SHA-256 prefix a file name carries by torch.hub's convention, or None.

    The convention puts the first hex digits of the file's SHA-256 after the last `-` of the
    name, before its extension, as in torchvision's published checkpoints.

    Args:
        url_or_name: a URL, path or bare file name.

    Returns:
        The lower-case hex digits, or None when the name carries none.

    Example:
        >>> url = "https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth"
        >>> kseg.pretrained.hash_prefix_in_name(url)
        'cd0a2569'
        >>> kseg.pretrained.hash_prefix_in_name("model.pth") is None
        True
    """
    name = _file_name(str(url_or_name))
    matches = _NAME_HASH.findall(name)
    return matches[-1] if matches else None


def sha256_of_file(path, chunk_size=1 << 20):
    """The SHA-256 of the file at `path`, as 64 lower-case hex digits.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "hello.txt"
        >>> _ = path.write_bytes(b"hello")
        >>> kseg.pretrained.sha256_of_file(path)[:16]
        '2cf24dba5fb0a30e'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_cache_path(
    url, *, file_name=None, cache_subdir=DEFAULT_CACHE_SUBDIR, cache_dir=None
):
    """The path where `fetch_checkpoint` keeps (and looks for) the file of `url`.

    It is `<cache_dir>/<cache_subdir>/<file_name>`, where `cache_dir` defaults to the Keras
    cache (`$KERAS_HOME`, else `~/.keras`, else `/tmp/.keras` when the home folder is not
    writable, as `keras.utils.get_file` decides) and `file_name` to the last part of the URL.
    A file placed there by hand is used by `fetch_checkpoint` when its hash matches.

    Args:
        url: the checkpoint's URL.
        file_name: name to store the file under, instead of the URL's.
        cache_subdir: folder under the cache; an absolute path is used as it is.
        cache_dir: cache folder instead of the Keras one.

    Returns:
        A `pathlib.Path` (the folder is not created).

    Example:
        >>> path = kseg.pretrained.checkpoint_cache_path(
        ...     "https://example.com/models/fcn-1167a1af.pth", cache_dir="/data/cache")
        >>> path.as_posix()
        '/data/cache/kseg/pretrained/fcn-1167a1af.pth'
    """
    name = _file_name(url) if file_name is None else str(file_name)
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(
            "`file_name` must be a bare file name, and the URL must end with one. "
            f"Received: url={url!r}, file_name={file_name!r}"
        )
    return _cache_folder(cache_subdir, cache_dir) / name


def fetch_checkpoint(
    url,
    *,
    sha256=None,
    hash_prefix=None,
    file_name=None,
    cache_subdir=DEFAULT_CACHE_SUBDIR,
    cache_dir=None,
):
    """Returns the local path of a published checkpoint, downloading and verifying it once.

    A file already at `checkpoint_cache_path(url, ...)` whose SHA-256 matches is returned
    without network access. Otherwise the file is fetched with `keras.utils.get_file` into a
    temporary name beside it, verified, and renamed into place; a cached file with the wrong
    hash (an older partial download, say) is replaced. Nothing that failed the check stays in
    the cache. Without `sha256` or `hash_prefix` the file is not verified.

    Args:
        url: the checkpoint's URL (`https://...`, or `file://...` for a local copy).
        sha256: the file's full SHA-256 (64 hex digits).
        hash_prefix: the first hex digits (at least 8) of the file's SHA-256, as torchvision
            publishes in its file names (`hash_prefix_in_name`). If both are given they must
            agree.
        file_name: name to store the file under, instead of the URL's.
        cache_subdir: folder under the Keras cache; an absolute path is used as it is.
        cache_dir: cache folder instead of the Keras one (`$KERAS_HOME`, else `~/.keras`).

    Returns:
        The `pathlib.Path` of the verified file.

    Raises:
        ChecksumMismatchError: the downloaded file's hash differs (the file was deleted).
        CheckpointDownloadError: the file could not be fetched; the message names the URL and
            the path where a copy downloaded elsewhere can be placed.

    Example:
        >>> import pathlib, tempfile
        >>> cache = pathlib.Path(tempfile.mkdtemp())
        >>> url = "https://example.com/models/greeting-2cf24dba.pth"
        >>> target = kseg.pretrained.checkpoint_cache_path(url, cache_dir=cache)
        >>> target.parent.mkdir(parents=True)
        >>> _ = target.write_bytes(b"hello")  # a copy placed by hand: no download happens
        >>> kseg.pretrained.fetch_checkpoint(url, hash_prefix="2cf24dba", cache_dir=cache) == target
        True
    """
    expected = _expected_hash(sha256, hash_prefix)
    target = checkpoint_cache_path(
        url, file_name=file_name, cache_subdir=cache_subdir, cache_dir=cache_dir
    )
    stale_note = ""
    if target.is_file():
        actual = sha256_of_file(target)
        if expected is None or actual.startswith(expected):
            return target
        # Most likely a partial file from an interrupted download by another tool: fetch again.
        target.unlink()
        stale_note = (
            f" (a cached {target.name} with SHA-256 {actual} did not match and was removed)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(target)
    partial = target.with_name(f".{target.name}{_PARTIAL_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        _download(url, partial, target, expected, stale_note)
        if expected is not None:
            actual = sha256_of_file(partial)
            if not actual.startswith(expected):
                size = partial.stat().st_size
                raise ChecksumMismatchError(
                    f"the checkpoint {target.name} downloaded from {url} has SHA-256 {actual} "
                    f"({size} bytes), but {_describe(expected)} was expected; the file is "
                    "corrupt, truncated or not the published one, and was deleted"
                )
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return target


def cached_conversion_path(checkpoint_path, suffix=".weights.h5", version=None):
    """Where the Keras weights converted from `checkpoint_path` are cached: beside it.

    The converted file keeps the checkpoint's name (hash included) without its extension, adds
    `version` when given (so a changed converter writes a new file instead of reusing an old
    conversion) and ends with `suffix`. Write it with `atomic_path`.

    Args:
        checkpoint_path: path of the downloaded checkpoint.
        suffix: ending of the converted file, starting with "." (Keras needs `.weights.h5`
            for `save_weights`).
        version: converter version tag, or None.

    Returns:
        A `pathlib.Path` in the checkpoint's folder.

    Example:
        >>> kseg.pretrained.cached_conversion_path(
        ...     "/cache/fcn_resnet50_coco-1167a1af.pth", version="v1").name
        'fcn_resnet50_coco-1167a1af.v1.weights.h5'
    """
    if not isinstance(suffix, str) or not suffix.startswith(".") or "/" in suffix:
        raise ValueError(
            f"`suffix` must be a file ending such as '.weights.h5'. Received: {suffix!r}"
        )
    path = Path(checkpoint_path)
    tag = f".{version}" if version is not None else ""
    if "/" in tag or os.sep in tag:
        raise ValueError(f"`version` must not contain a path separator. Received: {version!r}")
    return path.with_name(f"{path.stem}{tag}{suffix}")


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write `path` through: it appears complete or not at all.

    The temporary file sits in the same folder and ends with the same name (so writers that
    check the ending, such as Keras's `save_weights` with `.weights.h5`, accept it). When the
    block finishes, the file is renamed onto `path` with `os.replace`, which is atomic; when
    the block raises, or the process is killed, `path` is untouched and the temporary file is
    removed (or, after a kill, left under a hidden name that is never read as `path`).

    Args:
        path: the file to write.

    Yields:
        The `pathlib.Path` to write to.

    Raises:
        FileNotFoundError: the block finished without writing the temporary file.

    Example:
        >>> import pathlib, tempfile
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "numbers.txt"
        >>> with kseg.pretrained.atomic_path(target) as temporary:
        ...     _ = temporary.write_text("1 2 3")
        >>> target.read_text()
        '1 2 3'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(
                f"nothing was written to the temporary file {temporary} for {path}"
            )
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _file_name(url):
    return os.path.basename(urllib.parse.urlsplit(url).path)


def _cache_folder(cache_subdir, cache_dir):
    if cache_dir is None:
        from keras.src.backend import config as keras_config

        base = os.path.expanduser(keras_config.keras_home())
        # keras.utils.get_file's rule: an unwritable Keras home falls back to /tmp/.keras.
        if not os.access(base, os.W_OK):
            base = os.path.join(tempfile.gettempdir(), ".keras")
    else:
        base = os.path.expanduser(os.fspath(cache_dir))
    return Path(base) / cache_subdir


def _expected_hash(sha256, hash_prefix):
    """The hex digits the file's SHA-256 must start with (all 64 for a full hash), or None."""
    checked = {}
    for field, value, digits in (
        ("sha256", sha256, "64"),
        ("hash_prefix", hash_prefix, f"{MIN_HASH_PREFIX_LENGTH} to 64"),
    ):
        if value is None:
            continue
        low = 64 if field == "sha256" else MIN_HASH_PREFIX_LENGTH
        if not isinstance(value, str) or not re.fullmatch(f"[0-9a-fA-F]{{{low},64}}", value):
            raise ValueError(
                f"`{field}` must be {digits} hex digits of a SHA-256. Received: {field}={value!r}"
            )
        checked[field] = value.lower()
    if len(checked) == 2 and not checked["sha256"].startswith(checked["hash_prefix"]):
        raise ValueError(
            "`sha256` and `hash_prefix` disagree. "
            f"Received: sha256={sha256!r}, hash_prefix={hash_prefix!r}"
        )
    return checked.get("sha256", checked.get("hash_prefix"))


def _describe(expected):
    if len(expected) == 64:
        return f"SHA-256 {expected}"
    return f"a SHA-256 starting with {expected}"


def _download(url, partial, target, expected, stale_note):
    import keras

    try:
        # An absolute cache_subdir makes get_file write exactly at `partial`.
        keras.utils.get_file(fname=partial.name, origin=url, cache_subdir=str(partial.parent))
    except Exception as error:
        reason = download_failure_reason(error)
        check = f" (it must have {_describe(expected)})" if expected is not None else ""
        raise CheckpointDownloadError(
            f"could not download the checkpoint {target.name} from {url} ({reason}){stale_note}. "
            f"Download it where the URL is reachable and place it at {target}{check}; "
            "fetch_checkpoint then uses it without network access"
        ) from error
    if not partial.is_file():
        raise CheckpointDownloadError(f"downloading {url} produced no file at {partial}")


def _remove_abandoned_partials(target):
    """Deletes partial downloads of `target` left by processes that no longer run."""
    for partial in target.parent.glob(f".{target.name}{_PARTIAL_MARK}*"):
        pid = partial.name[len(f".{target.name}{_PARTIAL_MARK}") :].split("-", 1)[0]
        if pid.isdigit() and not _process_running(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()


def _process_running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
