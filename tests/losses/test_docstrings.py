import doctest
import importlib
import pkgutil

import pytest

import kseg.losses

MODULES = ["kseg.losses"] + [
    f"kseg.losses.{info.name}" for info in pkgutil.iter_modules(kseg.losses.__path__)
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS, extraglobs={"np": __import__("numpy"), "kseg": kseg}
    )
    assert result.failed == 0
