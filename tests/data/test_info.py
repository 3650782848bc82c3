import numpy as np
import pytest

from kseg.data import DatasetInfo


def test_fields_are_normalised():
    info = DatasetInfo(2, ["a", "b"], 255, [[0, 0, 0], (255, 10, 3)])
    assert info.class_names == ("a", "b")
    assert info.palette == ((0, 0, 0), (255, 10, 3))
    assert info.palette_array().dtype == np.uint8 and info.palette_array().shape == (2, 3)
    assert info == DatasetInfo(2, ("a", "b"), 255, ((0, 0, 0), (255, 10, 3)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2, "class_names": ["a"]}, "class_names"),
        ({"num_classes": 1, "palette": [(0, 0, 300)]}, "palette"),
        ({"num_classes": 2, "palette": [(0, 0, 0)]}, "palette"),
        ({"num_classes": 2, "ignore_label": -1}, "ignore_label"),
    ],
)
def test_invalid_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DatasetInfo(**kwargs)


def test_no_palette():
    with pytest.raises(ValueError, match="no palette"):
        DatasetInfo(None).palette_array()
