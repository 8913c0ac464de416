"""How fast drivers.replay decodes a dataset, compared with lerobot's per-item reads.

    uv run python scripts/bench_replay.py [datasets/sort] [--episodes 3] [--lerobot-items 60]

"steps/s" is what the background decode thread delivers to a consumer that never waits (one
step = every camera of one frame). Real time needs the dataset's fps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.replay import DatasetReplay  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", nargs="?", default="datasets/sort")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--lerobot-items", type=int, default=60,
                   help="also time this many LeRobotDataset[i] reads (0 to skip)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    import lerobot.datasets.lerobot_dataset  # noqa: F401  (torch and all: timed apart)

    print(f"imported lerobot in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    replay = DatasetReplay(args.root)
    print(f"opened {args.root} in {time.perf_counter() - t0:.2f} s: fps {replay.fps}, "
          f"cameras {replay.cameras}")
    steps = 0
    t0 = time.perf_counter()
    for ep in replay.episodes[: args.episodes]:
        for _ in replay.steps(ep):
            steps += 1
    dt = time.perf_counter() - t0
    ncam = len(replay.cameras)
    print(f"replay: {steps} steps in {dt:.2f} s = {steps / dt:.0f} steps/s "
          f"({ncam * steps / dt:.0f} camera frames/s, {steps / dt / replay.fps:.1f}x real time)")

    if args.lerobot_items:
        ds = replay._ds  # the LeRobotDataset the replay opened
        n = min(args.lerobot_items, len(ds))
        t0 = time.perf_counter()
        for i in range(n):
            ds[i]
        dt = time.perf_counter() - t0
        print(f"lerobot __getitem__: {n} items in {dt:.2f} s = {n / dt:.1f} items/s")
    replay.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
