"""The test files themselves: pytest imports them by basename (tests/ has no packages)."""

import collections
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_no_two_test_files_share_a_basename():
    # Two test_x.py in different folders make pytest refuse the second with "import file
    # mismatch", which only shows on a checkout without stale caches (CI's).
    by_name = collections.defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        by_name[path.name].append(str(path.relative_to(TESTS)))
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}
