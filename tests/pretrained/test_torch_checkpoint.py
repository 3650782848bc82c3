import io
import os
import pickle
import pickletools
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kseg.pretrained import UnsafeCheckpointError, read_torch_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torch_checkpoints"
ROUND_TRIP_SCRIPT = FIXTURES.parent / "torch_round_trip_reference.py"


def expected(name, *, drop=()):
    """The values torch's own `.numpy()` gave for fixture `name`, in the state dict's order."""
    with np.load(FIXTURES / f"{name}.npz") as arrays:
        return {k: arrays[k] for k in arrays.files if k != "torch_version" and k not in drop}


def assert_same_state(got, want):
    assert list(got) == list(want)
    for key, value in want.items():
        # strict: same shape and dtype (native byte order), not only equal values; nan == nan.
        np.testing.assert_array_equal(got[key], value, strict=True, err_msg=key)
        assert got[key].flags.c_contiguous, key


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("name", ["conv_bn", "views", "dtypes"])
def test_reads_what_pytorch_wrote(name, layout):
    state = read_torch_checkpoint(FIXTURES / f"{name}_{layout}.pth")
    assert_same_state(state, expected(name))


def test_conv_bn_state_dict_has_pytorch_shapes_and_counter():
    state = read_torch_checkpoint(FIXTURES / "conv_bn_zip.pth")
    assert state["conv.weight"].shape == (4, 3, 3, 3)
    assert state["bn.num_batches_tracked"].shape == ()
    assert state["bn.num_batches_tracked"].dtype == np.int64
    assert int(state["bn.num_batches_tracked"]) == 2


def test_shared_storage_views_are_independent_copies():
    state = read_torch_checkpoint(FIXTURES / "views_zip.pth")
    base = np.arange(24, dtype=np.float32).reshape(4, 6) * 0.5 - 3.0
    np.testing.assert_array_equal(state["shared.bottom"], base[2:])
    np.testing.assert_array_equal(state["shared.column"], base[:, 4])
    np.testing.assert_array_equal(state["shared.transposed"], base.T)
    assert state["shared.element"].shape == () and state["shared.element"] == base[3, 5]
    state["shared.top"][:] = 0
    np.testing.assert_array_equal(state["shared.transposed"], base.T)


def test_bfloat16_comes_out_as_exact_float32():
    state = read_torch_checkpoint(FIXTURES / "dtypes_legacy.pth")
    values = state["bfloat16"]
    assert values.dtype == np.float32
    # bfloat16 keeps float32's top 16 bits: the low 16 bits of every value are zero.
    assert not np.any(values.view(np.uint32) & 0xFFFF)
    assert values[0] != np.float32(1 / 3)  # rounded to bfloat16's 8-bit mantissa


def test_big_endian_storages_come_out_in_native_order():
    state = read_torch_checkpoint(FIXTURES / "dtypes_bigendian_zip.pth")
    assert_same_state(state, expected("dtypes", drop=("uint16",)))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_training_checkpoint_gives_the_nested_model_state(layout):
    state = read_torch_checkpoint(FIXTURES / f"conv_bn_nested_{layout}.pth")
    assert_same_state(state, expected("conv_bn"))


def test_explicit_key_and_missing_key():
    path = FIXTURES / "conv_bn_nested_zip.pth"
    assert_same_state(read_torch_checkpoint(path, key="model"), expected("conv_bn"))
    with pytest.raises(ValueError, match=r"conv_bn_nested_zip\.pth.*'ema'.*'epoch', 'model'"):
        read_torch_checkpoint(path, key="ema")
    with pytest.raises(ValueError, match=r"'optimizer'.*not a dict of tensors"):
        read_torch_checkpoint(path, key="optimizer")


def test_checkpoint_without_state_dict_names_its_keys():
    path = FIXTURES / "no_state_dict_zip.pth"
    with pytest.raises(ValueError, match=r"no_state_dict_zip\.pth.*\['epoch', 'best_miou', 'lay"):
        read_torch_checkpoint(path)


def test_reads_from_an_open_file():
    with open(FIXTURES / "views_legacy.pth", "rb") as file:
        assert_same_state(read_torch_checkpoint(file), expected("views"))
    data = (FIXTURES / "views_zip.pth").read_bytes()
    assert_same_state(read_torch_checkpoint(io.BytesIO(data)), expected("views"))


