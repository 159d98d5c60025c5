"""Memory a process keeps per int8 conversion of PyTorch's form, with and without nascomp's
drop of what torch.ao and torch.fx keep (``compressors.deploy._conversion_leftovers_dropped``).

    python bench/conversion_memory.py                 # 30 conversions, 2 alternating pairs
    python bench/conversion_memory.py --conversions 10 --pairs 1

CPU trials with ``measure.runtime: torch`` convert their model with torch.ao every trial, in a
worker that runs trial after trial. torch 2.14.1 memoises a device lookup in an unbounded cache
keyed by module (2 whole models a conversion) and keeps each generated module's source. Each
side runs in a fresh process: one conversion to warm up, then ``--conversions`` more of a
4.2 M-parameter CNN (16 MB fp32), garbage collected and the C heap trimmed after each (so that
only what stays alive counts), and prints its RSS growth. "kept" is the conversion as torch
leaves it (the block replaced by a no-op), "dropped" nascomp's.

Run from the repository root with the project's environment active.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import at_least, child_value, load_average, machine

CHILD = """
import contextlib, ctypes, ctypes.util, gc, sys, warnings
import torch
from torch import nn
import nascomp.compressors.deploy as deploy
warnings.simplefilter("ignore")
if sys.argv[1] == "kept":
    deploy._conversion_leftovers_dropped = contextlib.nullcontext
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
def settle():
    gc.collect()
    libc.malloc_trim(0)
def rss_mb():
    with open("/proc/self/status") as status:
        line = next(l for l in status if l.startswith("VmRSS"))
    return int(line.split()[1]) / 1024
torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
    nn.Linear(16 * 32 * 32, 256), nn.ReLU(), nn.Linear(256, 10),
).eval()
inputs = torch.randn(8, 1, 32, 32)
convert = lambda: deploy.to_int8_deployable(model, inputs[:1], [inputs])
convert()
settle()
start = rss_mb()
for _ in range(int(sys.argv[2])):
    convert()
    settle()
print(f"{rss_mb() - start:.0f}")
"""


def growth(side: str, conversions: int) -> float:
    return child_value(CHILD, side, str(conversions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--conversions",
        type=at_least(1),
        default=30,
        help="conversions timed per process, after one warm-up (default %(default)s)",
    )
    parser.add_argument(
        "--pairs",
        type=at_least(1),
        default=2,
        help="kept/dropped pairs of fresh processes, the order alternating (default %(default)s)",
    )
    args = parser.parse_args()
    print(f"{machine()}; load average {load_average()} at the start")
    print(f"{args.conversions} conversions of a 4.2 M-parameter CNN per process, RSS growth MB")
    for pair in range(args.pairs):
        sides = ("kept", "dropped") if pair % 2 == 0 else ("dropped", "kept")  # alternating
        grown = {side: growth(side, args.conversions) for side in sides}
        kept, dropped = grown["kept"], grown["dropped"]
        print(f"pair {pair + 1}: kept (torch as is) {kept:+.0f} MB, dropped {dropped:+.0f} MB")
    print(f"load average {load_average()} at the end")


if __name__ == "__main__":
    main()
