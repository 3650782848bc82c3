"""Loading a benchmark script as a module, as the tests of benchmarks/ need it."""

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name):
    """The module of `benchmarks/<name>.py`.

    The scripts import their siblings (`results_io`, `locations`) as they do when run, so
    benchmarks/ is on the path while the module executes.
    """
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module
