import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from keras.src.utils import file_utils

import kseg
from kseg.pretrained.download import (
    CheckpointDownloadError,
    ChecksumMismatchError,
    atomic_path,
    cached_conversion_path,
    checkpoint_cache_path,
    fetch_checkpoint,
    hash_prefix_in_name,
)

CONTENT = b"not really a checkpoint, but bytes with a known hash\n" * 100
SHA256 = hashlib.sha256(CONTENT).hexdigest()
PREFIX = SHA256[:8]


def published(tmp_path, content=CONTENT, name=f"model-{PREFIX}.pth"):
    """A file served by `file://` URL, as a publisher's server would serve it."""
    folder = tmp_path / "server"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path.as_uri()


def cache_files(cache):
    """Every file under the cache folder, hidden ones (partial downloads) included."""
    return sorted(p.relative_to(cache).as_posix() for p in Path(cache).rglob("*") if p.is_file())


def forbid_download(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"the test tried to download {url}")

    monkeypatch.setattr(file_utils, "urlretrieve", refuse)


def no_proxy(monkeypatch):
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.mark.parametrize("check", [{"sha256": SHA256}, {"hash_prefix": PREFIX}, {}])
def test_good_file_is_verified_then_reused_without_network(tmp_path, monkeypatch, check):
    url = published(tmp_path)
    cache = tmp_path / "cache"
    path = fetch_checkpoint(url, cache_dir=cache, **check)
    assert path == cache / "kseg" / "pretrained" / f"model-{PREFIX}.pth"
    assert path.read_bytes() == CONTENT
    assert cache_files(cache) == [f"kseg/pretrained/model-{PREFIX}.pth"]

    forbid_download(monkeypatch)
    assert fetch_checkpoint(url, cache_dir=cache, **check) == path


def test_hash_checks_ignore_case(tmp_path):
    path = fetch_checkpoint(published(tmp_path), sha256=SHA256.upper(), cache_dir=tmp_path / "c")
    assert path.read_bytes() == CONTENT


def test_file_placed_by_hand_in_the_keras_cache_is_used_offline(tmp_path, monkeypatch):
    kseg.testing.offline_keras_cache(monkeypatch, tmp_path / "home")
    url = "https://example.invalid/models/model.pth"
    target = checkpoint_cache_path(url)
    assert target == tmp_path / "home" / "kseg" / "pretrained" / "model.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(CONTENT)
    assert fetch_checkpoint(url, hash_prefix=PREFIX) == target


@pytest.mark.parametrize(
    "served", [b"some other file", CONTENT[: len(CONTENT) // 2]], ids=["wrong", "truncated"]
)
@pytest.mark.parametrize("check", [{"sha256": SHA256}, {"hash_prefix": PREFIX}])
def test_mismatching_download_raises_naming_it_and_leaves_nothing(tmp_path, served, check):
    url = published(tmp_path, served)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatchError) as raised:
        fetch_checkpoint(url, cache_dir=cache, **check)
    message = str(raised.value)
    assert f"model-{PREFIX}.pth" in message
    assert url in message
    assert hashlib.sha256(served).hexdigest() in message
    assert next(iter(check.values())) in message
    assert cache_files(cache) == []


def test_wrong_cached_file_is_replaced_by_a_verified_download(tmp_path):
    url = published(tmp_path)
    cache = tmp_path / "cache"
    target = checkpoint_cache_path(url, cache_dir=cache)
    target.parent.mkdir(parents=True)
    target.write_bytes(CONTENT[:100])  # what an interrupted download elsewhere leaves
    assert fetch_checkpoint(url, hash_prefix=PREFIX, cache_dir=cache).read_bytes() == CONTENT
    assert cache_files(cache) == [f"kseg/pretrained/model-{PREFIX}.pth"]


def test_unreachable_url_names_the_url_and_the_cache_path(tmp_path, monkeypatch):
    no_proxy(monkeypatch)
    url = "http://127.0.0.1:9/x-deadbeef.pth"  # the discard port: nothing listens
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointDownloadError) as raised:
        fetch_checkpoint(url, hash_prefix="deadbeef", cache_dir=cache)
    message = str(raised.value)
    assert url in message
    assert str(cache / "kseg" / "pretrained" / "x-deadbeef.pth") in message
    assert "deadbeef" in message.split(" place it at ")[1]
    assert cache_files(cache) == []


