"""The policy benchmark at an earlier revision and at this tree, alternating in one run: what a change to
deciding costs, with the machine's noise shared by both sides. Prints one JSON object.

    python tests/bench/compare_policy.py --base 48a9a84 [--rounds 3] [--seconds 2]

The earlier revision is checked out into a temporary git worktree and run with this tree's Python
environment; each round runs both sides once, in turn.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path("tests/bench/bench_policy.py")


def run(tree: Path, seconds: float) -> dict[str, float]:
    out = subprocess.run([sys.executable, str(tree / BENCH), "--seconds", str(seconds)], cwd=tree,
                         capture_output=True, text=True, check=True, timeout=600).stdout
    figures: dict[str, float] = json.loads(out)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="the revision to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            before: list[float] = []
            after: list[float] = []
            for _ in range(args.rounds):
                before.append(run(base, args.seconds)["decisions_per_second"])
                after.append(run(ROOT, args.seconds)["decisions_per_second"])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False,
                           capture_output=True)
    print(json.dumps({
        "base": args.base,
        "base_decisions_per_second": [round(x) for x in before],
        "decisions_per_second": [round(x) for x in after],
        "median_base": round(statistics.median(before)),
        "median": round(statistics.median(after)),
        "ratio_to_base": round(statistics.median(after) / statistics.median(before), 3),
        "target_decisions_per_second": 20_000,
    }, indent=2))


if __name__ == "__main__":
    main()
