"""What every Hydra entry point shares: the app wrapper, config -> dict, run dir, one-line errors.

Imports in clipflow/cli/ follow one rule: at module level only the standard library,
``clipflow.errors`` and this package's own modules (common, help); everything else of clipflow
(and Hydra, torch, ...) is a plain ``from ..x import y`` inside the function that runs the
command, and ``if TYPE_CHECKING:`` for annotations; a command builds its settings (torch-free,
clipflow.settings) before it imports the run that needs torch. Why: ``--help``, Hydra's refusal
of a bad override and a refused setting must answer without loading torch or open_clip
(tests/test_cli_help.py, tests/test_layers.py). Tests that replace a library function patch
it where it is defined (``clipflow.runs.evaluate.run_eval``): the command reads it from there
when it runs. Command-line arguments are parsed here, in cli/, into the library's typed requests
(``CheckRequest``, ``Request``); the library takes no argv.

Exit codes: 0 success; 2 a usage error or bad input (one ``error: ...`` line on stderr, also for
Hydra's own errors: unknown key, bad override syntax, unknown group option, unusable run dir)
or an output that found no room (full disk or quota, ``ulimit -f``); 3 training diverged; 4 some
inputs unreadable; 130 interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ClipflowError, first_line
from .help import help_text, wants_help

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONFIG_PATH = "pkg://clipflow.configs"
USAGE_EXIT = 2
RUN_DIR_KEY = "hydra.run.dir"  # the setting that chooses a command's run dir
_MAX_MESSAGE = 400  # Hydra lists every available option; one line stays readable
log = logging.getLogger("clipflow")


def hydra_app(
    config_name: str, job: Callable[[DictConfig], None], run_dir_key: str = RUN_DIR_KEY
) -> None:
    """Run ``job(cfg)`` as the Hydra app ``config_name`` (``--help``, ``--cfg job``, ``-m``
    work as usual). A ClipflowError in the job, and any error Hydra raises before the job
    starts (config composition, override syntax, run dir), is one line on stderr + exit 2.
    ``--help`` is answered from the YAML configs before Hydra is imported. ``run_dir_key``:
    the setting an unwritable run dir's error names (calibrate's ``out=`` sets its run dir)."""
    if wants_help(sys.argv[1:]):
        print(help_text(config_name, Path(sys.argv[0]).name or f"clipflow-{config_name}"))
        return
    import hydra

    from_job: list[BaseException] = []

    @functools.wraps(job)  # Hydra names the job (and its log file) after the wrapped module
    def task(cfg: DictConfig) -> None:
        try:
            with console_for_this_rank():
                guarded(lambda: job(cfg))
        except BaseException as err:
            from_job.append(err)
            raise

    app = hydra.main(config_path=CONFIG_PATH, config_name=config_name, version_base="1.3")(task)
    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    # Without it Hydra prints its own multi-line report and exits 1; with it, Hydra raises.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except Exception as err:
        if user_wants_traceback or any(err is e for e in from_job):
            raise  # a bug in the job: keep the traceback
        print(f"error: {hydra_error_line(err, run_dir_key)}", file=sys.stderr)
        sys.exit(USAGE_EXIT)
    finally:
        if not user_wants_traceback:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def hydra_error_line(err: BaseException, run_dir_key: str = RUN_DIR_KEY) -> str:
    """One line from an error raised while Hydra composed the config or prepared the run dir."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    os_error = _os_error_in(err)
    if os_error is not None:
        where = os_error.filename or _planned_run_dir()
        reason = os_error.strerror or str(os_error)
        return (
            f"cannot write the run dir ({where}: {reason}); "
            f"set {run_dir_key}=DIR to a writable folder"
        )
    unknown_key = unknown_key_line(err)
    if unknown_key is not None:
        text = unknown_key
    elif isinstance(err, MissingConfigException) and err.options:
        text = f"{first_line(err)}; available: {', '.join(err.options)}"
    elif isinstance(err, OverrideParseException):
        text = f"cannot parse override {err.override!r}: {first_line(err)}"
    else:
        text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err.__cause__, OmegaConfBaseException) and unknown_key is None:
        text += f" ({first_line(err.__cause__)})"
    if "'experiment'" in text:  # configs/experiment is clipflow-reproduce's, not a group here
        text = (
            "experiment= is not a setting of this command: the paper's experiments run with "
            "clipflow-reproduce experiment=NAME (clipflow-reproduce --list)"
        )
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def unknown_key_line(err: BaseException) -> str | None:
    """Hydra's "Could not override 'trian.lr'. To append to your config use +trian.lr=1" as
    ``unknown key trian.lr (did you mean train.lr?)``; None for any other error. Its advice
    is never what the user wants: every command refuses keys it does not know."""
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    from ..settings.suggest import did_you_mean

    cause, node = err.__cause__, getattr(err.__cause__, "parent_node", None)
    override = re.match(r"Could not override '([^']+)'", str(err))
    if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or override is None:
        return None
    if not isinstance(node, DictConfig) or "not in struct" not in str(cause):
        return None
    typed = override.group(1)  # as typed (the cause names only its first missing part)
    root = node._get_root()  # the whole composed config: every key this command knows
    known = [k for k in _dotted_keys(root) if k != "hydra" and not k.startswith("hydra.")]
    top = ", ".join(k for k in known if "." not in k)
    hint = did_you_mean(typed, known) or f" (top-level keys: {top})"
    return f"unknown key {typed}{hint}; --help lists every key and its meaning"


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of a config, sections included, as dotted paths (``train``, ``train.lr``)."""
    from omegaconf import DictConfig

    keys = []
    for key in node.keys() if isinstance(node, DictConfig) else ():
        dotted = prefix + str(key)
        keys.append(dotted)
        keys += _dotted_keys(node._get_node(key), dotted + ".")
    return keys


def _os_error_in(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err`` (logging.config wraps one in a ValueError), if any; Hydra's
    MissingConfigException is an IOError too, but a config error."""
    from hydra.errors import HydraException

    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and not isinstance(err, HydraException):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def _planned_run_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    try:
        return str(HydraConfig.get().runtime.output_dir)
    except Exception:  # Hydra had not got that far
        return "the run dir"


