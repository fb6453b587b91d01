"""The tools beside the library: the `effagent` command (cli.py and one module per command group), benchmarks
(bench/), the demo and its HTML report, calibration, budget suggestions, `explain`, the generated policy
reference, and the local launchers (serving/). Nothing in the library imports them
(tests/unit/test_architecture.py)."""
