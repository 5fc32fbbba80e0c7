"""The long run of the bad-input fuzz suite (tests/test_fuzz.py): the same Hypothesis properties as CI, with
thousands of cases each instead of a few dozen, and how many each property tried and passed.

    python3 bench/fuzz.py                       # 2,000 cases per property (minutes on 2 cores)
    python3 bench/fuzz.py --examples 10000 --record
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchrecord import RECORD_FILE, append_record

REPO = Path(__file__).resolve().parent.parent
STATS = re.compile(r"(\d+) passing examples, (\d+) failing examples, (\d+) invalid examples")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=2000, help="Hypothesis cases per property")
    ap.add_argument("--record", action="store_true", help=f"append the table to {RECORD_FILE.relative_to(REPO)}")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", "-p", "no:cacheprovider",
                           "--hypothesis-show-statistics", "tests/test_fuzz.py"], cwd=REPO, capture_output=True,
                          text=True, env=dict(os.environ, GRADWISE_FUZZ_EXAMPLES=str(args.examples)))
    seconds = time.perf_counter() - t0
    rows, name = [], None
    for line in proc.stdout.splitlines():
        if line.startswith("tests/test_fuzz.py::"):
            name = line.split("::", 1)[1].rstrip(":")
        m = STATS.search(line)
        if m and name:
            rows.append((name, *map(int, m.groups())))
            name = None
    if proc.returncode != 0 or not rows:
        print(proc.stdout[-4000:], proc.stderr[-2000:])
        print(f"the fuzz suite failed (exit {proc.returncode}): the falsifying example is above")
        return 1
    lines = [f"{args.examples:,} cases asked per property; {seconds:.0f} s in all.", "",
             "| property | passing | failing | invalid |", "|---|--:|--:|--:|"]
    lines += [f"| {n.removeprefix('test_').replace('_', ' ')} | {p:,} | {f} | {i} |" for n, p, f, i in rows]
    lines += ["", f"{sum(r[1] for r in rows):,} cases in all, none failing."]
    print("\n".join(lines))
    if args.record:
        append_record("bad-input fuzz suite, long run", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
