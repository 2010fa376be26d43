"""Download and unpack the paper's data (SPEC §8). Prints the commands; runs them only with --run.

    python scripts/download_data.py --root /data                 # dry run: print every command
    python scripts/download_data.py --root /data --run           # download + unpack (~80 GB free)
    python scripts/download_data.py --root /data --run --parts test diffusion   # only some parts

Sources: the Hugging Face dataset `sywang/CNNDetection` (CNNSpot: the 11 GAN/CNN test sets,
ProGAN train and val; the old Google Drive links are dead) and UnivFD's `diffusion_datasets`
(Google Drive file id 1FXlGIRh_Ud3cScMgSVDbEWmPDmjcrm1t: 1,000 fakes per generator, shared reals).
Needs `hf` (pip install -U huggingface_hub; `huggingface-cli download` is the older spelling),
`unzip`, `7z` (p7zip) for the multi-part training archive, and `gdown` (pip install gdown).

Layout afterwards, checked by `clipflow-check-data`:

    <root>/progan_train/<class>/{0_real,1_fake}      data.train_root
    <root>/progan_val/<class>/{0_real,1_fake}        data.val_root
    <root>/benchmark/CNN_synth_testset/<set>/...     \\ data.test_root=<root>/benchmark
    <root>/benchmark/diffusion_datasets/<set>/...    /
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

HF_REPO = "sywang/CNNDetection"
UNIVFD_DRIVE_ID = "1FXlGIRh_Ud3cScMgSVDbEWmPDmjcrm1t"
TRAIN_PARTS = [f"progan_train.7z.{i:03d}" for i in range(1, 8)]
PARTS = ("test", "val", "train", "diffusion")


def hf(files: list[str], dl: Path) -> list[str]:
    return ["hf", "download", HF_REPO, *files, "--repo-type", "dataset", "--local-dir", str(dl)]


def commands(root: Path, parts: list[str]) -> list[list[str]]:
    """The shell commands for ``parts``, in order (download, then unpack into the layout above)."""
    dl, bench = root / "downloads", root / "benchmark"
    plan: dict[str, list[list[str]]] = {
        "test": [
            hf(["CNN_synth_testset.zip"], dl),
            ["unzip", "-q", "-n", str(dl / "CNN_synth_testset.zip"), "-d", str(bench)],
        ],
        "val": [
            hf(["progan_val.zip"], dl),
            ["unzip", "-q", "-n", str(dl / "progan_val.zip"), "-d", str(root)],
        ],
        "train": [hf(TRAIN_PARTS, dl), ["7z", "x", "-aos", str(dl / TRAIN_PARTS[0]), f"-o{root}"]],
        "diffusion": [
            ["gdown", UNIVFD_DRIVE_ID, "-O", str(dl / "diffusion_datasets.zip")],
            ["unzip", "-q", "-n", str(dl / "diffusion_datasets.zip"), "-d", str(bench)],
        ],
    }
    out = [["mkdir", "-p", str(dl), str(bench)]]
    for part in parts:
        out += plan[part]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, default=Path("data"), help="where everything goes (default ./data)"
    )
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument(
        "--run", action="store_true", help="execute the commands (default: only print them)"
    )
    args = parser.parse_args(argv)
    cmds = commands(args.root, args.parts)
    for cmd in cmds:
        print(("$ " if args.run else "") + " ".join(shlex.quote(c) for c in cmd), flush=True)
        if args.run and subprocess.run(cmd).returncode != 0:
            print(
                f"failed: {cmd[0]} — see its message above; rerun, finished steps are skipped",
                file=sys.stderr,
            )
            return 1
    check = (
        f"clipflow-check-data data.test_root={args.root / 'benchmark'} "
        f"data.train_root={args.root / 'progan_train'} data.val_root={args.root / 'progan_val'}"
    )
    print(("# then: " if not args.run else "$ ") + check)
    if not args.run:
        print("# dry run: nothing was downloaded; add --run to execute", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
