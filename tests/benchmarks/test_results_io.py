"""The benchmarks' shared result writer and machine-specific path arguments."""

import argparse
import importlib.util
import json
import sys

import pytest
from benchmark_scripts import BENCHMARKS, load_benchmark

results_io = load_benchmark("results_io")
locations = load_benchmark("locations")


def test_write_result_completes_the_machine_entry_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/example.py", "--steps", "3"])
    report = {"machine": results_io.machine_facts(threads=2), "rows": {"a": 1.5}}
    path = results_io.write_result(tmp_path / "new" / "example.json", report)

    written = json.loads(path.read_text())
    assert written["rows"] == {"a": 1.5}
    machine = written["machine"]
    assert machine["threads"] == 2 and machine["cpus"] >= 1
    assert len(machine["load_average_start"]) == len(machine["load_average_end"]) == 3
    assert machine["started_utc"] <= machine["finished_utc"]
    assert machine["numpy"] == sys.modules["numpy"].__version__
    assert written["command"].startswith("python ") and written["command"].endswith("--steps 3")


def test_write_result_keeps_a_recorded_command_and_reads_back(tmp_path):
    path = tmp_path / "example.json"
    assert results_io.read_result(path) == {}
    results_io.write_result(path, {"command": "python benchmarks/x.py --a 1", "rows": [1]})
    assert results_io.read_result(path) == {"command": "python benchmarks/x.py --a 1", "rows": [1]}


def test_location_argument_reads_its_environment_variable(monkeypatch):
    monkeypatch.setenv("KSEG_TEST_DATA", "/data/from/env")
    parser = argparse.ArgumentParser()
    locations.location_argument(parser, "--data", "KSEG_TEST_DATA", "a folder")
    assert parser.parse_args([]).data == "/data/from/env"
    assert parser.parse_args(["--data", "/given"]).data == "/given"


def test_location_argument_without_flag_or_variable_stops(monkeypatch, capsys):
    monkeypatch.delenv("KSEG_TEST_DATA", raising=False)
    parser = argparse.ArgumentParser()
    locations.location_argument(parser, "--data", "KSEG_TEST_DATA", "a folder")
    with pytest.raises(SystemExit):
        parser.parse_args([])
    # Scripts with worker modes check only where the path is needed.
    parser = argparse.ArgumentParser()
    action = locations.location_argument(
        parser, "--data", "KSEG_TEST_DATA", "a folder", required=False
    )
    args = parser.parse_args([])
    with pytest.raises(SystemExit):
        locations.require_locations(parser, args, action)
    assert "$KSEG_TEST_DATA" in capsys.readouterr().err


def test_no_benchmark_script_has_a_machine_specific_default_path():
    for script in BENCHMARKS.rglob("*.py"):
        for line in script.read_text(encoding="utf-8").splitlines():
            if "default=" in line:
                assert not any(p in line for p in ("/work", "../shared", '"/tmp', "/home")), (
                    f"{script.name}: {line.strip()}"
                )


def test_the_docs_list_every_weak_vs_full_row_with_its_labels_and_method():
    # The Benchmarks page names rows not yet measured from its own list; it must not drift
    # from the script's.
    weak_vs_full = load_benchmark("weak_vs_full")
    spec = importlib.util.spec_from_file_location(
        "benchmark_tables", BENCHMARKS.parent / "docs" / "benchmark_tables.py"
    )
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    assert list(tables.WEAK_ROWS) == list(weak_vs_full.ROWS)
    assert tables.WEAK_ROWS == weak_vs_full.DESCRIPTIONS