def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    def half_then_interrupted(url, filename, *args, **kwargs):
        Path(filename).write_bytes(CONTENT[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(file_utils, "urlretrieve", half_then_interrupted)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        fetch_checkpoint(published(tmp_path), cache_dir=cache)
    assert cache_files(cache) == []


def test_partial_download_of_a_dead_process_is_cleaned_up(tmp_path):
    url = published(tmp_path)
    cache = tmp_path / "cache"
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead_pid = int(finished.stdout)
    folder = cache / "kseg" / "pretrained"
    folder.mkdir(parents=True)
    (folder / f".model-{PREFIX}.pth.part-{dead_pid}-0a1b2c3d").write_bytes(b"half")
    # One of a download still running (this process) is left alone.
    running = folder / f".model-{PREFIX}.pth.part-{os.getpid()}-0a1b2c3d"
    running.write_bytes(b"half")
    fetch_checkpoint(url, hash_prefix=PREFIX, cache_dir=cache)
    assert cache_files(cache) == [
        running.relative_to(cache).as_posix(),
        f"kseg/pretrained/model-{PREFIX}.pth",
    ]


@pytest.mark.parametrize(
    "check",
    [
        {"hash_prefix": "abc"},  # too short to mean anything
        {"hash_prefix": "xyz12345"},
        {"sha256": PREFIX},
        {"sha256": SHA256, "hash_prefix": "00000000"},
        {"sha256": 123},
    ],
)
def test_bad_hash_arguments_are_refused_before_any_download(tmp_path, monkeypatch, check):
    forbid_download(monkeypatch)
    with pytest.raises(ValueError, match="sha256|hash_prefix"):
        fetch_checkpoint(published(tmp_path), cache_dir=tmp_path / "cache", **check)


def test_file_name_must_be_bare():
    with pytest.raises(ValueError, match="file_name"):
        checkpoint_cache_path("https://example.com/a.pth", file_name="../a.pth")
    with pytest.raises(ValueError, match="file_name"):
        checkpoint_cache_path("https://example.com/", cache_dir="/c")


def test_hash_prefix_in_name_follows_torch_hub():
    assert hash_prefix_in_name("https://h/models/fcn_resnet50_coco-1167a1af.pth") == "1167a1af"
    assert hash_prefix_in_name("resnet50-0676ba61.pth") == "0676ba61"
    assert hash_prefix_in_name("model.pth") is None
    assert hash_prefix_in_name("https://h/x-1234/model.pth") is None


def test_atomic_path_writes_the_file_whole(tmp_path):
    target = tmp_path / "out" / "model.weights.h5"
    with atomic_path(target) as temporary:
        assert temporary.parent == target.parent
        assert temporary.name.endswith(".weights.h5")
        assert not target.exists()
        temporary.write_bytes(b"done")
    assert target.read_bytes() == b"done"
    assert cache_files(tmp_path / "out") == ["model.weights.h5"]


def test_atomic_path_leaves_nothing_when_the_writer_raises(tmp_path):
    target = tmp_path / "model.weights.h5"
    with pytest.raises(RuntimeError, match="conversion failed"):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("conversion failed")
    assert cache_files(tmp_path) == []

    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("conversion failed")
    assert target.read_bytes() == b"old"
    assert cache_files(tmp_path) == ["model.weights.h5"]


def test_atomic_path_without_a_write_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "model.weights.h5"):
            pass
    assert cache_files(tmp_path) == []


def test_keras_save_weights_accepts_the_temporary_path(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    target = cached_conversion_path(tmp_path / f"model-{PREFIX}.pth", version="v1")
    with atomic_path(target) as temporary:
        model.save_weights(temporary)
    assert target.name == f"model-{PREFIX}.v1.weights.h5"
    model.load_weights(target)


def test_cached_conversion_path_sits_beside_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "deeplabv3_resnet50_coco-cd0a2569.pth"
    assert (
        cached_conversion_path(checkpoint)
        == tmp_path / "deeplabv3_resnet50_coco-cd0a2569.weights.h5"
    )
    with pytest.raises(ValueError, match="suffix"):
        cached_conversion_path(checkpoint, suffix="h5")
    with pytest.raises(ValueError, match="version"):
        cached_conversion_path(checkpoint, version="a/b")
