"""Run every benchmark in this folder, one after another (`make bench`).

Each `bench_*.py` prints its own figures; extra arguments are passed to all of them
(e.g. `python benchmarks/run_all.py --quick`). Figures are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(script), *sys.argv[1:]])
        print(f"--- {script.name}: exit {proc.returncode}, {time.monotonic() - start:.0f} s", flush=True)
        if proc.returncode:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
