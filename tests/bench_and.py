"""Extra cost of concepts in different AND sub-prompts, through the fake WebUI host (tiny SD1 model, CPU).

Interleaves four cases in rounds (plain / A-STAR x one prompt / AND prompt) and prints the median seconds per
generation and the median per-round ratio A-STAR/plain for each prompt.

    .venv/bin/python tests/bench_and.py --rounds 5 --steps 6
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "fake_webui")]

from tests.webui_host import Host  # noqa: E402

PROMPTS = {"one prompt": "a photo of a cat and a dog", "AND": "a photo of a cat AND a photo of a dog"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    host = Host("sd1")
    times: dict[tuple[str, bool], list[float]] = {(k, on): [] for k in PROMPTS for on in (False, True)}
    for _ in range(args.rounds + 1):  # the first round warms up and is dropped
        for (name, on), out in times.items():
            start = time.perf_counter()
            host.txt2img(prompt=PROMPTS[name], steps=args.steps, width=args.size, height=args.size,
                         script_args=host.args(enabled=on, concepts="cat, dog"))
            out.append(time.perf_counter() - start)
    for name in PROMPTS:
        plain, astar = times[name, False][1:], times[name, True][1:]
        ratios = [a / p for a, p in zip(astar, plain, strict=True)]
        print(f"{name:10s} plain {statistics.median(plain):.3f} s  A-STAR {statistics.median(astar):.3f} s  "
              f"ratio median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}, "
              f"n={len(ratios)} rounds)")


if __name__ == "__main__":
    main()
