"""clipflow-download-data [root=DIR] [parts=[test,val,train,diffusion]] [run=true] [verify=true]

Gets the paper's benchmark data (SPEC §8) into root (default ./data). Without run=true it
prints the commands and downloads nothing. run=true downloads (Hugging Face dataset
sywang/CNNDetection; UnivFD's diffusion sets from Google Drive with gdown:
pip install 'clipflow[download]'), checks each archive against the manifest shipped with
clipflow, and unpacks it. verify=true only checks the archives already in root/downloads.
About 90 GB for all parts; the training set also needs 7z (p7zip).

Exit codes: 0 done, 1 an archive is missing or differs from the manifest, 2 usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import plain_main

KEYS = ("root", "parts", "run", "verify")


def download(argv: list[str]) -> int:
    from ..config import check
    from ..download import PARTS, load_manifest, next_step, plan_lines, run_download, verify
    from ..overrides import as_list, parse_keys

    args = parse_keys(argv, KEYS)
    root = Path(str(args.get("root") or "data")).expanduser()
    parts = [str(p) for p in as_list(args.get("parts"))] or list(PARTS)
    manifest = load_manifest()
    if check("verify", args.get("verify", False), bool):
        return verify(root, parts, manifest, sys.stdout)
    if not check("run", args.get("run", False), bool):
        for line in plan_lines(root, parts, manifest):
            print(line)
        print(f"# then: {next_step(root)}")
        print("dry run: nothing was downloaded; add run=true to do it", file=sys.stderr)
        return 0
    code = run_download(root, parts, manifest, sys.stdout)
    print(f"next: {next_step(root)}")
    return code


def main(argv: list[str] | None = None) -> None:
    plain_main(__doc__, argv, download)


if __name__ == "__main__":
    main()