def test_gpu_storage_names_of_old_checkpoints(tmp_path):
    # Before PyTorch 1.13 a tensor saved from a GPU named torch.cuda.FloatStorage, location
    # "cuda:0"; GLOBAL and BINUNICODE carry their own lengths, so the names can be swapped.
    data = (FIXTURES / "views_legacy.pth").read_bytes()
    data = data.replace(b"ctorch\nFloatStorage\n", b"ctorch.cuda\nFloatStorage\n")
    data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
    assert b"torch.cuda\nFloatStorage" in data
    path = tmp_path / "gpu.pth"
    path.write_bytes(data)
    assert_same_state(read_torch_checkpoint(path), expected("views"))


# ---- errors -------------------------------------------------------------------------------


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        read_torch_checkpoint(tmp_path / "absent.pth")


@pytest.mark.parametrize(
    "content",
    [b"resnet50 trained on CamVid, 120 epochs\n", b"", b"\x80\x02K\x07.", bytes(range(256))],
    ids=["text", "empty", "other_pickle", "binary"],
)
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"notes\.pth.*not a PyTorch checkpoint") as error:
        read_torch_checkpoint(path)
    assert not isinstance(error.value, UnsafeCheckpointError)


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_zip(tmp_path, keep):
    data = (FIXTURES / "conv_bn_zip.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"cut\.pth.*truncated or corrupt"):
        read_torch_checkpoint(path)


def test_truncated_legacy_file_names_the_tensor(tmp_path):
    data = (FIXTURES / "conv_bn_legacy.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:-4])  # the last storage written loses its last 4 bytes
    with pytest.raises(ValueError, match=r"cut\.pth: tensor '[\w.]+' .* needs \d+ elements"):
        read_torch_checkpoint(path)


def test_storage_shorter_than_its_tensor(tmp_path):
    path = tmp_path / "short.pth"
    with zipfile.ZipFile(FIXTURES / "conv_bn_zip.pth") as source:
        with zipfile.ZipFile(path, "w") as target:
            for info in source.infolist():
                data = source.read(info)
                if info.filename.endswith("/data/0"):  # conv.weight: 108 float32
                    data = data[:400]
                target.writestr(info, data)
    with pytest.raises(ValueError, match=r"short\.pth: tensor 'conv\.weight' .* needs 108 elem"):
        read_torch_checkpoint(path)


def test_missing_storage_record(tmp_path):
    path = tmp_path / "gap.pth"
    with zipfile.ZipFile(FIXTURES / "conv_bn_zip.pth") as source:
        with zipfile.ZipFile(path, "w") as target:
            for info in source.infolist():
                if not info.filename.endswith("/data/1"):
                    target.writestr(info, source.read(info))
    with pytest.raises(ValueError, match=r"gap\.pth: storage record '\w+/data/1' is missing"):
        read_torch_checkpoint(path)


def test_text_mode_file_and_wrong_type():
    with open(FIXTURES / "conv_bn_zip.pth", encoding="latin1") as file:
        with pytest.raises(TypeError, match="binary mode"):
            read_torch_checkpoint(file)
    with pytest.raises(TypeError, match="received: int"):
        read_torch_checkpoint(3)


# ---- safety -------------------------------------------------------------------------------


def reduce_call(module, name, argument, *, protocol=2):
    """Pickle opcodes that import `module.name` and call it with one string argument."""
    text = argument.encode()
    string = pickle.BINUNICODE + len(text).to_bytes(4, "little") + text
    if protocol >= 4:  # STACK_GLOBAL takes the module and name from the stack
        header = pickle.PROTO + b"\x04"
        target = b"".join(
            pickle.SHORT_BINUNICODE + bytes([len(part)]) + part.encode() for part in (module, name)
        )
        target += pickle.STACK_GLOBAL
    else:
        header = pickle.PROTO + b"\x02"
        target = pickle.GLOBAL + f"{module}\n{name}\n".encode()
    return header + target + string + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP


def as_state_dict_value(call):
    """`{"weight": <call>}`: the call where a tensor would be."""
    body = call[2:-1]  # without PROTO and STOP
    key = b"weight"
    return (
        call[:2]
        + pickle.EMPTY_DICT
        + pickle.BINUNICODE
        + len(key).to_bytes(4, "little")
        + key
        + body
        + pickle.SETITEM
        + pickle.STOP
    )


def zip_checkpoint(data_pkl):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def legacy_checkpoint(main_pickle):
    header = b"".join(
        pickle.dumps(value, protocol=2)
        for value in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001})
    )
    return header + main_pickle + pickle.dumps([], protocol=2)


