"""Writing a benchmark's JSON result: the measurements plus the conditions they were taken under.

Every script in `benchmarks/` writes its file through `write_result`, so every file records the
same facts beside its own rows: a `machine` entry (Python, platform, processor, core count, the
versions of the measured libraries, the one/five/fifteen-minute load average at the start and the
end, start and end time in UTC) and the `command` that produced it, from the repository root.
`docs/benchmark_tables.py` reads these entries for the conditions line under each table.

Scripts import it as `import results_io`: `python benchmarks/NAME.py` puts `benchmarks/` first
on the import path.
"""

import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# Recorded when the run imported them; docs/benchmark_tables.py names the same packages.
MEASURED_LIBRARIES = ("tensorflow", "keras", "numpy", "kseg", "keras_cv")


def result_path(name):
    """The default result file of a benchmark: `benchmarks/results/NAME.json`."""
    return str(RESULTS / f"{name}.json")


def load_average():
    """The one-, five- and fifteen-minute load averages, rounded to 0.01."""
    return [round(value, 2) for value in os.getloadavg()]


def utc_now():
    """The current time as an ISO 8601 UTC string to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def processor_name():
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts(**extra):
    """What a result file records about the machine when a run starts.

    Args:
        **extra: more entries, e.g. `threads=2` or a `note` on contention.

    Returns:
        A dict for the result's `machine` entry; `write_result` adds the end of the run to it.
    """
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": processor_name(),
        "cpus": os.cpu_count(),
        "load_average_start": load_average(),
        "started_utc": utc_now(),
        **extra,
    }


def command_line():
    """The command that is running, as typed from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def timing_comparison(kseg_seconds, reference_seconds, reference):
    """The timed calls of kseg and of a reference library side by side, with their medians.

    Args:
        kseg_seconds: kseg's timed calls, in seconds.
        reference_seconds: the reference's timed calls, in seconds.
        reference: the reference's name in the keys, e.g. `"torchvision"`.

    Returns:
        `kseg_seconds`, `<reference>_seconds`, `kseg_median_s`, `<reference>_median_s` and
        `time_ratio_kseg_over_<reference>` (below 1: kseg is faster).
    """
    kseg_median = statistics.median(kseg_seconds)
    reference_median = statistics.median(reference_seconds)
    return {
        "kseg_seconds": list(kseg_seconds),
        f"{reference}_seconds": list(reference_seconds),
        "kseg_median_s": kseg_median,
        f"{reference}_median_s": reference_median,
        f"time_ratio_kseg_over_{reference}": kseg_median / reference_median,
    }


def read_result(path):
    """The result file at `path` as a dict, or `{}` when there is none yet.

    Scripts that run in parts (one model, case or row at a time) keep what earlier runs wrote.
    """
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def write_result(path, report):
    """Writes `report` as indented JSON to `path`, completing its conditions.

    The `machine` entry (when the report has one, from `machine_facts`) gains the load average
    and time at the end and the versions of the measured libraries this run imported; a report
    without a `command` gains the running one. Safe to call after every row of a long run.

    Args:
        path: the result file; its folder is created when missing.
        report: the JSON-serialisable result.

    Returns:
        The path written, as a `Path`.
    """
    machine = report.get("machine")
    if isinstance(machine, dict):
        machine["load_average_end"] = load_average()
        machine["finished_utc"] = utc_now()
        for name in MEASURED_LIBRARIES:
            module = sys.modules.get(name)
            if module is not None and hasattr(module, "__version__"):
                machine.setdefault(name, module.__version__)
    report.setdefault("command", command_line())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
