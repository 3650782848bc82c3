"""kseg.startup: TensorFlow's start-up lines are left out of stderr, everything else kept."""

import os
import subprocess
import sys

from kseg import startup

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796636974.799489   24357 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results.",
    "I0000 00:00:1796636974.80 24357 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.",
]


def test_start_up_lines_are_recognised_and_other_lines_are_not():
    assert all(startup.is_startup_line(line) for line in NOISE)
    assert not startup.is_startup_line("kseg: error: model file not found: a.keras")
    assert not startup.is_startup_line("W0000 ... Skipping the delay kernel")


def test_verbose_is_the_flag_or_a_low_tensorflow_log_level():
    assert startup.verbose_requested(["kseg", "predict", "--verbose"], {})
    assert not startup.verbose_requested(["--verbose"], {})  # the program name is not a flag
    assert startup.verbose_requested(["kseg"], {"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert not startup.verbose_requested(["kseg"], {"TF_CPP_MIN_LOG_LEVEL": "3"})


def test_lines_written_to_file_descriptor_2_are_filtered_and_the_rest_kept_in_order():
    # A child process, so that its stderr is a real file descriptor (the C++ runtime's view).
    code = (
        "import os, kseg.startup\n"
        "with kseg.startup.without_startup_lines():\n"
        "    os.write(2, b'first\\n')\n"
        f"    os.write(2, {(chr(10).join(NOISE) + chr(10)).encode()!r})\n"
        "    os.write(2, b'last\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert result.stderr.splitlines()[-3:] == ["first", "last", "after"]
    assert not any(startup.is_startup_line(line) for line in result.stderr.splitlines())