def to_dict(cfg: DictConfig) -> dict:
    """The resolved config as plain containers; a broken ``${...}`` is a one-line error."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise ClipflowError(f"cannot resolve the config: {first_line(err)}") from None


def run_dir(key: str = RUN_DIR_KEY) -> Path:
    """Hydra's output dir for this job, checked writable before any expensive work; ``key``
    is the setting that chooses it (named in the error)."""
    from hydra.core.hydra_config import HydraConfig

    return check_writable_dir(Path(HydraConfig.get().runtime.output_dir), key)


def check_writable_dir(path: Path, key: str = RUN_DIR_KEY) -> Path:
    """``path`` as a folder we can write into (created if missing), or a one-line error."""
    from ..core.fileio import folder_write_problem

    why = folder_write_problem(path)
    if why:
        raise ClipflowError(
            f"cannot write the run dir {path}: {why}; set {key}=DIR to a writable folder"
        )
    return path


@contextlib.contextmanager
def console_for_this_rank():
    """Progress bars and log lines that do not break each other; under torchrun, only rank 0
    talks (other ranks keep their warnings and errors). Everything is restored on exit."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    rank = int(os.environ.get("RANK", "0") or 0)  # set by torchrun before the group exists
    with contextlib.ExitStack() as stack:
        if rank != 0:
            stack.enter_context(_bars_off())
            stack.enter_context(_level(logging.getLogger("clipflow"), logging.WARNING))
        stack.enter_context(logging_redirect_tqdm())  # log records printed above the bars
        yield


@contextlib.contextmanager
def _level(logger: logging.Logger, level: int):
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


@contextlib.contextmanager
def _bars_off():
    """Every tqdm bar created inside the block is disabled (tqdm reads its TQDM_DISABLE
    environment variable once, at import, so it cannot be scoped that way)."""
    from tqdm import std

    original = std.tqdm.__init__

    def init(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    std.tqdm.__init__ = init
    try:
        yield
    finally:
        std.tqdm.__init__ = original


def guarded(job: Callable[[], object]) -> None:
    """Run ``job``; a ClipflowError, or a write anywhere that found no room (full disk or quota,
    ``ulimit -f``), becomes one line on stderr and a non-zero exit."""
    try:
        job()
    except ClipflowError as err:
        _exit_with(err)
    except KeyboardInterrupt:
        print("interrupted; files written so far are complete (atomic writes)", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        _reader_went_away()
    except Exception as err:
        # Writes through core.fileio say this themselves (DiskFullError); others (stdout
        # redirected to a full disk, a library's own file) are explained here.
        from ..core.fileio import no_room_errno, no_room_error

        if no_room_errno(err) is None:
            raise  # a bug: keep the traceback
        _exit_with(no_room_error(err, getattr(err, "filename", None)))


def _exit_with(err: ClipflowError) -> None:
    print(f"error: {err}", file=sys.stderr)
    log.debug("error details", exc_info=True)
    sys.exit(err.exit_code)


# 128 + SIGPIPE: the status a shell reports for a command whose reader closed the pipe
# (``clipflow-detect out=- | head``); the output that was read is complete lines.
BROKEN_PIPE_EXIT = 141


def _reader_went_away() -> None:
    """Exit quietly after stdout's reader closed the pipe. Python would otherwise print a
    traceback, and a second "Exception ignored" one when it flushes stdout at exit: point
    stdout at /dev/null first (the recipe of the ``signal`` module's documentation)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no real file (captured, replaced): nothing to flush
        pass
    sys.exit(BROKEN_PIPE_EXIT)


def plain_main(doc: str, argv: list[str] | None, job: Callable[[list[str]], Any]) -> None:
    """Entry of a ``key=value`` command that is not a Hydra app: ``-h``/``--help`` prints
    ``doc``; ``job(argv)`` runs with warnings on the console and one-line errors; an int it
    returns is the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(doc)
        return
    logging.basicConfig(level=logging.WARNING)

    def run() -> None:
        code = job(argv)
        if isinstance(code, int):
            sys.exit(code)

    guarded(run)
