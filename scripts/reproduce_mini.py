"""`make reproduce-mini`: every experiment of the paper, end to end, on a generated miniature.

Generates a miniature of the whole benchmark under <out>/data (unless it is there), checks it
as clipflow-check-data does, and runs clipflow-reproduce experiment=[all,realonly] on it with
the random-weight `tiny` backbone (and `tiny` autoencoder) on the CPU: every table (with the
paper column), plot and index.md under <out>. The numbers mean nothing; the files and
columns are those of a real run. About two minutes on 2 CPU cores. See clipflow.paper.mini.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clipflow.cli.common import guarded
from clipflow.cli.reproduce import parse_request
from clipflow.paper.mini import mini_arguments, prepare_mini
from clipflow.paper.reproduce import run_reproduce


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/reproduce-mini"))
    parser.add_argument(
        "--seeds", default="0,1", help="comma-separated seeds (tables show mean ± std)"
    )
    parser.add_argument("--images", type=int, default=4, help="real and fake images per test set")
    parser.add_argument(
        "--size", type=int, default=48, help="side of the generated images in pixels"
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="one cached crop + mask per image (fast=true) instead of fresh per epoch; "
        "choices still draws fresh",
    )
    parser.add_argument(
        "extra", nargs="*", help="more clipflow-reproduce overrides, e.g. flow.n_blocks=8"
    )
    return parser.parse_args(argv)


def reproduce_mini(args: argparse.Namespace) -> dict[str, dict[str, Path]]:
    """Generate (or reuse) and check the miniature, then clipflow-reproduce it in-process."""
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    data = prepare_mini(args.out, args.images, args.size, seeds, fast=args.fast)
    argv = mini_arguments(data, args.out, seeds, args.extra, fast=args.fast)
    written = run_reproduce(parse_request(argv))
    print(f"\nDone: {args.out / 'index.md'} links every table and plot.")
    return written


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    guarded(lambda: reproduce_mini(args))


if __name__ == "__main__":
    main(sys.argv[1:])
