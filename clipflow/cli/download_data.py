"""clipflow-download-data [root=DIR] [parts=[test,val,train,diffusion]] [run=true] [verify=true] [benchmarks=[genimage,chameleon,synthbuster,wildrf]|all]

Gets the paper's benchmark data (SPEC §8) into root (default ./data). Without run=true it
prints the commands and downloads nothing. run=true downloads (Hugging Face dataset
sywang/CNNDetection; UnivFD's diffusion sets from Google Drive with gdown:
pip install 'clipflow[download]'), checks each archive against the manifest shipped with
clipflow, and unpacks it. verify=true only checks the archives already in root/downloads.
About 90 GB for all parts; the training set also needs 7z (p7zip).
benchmarks=... prints how to get today's benchmarks (GenImage, Chameleon, Synthbuster, WildRF:
sources, licenses, layouts; docs/datasets.md) and downloads nothing.

Exit codes: 0 done, 1 an archive is missing or differs from the manifest, 2 usage error.
"""  # noqa: E501  (the usage line is printed as is by --help)

from __future__ import annotations

import sys
from pathlib import Path

from .common import plain_main

KEYS = ("root", "parts", "run", "verify", "benchmarks")


def download(argv: list[str]) -> int:
    from ..data.download import (
        PARTS,
        benchmark_lines,
        load_benchmark_guides,
        load_manifest,
        next_step,
        plan_lines,
        run_download,
        verify,
    )
    from ..settings.coerce import coerce
    from ..settings.overrides import as_list, parse_keys

    args = parse_keys(argv, KEYS)
    root = Path(str(args.get("root") or "data")).expanduser()
    if args.get("benchmarks") is not None:  # by hand: printed, never downloaded
        names = [str(n) for n in as_list(args.get("benchmarks"))]
        for line in benchmark_lines(names, root / "benchmarks", load_benchmark_guides()):
            print(line)
        return 0
    parts = [str(p) for p in as_list(args.get("parts"))] or list(PARTS)
    manifest = load_manifest()
    if coerce("verify", args.get("verify", False), bool):
        return verify(root, parts, manifest, sys.stdout)
    if not coerce("run", args.get("run", False), bool):
        for line in plan_lines(root, parts, manifest):
            print(line)
        print(f"# then: {next_step(root)}")
        print("# today's benchmarks (GenImage, Chameleon, Synthbuster, WildRF): benchmarks=all")
        print("dry run: nothing was downloaded; add run=true to do it", file=sys.stderr)
        return 0
    code = run_download(root, parts, manifest, sys.stdout)
    print(f"next: {next_step(root)}")
    return code


def main(argv: list[str] | None = None) -> None:
    plain_main(__doc__, argv, download)


if __name__ == "__main__":
    main()
