"""Kept for old instructions: use ``clipflow-download-data`` (installed with clipflow).

python scripts/download_data.py --root /data [--run] [--parts test diffusion]
== clipflow-download-data root=/data [run=true] [parts=[test,diffusion]]
"""

from __future__ import annotations

import argparse

from clipflow.cli.download_data import main as download_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="data")
    parser.add_argument("--parts", nargs="+")
    parser.add_argument("--run", action="store_true")
    args = parser.parse_args(argv)
    new = [f"root={args.root}", f"run={str(args.run).lower()}"]
    if args.parts:
        new.append(f"parts=[{','.join(args.parts)}]")
    download_main(new)


if __name__ == "__main__":
    main()
