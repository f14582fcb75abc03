"""``make bench``: run every ``bench/bench_*.py`` module's ``main()`` in one process.

Benchmarks print medians and ratios against a reference measured in the same run; they are
never part of the test suite. Select some with ``python bench/run_bench.py proposals inference``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    wanted = set(argv if argv is not None else sys.argv[1:])
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem[len("bench_"):]
        if wanted and name not in wanted:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"\n===== {name} =====", flush=True)
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
