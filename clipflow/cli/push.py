"""clipflow-push ckpt=RUN_DIR repo=OWNER/NAME [results=EVAL_DIR] [private=true] [dry_run=true]
clipflow-push ckpt=RUN_DIR out=DIR [repo=OWNER/NAME] [results=EVAL_DIR]
[space=OWNER/SPACE] with an upload

Uploads a checkpoint (model.safetensors, model.json) to the Hugging Face Hub with a generated
model card (README.md). The checkpoint is validated first; results=EVAL_DIR embeds a
clipflow-eval run of the same checkpoint (its sha256 is checked) and its numbers become the
card's model-index. Local paths in model.json are published by their last part only
(<local>/NAME). dry_run=true prints the files and the card and uploads nothing. out=DIR
writes the same folder locally instead, without any network (repo= then only names the card).
space=OWNER/SPACE also uploads clipflow-serve's page as a Gradio Space app (app.py +
requirements.txt) serving the checkpoint at the commit just pushed.
Log in first: `hf auth login` or HF_TOKEN.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ClipflowError
from .common import plain_main

KEYS = ("ckpt", "repo", "results", "private", "dry_run", "out", "space")


def push(argv: list[str]) -> None:
    from ..checkpoints.hub import parse_hub_ref
    from ..checkpoints.push import describe_plan, plan_push, push_checkpoint
    from ..settings.overrides import parse_keys
    from ..settings.rules import check

    args = parse_keys(argv, KEYS)
    results = str(args["results"]) if args.get("results") else None
    if args.get("out"):
        export(args, results)
        return
    if not args.get("ckpt") or not args.get("repo"):
        raise ClipflowError(
            "pass ckpt=RUN_DIR and repo=OWNER/NAME, or out=DIR to save locally "
            "(see clipflow-push --help)"
        )
    plan = plan_push(
        str(args["ckpt"]),
        str(args["repo"]),
        results,
        check("private", args.get("private", False), bool),
    )
    space = parse_hub_ref(str(args["space"])).repo_id if args.get("space") else None
    if check("dry_run", args.get("dry_run", False), bool):
        print(describe_plan(plan))
        if space:
            print(_describe_space(space, plan.repo_id, None))
        print("dry run: nothing was uploaded", file=sys.stderr)
        return
    url = push_checkpoint(plan)
    print(f"uploaded: {url}")
    print(f"use it:   clipflow-detect ckpt=hf://{plan.repo_id} inputs=[...]")
    if space:
        _push_space(space, plan.repo_id, url, plan.private)


def _describe_space(space: str, repo_id: str, revision: str | None) -> str:
    from ..checkpoints.space import space_files

    files = space_files(repo_id, revision)
    return f"\nwould upload a Space app to https://huggingface.co/spaces/{space}:\n" + "".join(
        f"\n--- {name}\n{text}" for name, text in files.items()
    )


def _push_space(space: str, repo_id: str, commit_url: str, private: bool) -> None:
    from ..checkpoints.space import commit_of, push_space, space_files

    print(f"space:    {push_space(space, space_files(repo_id, commit_of(commit_url)), private)}")


def export(args: dict, results: str | None) -> None:
    """out=DIR: the folder an upload would send, written locally (no network)."""
    from ..checkpoints.checkpoint import load_checkpoint
    from ..checkpoints.push import save_pretrained
    from ..core.fileio import display_path
    from .common import check_writable_dir

    if not args.get("ckpt"):
        raise ClipflowError("pass ckpt=RUN_DIR with out=DIR (see clipflow-push --help)")
    for key in ("dry_run", "private", "space"):
        if args.get(key) is not None:
            raise ClipflowError(f"{key}= is for uploads; out=DIR only writes a local folder")
    repo = str(args["repo"]) if args.get("repo") else None
    ckpt = load_checkpoint(str(args["ckpt"]))
    check_writable_dir(Path(str(args["out"])).expanduser(), "out")  # before the files are made
    folder = save_pretrained(ckpt, str(args["out"]), repo, results)
    print(f"saved:   {display_path(folder)} (model.safetensors, model.json, README.md)")
    print(f"use it:  clipflow-detect ckpt={display_path(folder)} inputs=[...]")
    print(f"publish: clipflow-push ckpt={display_path(folder)} repo={repo or 'OWNER/NAME'}")


def main(argv: list[str] | None = None) -> None:
    plain_main(__doc__, argv, push)


if __name__ == "__main__":
    main()
