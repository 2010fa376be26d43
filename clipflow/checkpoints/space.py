"""A Hugging Face Space serving a pushed checkpoint with clipflow-serve's own page.

``clipflow-push ... space=OWNER/NAME`` writes three files (:func:`space_files`) and uploads
them to a Gradio Space (:func:`push_space`): ``app.py`` runs
:func:`clipflow.serve.page.run_page` (the page ``clipflow-serve`` serves locally, same
Detector, same caps) on the model repo, pinned to the commit just pushed when it is known;
``requirements.txt`` names ``clipflow[serve]`` at this version; ``README.md`` is the Space's
card (SDK, app file, the model it serves). The Space listens on 0.0.0.0:7860, as Spaces
require; uploads are still deleted once scored.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from ..core.versions import __version__
from ..errors import ClipflowError
from .hub import parse_hub_ref
from .pretrained import upload_error

APP_NAME, REQUIREMENTS_NAME, SPACE_CARD_NAME = "app.py", "requirements.txt", "README.md"
# The Gradio the Space runs (Spaces install it from sdk_version); the page is tested with it.
SPACE_GRADIO = "6.31.0"

_APP = '''"""The clipflow detector page for {model} (written by clipflow-push space=...)."""

from clipflow.serve.page import run_page
from clipflow.settings.serve import ServeSettings

# host 0.0.0.0 and port 7860: what a Space listens on. Uploads are deleted once scored.
run_page(ServeSettings(ckpt="{ckpt}", host="0.0.0.0", port=7860, device="auto"))
'''


def commit_of(url: str | None) -> str | None:
    """The commit hash at the end of a Hub commit URL (``.../commit/<sha>``), or None."""
    match = re.search(r"/commit/([0-9a-f]{40})\b", url or "")
    return match.group(1) if match else None


def space_files(model_repo: str, revision: str | None = None) -> dict[str, str]:
    """``app.py``, ``requirements.txt`` and ``README.md`` of a Space serving ``model_repo``
    (at ``revision`` when given: the Space then shows exactly that checkpoint)."""
    from huggingface_hub import SpaceCardData

    model = parse_hub_ref(model_repo).repo_id
    if revision is not None and not re.fullmatch(r"[\w.\-/]+", revision):
        raise ClipflowError(f"revision={revision!r}: use a branch, tag or commit hash")
    ckpt = f"hf://{model}" + (f"@{revision}" if revision else "")
    card = SpaceCardData(
        title="clipflow detector",
        sdk="gradio",
        sdk_version=SPACE_GRADIO,
        app_file=APP_NAME,
        license="mit",
        models=[model],
        tags=["clipflow", "ai-generated-image-detection"],
        pinned=False,
    )
    readme = (
        f"---\n{card.to_yaml()}\n---\n\n# clipflow detector: `{model}`\n\n"
        f"Drop images to score them with [{model}](https://huggingface.co/{model}) "
        f"(`{ckpt}`): per image the score, decision, `fpr_val` and `p_value` that "
        "`clipflow-detect` gives. Uploads are deleted once scored. Locally: "
        f"`clipflow-serve ckpt={ckpt}`.\n"
    )
    return {
        APP_NAME: _APP.format(model=model, ckpt=ckpt),
        REQUIREMENTS_NAME: f"clipflow[serve]=={__version__}\n",
        SPACE_CARD_NAME: readme,
    }


def push_space(space_id: str, files: dict[str, str], private: bool = False, api=None) -> str:
    """Create the Gradio Space if needed and upload ``files`` in one commit; its URL."""
    from huggingface_hub import HfApi

    space = parse_hub_ref(space_id).repo_id
    api = api or HfApi(library_name="clipflow", library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="clipflow-space-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        try:
            api.create_repo(
                space, repo_type="space", space_sdk="gradio", private=private, exist_ok=True
            )
            api.upload_folder(
                repo_id=space,
                repo_type="space",
                folder_path=tmp,
                commit_message="clipflow-push: the detector page",
            )
        except Exception as err:  # auth, network, permissions: huggingface_hub's error types
            raise upload_error(f"upload of the Space {space}", err) from None
    return f"https://huggingface.co/spaces/{space}"