ATTACKS = {
    "os.system": lambda marker: ("os", "system", f"touch {marker}"),
    "posix.system": lambda marker: ("posix", "system", f"touch {marker}"),
    "builtins.eval": lambda marker: ("builtins", "eval", f"open({str(marker)!r}, 'w')"),
    "builtins.exec": lambda marker: ("builtins", "exec", f"open({str(marker)!r}, 'w')"),
    "subprocess.call": lambda marker: ("subprocess", "call", f"touch {marker}"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("container", ["zip", "legacy", "bare_pickle"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_is_refused_without_side_effects(tmp_path, attack, container, protocol):
    marker = tmp_path / "pwned"
    module, name, argument = ATTACKS[attack](marker)
    call = reduce_call(module, name, argument, protocol=protocol)
    # The opcodes really do call the function when unpickled without restrictions.
    assert any(op.name == "REDUCE" for op, _, _ in pickletools.genops(call))
    payload = as_state_dict_value(call)
    data = {
        "zip": lambda: zip_checkpoint(payload),
        "legacy": lambda: legacy_checkpoint(payload),
        "bare_pickle": lambda: payload,
    }[container]()
    path = tmp_path / "model.pth"
    path.write_bytes(data)
    with pytest.raises(UnsafeCheckpointError, match=rf"model\.pth.*import {module}\.{name}\b"):
        read_torch_checkpoint(path)
    assert not marker.exists()


def test_unrestricted_unpickling_of_the_same_bytes_would_run_code(tmp_path):
    # The control for the test above: plain pickle runs the call (here a harmless one).
    marker = tmp_path / "made_by_pickle"
    call = reduce_call("pathlib", "Path", str(marker))
    assert pickle.loads(call) == marker
    made = reduce_call("os", "mkdir", str(marker))
    pickle.loads(made)
    assert marker.is_dir()
    shutil.rmtree(marker)
    path = tmp_path / "mkdir.pth"
    path.write_bytes(zip_checkpoint(as_state_dict_value(made)))
    with pytest.raises(UnsafeCheckpointError, match="os.mkdir"):
        read_torch_checkpoint(path)
    assert not marker.exists()


def test_whole_model_pickle_is_refused(tmp_path):
    # torch.save(model) names the model's class; a legacy file also names it as a 'module'.
    data = (FIXTURES / "views_legacy.pth").read_bytes()
    data = data.replace(b"ccollections\nOrderedDict\n", b"cmymodels\nSegNet\n", 1)
    path = tmp_path / "whole.pth"
    path.write_bytes(data)
    with pytest.raises(UnsafeCheckpointError, match=r"whole\.pth.*mymodels\.SegNet"):
        read_torch_checkpoint(path)
    module_pid = (
        pickle.PROTO
        + b"\x02"
        + pickle.MARK
        + pickle.BINUNICODE
        + (6).to_bytes(4, "little")
        + b"module"
        + pickle.TUPLE
        + pickle.BINPERSID
        + pickle.STOP
    )
    path.write_bytes(legacy_checkpoint(module_pid))
    with pytest.raises(UnsafeCheckpointError, match="'module'"):
        read_torch_checkpoint(path)


def test_torchscript_archive_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("model/constants.pkl", b"\x80\x02)q\x00.")
        archive.writestr("model/code/__torch__.py", "")
    path = tmp_path / "scripted.pt"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match=r"scripted\.pt: a TorchScript archive"):
        read_torch_checkpoint(path)


# ---- against a live PyTorch ---------------------------------------------------------------


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_live_pytorch_round_trip(tmp_path, layout, torch_python):
    # PyTorch writes a state dict with views, a transposed half tensor and bfloat16 in a child
    # process, with the arrays it holds; the reader must give back exactly those.
    subprocess.run([torch_python, str(ROUND_TRIP_SCRIPT), str(tmp_path), layout], check=True)
    arrays = np.load(tmp_path / "want.npz")
    want = {str(key): arrays[f"v{i}"] for i, key in enumerate(arrays["keys"])}
    assert_same_state(read_torch_checkpoint(os.fspath(tmp_path / "live.pth")), want)
