"""Shapes-world rendering speed: scenes/s on one core, per domain and image size.

Usage: python benchmarks/world_speed.py [--num 1000] [--sizes 64 32] [--max-objects 2]
Renders scenes 0..num-1 of the train split (default SceneConfig otherwise) in this process and
prints scenes/s by wall clock and by process CPU time (the CPU figure is the one to quote on a
shared machine: it does not count time the process waited for a core).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from synthmask.world import SceneConfig, render_scene, scene_seed  # noqa: E402


def measure(num: int, config: SceneConfig, domain: str) -> tuple[float, float]:
    """(wall scenes/s, CPU scenes/s) for rendering `num` scenes."""
    seeds = [scene_seed(0, "train", i) for i in range(num)]
    render_scene(seeds[0], config, domain)  # warm-up (imports, caches)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for seed in seeds:
        render_scene(seed, config, domain)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return num / wall, num / cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 32])
    parser.add_argument("--max-objects", type=int, default=2)
    args = parser.parse_args()
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print("| image size | objects | domain | scenes/s (wall) | scenes/s (CPU time) |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        config = SceneConfig(image_size=size, max_objects=args.max_objects)
        for domain in ("source", "target"):
            wall, cpu = measure(args.num, config, domain)
            print(f"| {size} | 1-{args.max_objects} | {domain} | {wall:.0f} | {cpu:.0f} |")


if __name__ == "__main__":
    main()
