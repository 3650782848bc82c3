"""Both ends of the timing protocol of the benchmarks that time torch in a worker process.

The worker (a process with torch and no TensorFlow) first prints one JSON line with its torch
and torchvision versions and thread count, then, for each line `i` it reads on stdin, runs
`call(i)` and prints `{"seconds": ...}`; an empty line ends it. The kseg process writes the
lines, so both sides take turns on the same cores.
"""

import json
import subprocess
import sys
import time


def serve_timed_calls(torch, torchvision, call):
    """Announces the versions, then times `call(index)` for each index read from stdin."""
    versions = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(versions), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        start = time.perf_counter()
        call(int(line))
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


class TimedCallWorker:
    """The kseg process's end of the protocol: starts the worker and asks it for timed calls.

    Args:
        command: the worker's command line (a torch interpreter and a script in worker mode).
        what: what the worker is, for the error raised when it stops before announcing itself.
    """

    def __init__(self, command, what):
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{what} stopped before announcing itself")
        self.facts = json.loads(line)

    def timed_call(self, index=0):
        """Seconds of the worker's `call(index)`."""
        self.process.stdin.write(f"{index}\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["seconds"]

    def close(self):
        """Ends the worker: an empty line, or its end of input if it is still starting."""
        if self.process.poll() is None:
            self.process.stdin.write("\n")
            self.process.stdin.close()
        self.process.wait()
