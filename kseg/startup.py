"""Importing TensorFlow without its start-up banner.

TensorFlow's C++ runtime writes lines to the process's stderr while it loads ("oneDNN custom
operations are on", the CPU-instruction notice of cpu_feature_guard, absl's "All log messages
before absl::InitializeLog() is called are written to STDERR"), twice on some builds, and
`TF_CPP_MIN_LOG_LEVEL` no longer hides all of them. They bury kseg's own output, so `import kseg`
sends stderr to a file while TensorFlow loads and writes back every line except those.

Nothing is hidden when the user wants TensorFlow's log: `--verbose` on the command line (the
`kseg` commands' flag), or `TF_CPP_MIN_LOG_LEVEL` set to 0 or 1.
"""

import contextlib
import os
import sys
import tempfile

TENSORFLOW_STARTUP_LINES = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "cpu_feature_guard",
    "To enable the following instructions:",
)
"""Text of the start-up lines TensorFlow writes while it loads, as found in each line."""


def is_startup_line(line):
    """Whether `line` is one of TensorFlow's start-up lines (`TENSORFLOW_STARTUP_LINES`).

    Example:
        >>> kseg.startup.is_startup_line("I0000 port.cc:153] oneDNN custom operations are on.")
        True
        >>> kseg.startup.is_startup_line("kseg: error: model file not found")
        False
    """
    return any(text in line for text in TENSORFLOW_STARTUP_LINES)


def verbose_requested(argv=None, environ=None):
    """Whether TensorFlow's start-up log should be shown.

    Args:
        argv: the command line, default `sys.argv`; `--verbose` after the program asks for it.
        environ: the environment, default `os.environ`; `TF_CPP_MIN_LOG_LEVEL` of 0 or 1 asks
            for TensorFlow's informational lines.

    Returns:
        True when the lines should stay.

    Example:
        >>> kseg.startup.verbose_requested(["kseg", "list", "--verbose"], {})
        True
        >>> kseg.startup.verbose_requested(["kseg", "list"], {"TF_CPP_MIN_LOG_LEVEL": "2"})
        False
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    return "--verbose" in argv[1:] or environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1")


@contextlib.contextmanager
def without_startup_lines():
    """Within the block, TensorFlow's start-up lines written to stderr (file descriptor 2) vanish.

    Everything else written to stderr in the block is written back when it ends, in order,
    also when the block raises. Where stderr cannot be redirected nothing is filtered.

    Example:
        >>> with kseg.startup.without_startup_lines():
        ...     pass
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(True) if not is_startup_line(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_tensorflow():
    """Imports TensorFlow, without its start-up lines unless `verbose_requested()`.

    Returns:
        The `tensorflow` module.

    Example:
        >>> kseg.startup.import_tensorflow().__name__
        'tensorflow'
    """
    if verbose_requested():
        import tensorflow

        return tensorflow
    # Hides cpu_feature_guard's notice at the source; a value the user has set is kept.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with without_startup_lines():
        import tensorflow
    return tensorflow
