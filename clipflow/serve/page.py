"""The Gradio page of ``clipflow-serve`` (and of a pushed Space): drop images, read verdicts.

Safe by default: it listens on 127.0.0.1 only; no share link, no analytics, no font or
version check leaves the machine; an upload over ``max_upload_mb`` is refused (by Gradio at
the door, and again per file by :func:`~clipflow.serve.uploads.score_uploads`), an image over
``data.max_megapixels`` from its header, as everywhere in clipflow. Uploads land in a
temporary folder of this run; each is deleted once scored (copied first to ``keep=`` when
asked), and the folder goes when the server stops.

Gradio is the optional extra ``clipflow[serve]``; without it :func:`import_gradio` says so in
one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.fileio import folder_write_problem
from ..data.imageio import max_pixels_of
from ..detect import Detector
from ..errors import ClipflowError
from .render import card_html, verdicts_html
from .uploads import MB, Upload, card_facts, forget_upload, keep_upload, score_uploads

if TYPE_CHECKING:
    from ..settings.serve import ServeSettings

log = logging.getLogger(__name__)

TITLE = "clipflow detector"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Gradio reads these from the environment; set only while the page is built and served.
_QUIET_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SSR_MODE": "False"}


def import_gradio() -> Any:
    """The gradio module, or one line saying how to install it."""
    try:
        import gradio
    except ImportError:
        raise ClipflowError(
            "the detector page needs Gradio, an optional extra: pip install 'clipflow[serve]'"
        ) from None
    return gradio


def detector_for(s: ServeSettings) -> Detector:
    """The Detector of ``s.ckpt`` with the page's pixel cap, as clipflow-detect builds it."""
    from ..checkpoints.checkpoint import load_checkpoint
    from ..eval.conformal import check_level

    if not s.ckpt:
        raise ClipflowError(
            "no checkpoint given — pass ckpt=PATH (model.safetensors or its run folder)"
        )
    why = folder_write_problem(Path(s.keep).expanduser()) if s.keep else None
    if why:  # said now, not after someone's upload
        raise ClipflowError(f"cannot keep uploads in keep={s.keep}: {why}; choose another keep=")
    ckpt = load_checkpoint(s.ckpt)
    if s.fpr is not None:  # a level the calibration cannot reach: refused before serving
        check_level(s.fpr, len(ckpt.val_real_scores))
    det = Detector.from_loaded(ckpt, s.device, s.backbone, s.batch_size)
    det.max_pixels = max_pixels_of(s.data.max_megapixels)
    return det


def parse_level(text: Any) -> float | None:
    """The page's fpr box: blank = the threshold decides, else a level in (0, 1)."""
    if text is None or not str(text).strip():
        return None
    try:
        return float(str(text).strip())
    except ValueError:
        raise ClipflowError(f"fpr={text!r}: use a number in (0, 1), or leave it blank") from None


def build_page(det: Detector, s: ServeSettings) -> Any:
    """The gr.Blocks page over ``det``: card facts, a drop zone, the level, the verdicts."""
    gr = import_gradio()
    max_bytes = int(s.max_upload_mb * MB)

    def on_upload(files: list[str] | None, level_text: str, unsure: bool) -> tuple[str, None]:
        uploads = [Upload.of(f) for f in files or []]
        unsure_k = s.unsure_k if unsure else 0
        try:
            level = det.check_fpr(parse_level(level_text))
            records = score_uploads(det, uploads, level, unsure_k, max_bytes)
        except ClipflowError as err:
            raise gr.Error(str(err)) from None
        finally:
            for upload in uploads:
                try:
                    if s.keep:
                        keep_upload(upload, s.keep)
                finally:
                    forget_upload(upload)  # whatever happened, the server's copy goes
        return verdicts_html(det, records, level, unsure_k), None  # None: the drop zone clears

    with gr.Blocks(title=TITLE, analytics_enabled=False) as page:
        gr.Markdown(f"# {TITLE}\nScore images with the checkpoint below: higher = faker.")
        gr.HTML(card_html(det, card_facts(det)), elem_id="clipflow-card")
        files = gr.File(
            file_count="multiple", type="filepath", label="Images", elem_id="clipflow-upload"
        )
        with gr.Row():
            level = gr.Textbox(
                value="" if s.fpr is None else f"{s.fpr:g}",
                label="fpr level: ai-generated iff p_value <= it (blank: the checkpoint threshold)",
                elem_id="clipflow-fpr",
            )
            unsure = gr.Checkbox(
                value=s.unsure,
                label=f"unsure: also score {s.unsure_k} re-encoded copies",
                elem_id="clipflow-unsure",
            )
        verdicts = gr.HTML(verdicts_html(det, [], None, 0), elem_id="clipflow-verdicts")
        files.upload(on_upload, [files, level, unsure], [verdicts, files], concurrency_limit=1)
    return page


def theme(gr: Any) -> Any:
    """Gradio's default look with the system's fonts: no request to a font service."""
    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])


@contextlib.contextmanager
def quiet_gradio(upload_dir: str) -> Iterator[None]:
    """Gradio's environment for one page: no analytics, uploads into ``upload_dir``."""
    saved = {k: os.environ.get(k) for k in (*_QUIET_ENV, "GRADIO_TEMP_DIR")}
    os.environ.update({**_QUIET_ENV, "GRADIO_TEMP_DIR": upload_dir})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_page(s: ServeSettings, ready: Any = None) -> None:
    """Serve the page of ``s`` until interrupted (Ctrl+C, SIGTERM through the CLI).
    ``ready(url)`` is called once it answers (default: print the address)."""
    # Gradio makes folders under its temp dir when imported: ours, gone when the page stops.
    with tempfile.TemporaryDirectory(prefix="clipflow-serve-") as tmp, quiet_gradio(tmp):
        gr = import_gradio()  # the missing extra is said before a model loads
        det = detector_for(s)
        if s.host not in LOOPBACK:
            log.warning("host=%s: the page is open to the network, not only this machine", s.host)
        page = build_page(det, s)
        try:
            page.launch(
                server_name=s.host,
                server_port=s.port or free_port(s.host),
                share=False,
                inbrowser=False,
                quiet=True,
                ssr_mode=False,
                max_file_size=int(s.max_upload_mb * MB),
                theme=theme(gr),
                prevent_thread_lock=True,
            )
        except OSError as err:
            raise ClipflowError(
                f"cannot listen on {s.host}:{s.port} ({str(err).splitlines()[0]}); "
                "choose another port=, or port=0 for any free one"
            ) from None
        try:
            (ready or _announce)(page.local_url)
            while page.is_running:
                time.sleep(0.2)
        except KeyboardInterrupt:
            print("stopped; uploads deleted", file=sys.stderr)
        finally:
            page.close(verbose=False)


def _announce(url: str) -> None:
    print(f"clipflow-serve: open {url} (Ctrl+C stops)", flush=True)


def free_port(host: str) -> int:
    """A port nobody listens on now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
