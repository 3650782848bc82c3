"""Pytest set-up shared by the test suite and the docstring examples of the package.

`python -m pytest` collects `tests/` and, with `--doctest-modules` (pyproject.toml), every
docstring example in `kseg/`. The examples run with `np`, `tf`, `keras` and `kseg` already
imported, as the docstrings assume, each under the float32 policy, and Keras's global state is
cleared after each module's examples, as after each test module. An example that fails only
because a package of an optional extra is not installed is reported as skipped, with the extra
to install.
"""

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from _pytest.doctest import DoctestItem, DoctestModule  # noqa: E402

ROOT = Path(__file__).resolve().parent
TESTS = ROOT / "tests"

# Scripts, not modules of the package: `pytest .` must not import them for their docstrings.
collect_ignore = ["benchmarks", "examples", "docs", "notebooks"]

# The packages of kseg's optional extras (pyproject.toml) that examples import, by import name.
EXTRA_PACKAGES = {"tf2onnx": "onnx", "onnxruntime": "onnx", "skimage": "weak", "gco": "weak"}
EXTRA_PACKAGES["keras_hub"] = "hub"


def pytest_ignore_collect(collection_path):
    """Only the package's modules and the test files are imported for their docstrings.

    Conftest files (loaded by pytest as plugins already; several share the name `conftest`) and
    helper scripts under tests/ (fixture generators that need torch, shared helpers) are not.
    """
    path = Path(collection_path)
    if path.suffix != ".py":
        return None
    if path.name == "conftest.py":
        return True
    if TESTS in path.parents and not path.name.startswith("test_"):
        return True
    return None


def missing_extra_package(error):
    """The optional extra's package whose absence raised `error` (or its causes), else None."""
    while error is not None:
        if isinstance(error, ImportError) and error.name:
            package = error.name.partition(".")[0]
            if package in EXTRA_PACKAGES and importlib.util.find_spec(package) is None:
                return package
        error = error.__cause__ or error.__context__
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Reports an example that failed only for want of an optional extra as skipped."""
    report = yield
    if isinstance(item, DoctestItem) and report.failed and call.excinfo is not None:
        # doctest wraps the example's exception as (type, value, traceback) in `exc_info`.
        exc_info = getattr(call.excinfo.value, "exc_info", None)
        package = missing_extra_package(exc_info[1] if exc_info else None)
        if package:
            extra = EXTRA_PACKAGES[package]
            report.outcome = "skipped"
            report.longrepr = (
                str(item.path),
                item.reportinfo()[1] or 0,
                f"Skipped: needs {package}, from the {extra} extra: pip install 'kseg[{extra}]'",
            )
    return report


@pytest.fixture(autouse=True)
def _doctest_setup(request):
    """Each docstring example gets `np`, `tf`, `keras` and `kseg` and runs under float32."""
    if not isinstance(request.node, DoctestItem):
        yield
        return
    # Imported here, not at the top: a package that fails to import fails its examples and
    # tests, not the loading of this file.
    import kseg

    request.getfixturevalue("doctest_namespace").update(np=np, tf=tf, keras=keras, kseg=kseg)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(autouse=True, scope="module")
def _release_models_after_doctest_module(request):
    """Drop the models a module's examples built, so the suite's memory stays flat."""
    yield
    if isinstance(request.node, DoctestModule):
        keras.backend.clear_session(free_memory=True)
