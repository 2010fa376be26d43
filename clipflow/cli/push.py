"""clipflow-push ckpt=RUN_DIR repo=OWNER/NAME [results=EVAL_DIR] [private=true] [dry_run=true]

Uploads a checkpoint (model.safetensors, model.json) to the Hugging Face Hub with a generated
model card (README.md). The checkpoint is validated first; results=EVAL_DIR embeds a
clipflow-eval run of the same checkpoint (its sha256 is checked). dry_run=true prints the
files and the card and uploads nothing. Log in first: `hf auth login` or HF_TOKEN.
"""

from __future__ import annotations

import sys

from ..errors import ClipflowError
from .common import plain_main

KEYS = ("ckpt", "repo", "results", "private", "dry_run")


def push(argv: list[str]) -> None:
    from ..checkpoints.push import describe_plan, plan_push, push_checkpoint
    from ..settings.config import check
    from ..settings.overrides import parse_keys

    args = parse_keys(argv, KEYS)
    if not args.get("ckpt") or not args.get("repo"):
        raise ClipflowError("pass ckpt=RUN_DIR and repo=OWNER/NAME (see clipflow-push --help)")
    plan = plan_push(
        str(args["ckpt"]),
        str(args["repo"]),
        str(args["results"]) if args.get("results") else None,
        check("private", args.get("private", False), bool),
    )
    if check("dry_run", args.get("dry_run", False), bool):
        print(describe_plan(plan))
        print("dry run: nothing was uploaded", file=sys.stderr)
        return
    print(f"uploaded: {push_checkpoint(plan)}")
    print(f"use it:   clipflow-detect ckpt=hf://{plan.repo_id} inputs=[...]")


def main(argv: list[str] | None = None) -> None:
    plain_main(__doc__, argv, push)


if __name__ == "__main__":
    main()
