"""The torch worker's side of the timing protocol shared by the pretrained-load benchmarks.

The worker (a process with torch and no TensorFlow) first prints one JSON line with its torch
and torchvision versions and thread count, then, for each line `i` it reads on stdin, runs
`call(i)` and prints `{"seconds": ...}`; an empty line ends it. The kseg process writes the
lines, so both sides take turns on the same cores.
"""

import json
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
