"""Your own extractor from an import path: ``backbone.family=custom backbone.factory=pkg.mod:make``.

The CLIs cannot be handed a Python object, so they take the extractor's *recipe*, the way Hydra's
``_target_`` and entry-point plugins do: ``package.module:callable``, a callable that returns a
:class:`~clipflow.backbones.protocol.BackboneProtocol` object. It is called with ``device=`` (the
run's resolved device) when its signature takes a ``device`` argument (or ``**kwargs``), else
with no argument. The module is found on ``sys.path`` as any import is: put its folder on
``PYTHONPATH`` (or install it).

Every way this can go wrong is one :class:`~clipflow.errors.BackboneError` line (exit 2 from a
CLI): a malformed path, a module that is not importable, a missing attribute, a callable that
raises, a result that is no extractor.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

import torch

from ..errors import BackboneError, first_line
from .config import BackboneConfig, factory_problem
from .protocol import ExtractorBackbone

log = logging.getLogger(__name__)


def find_factory(factory: str | None) -> Callable[..., Any]:
    """The callable ``factory`` names, imported (not called); one line for each failure."""
    if not factory:
        raise BackboneError(
            "backbone.family=custom needs backbone.factory=package.module:callable (a function "
            "returning your extractor, docs/backbones.md), or pass the extractor itself to the "
            "Python API (backbone=extractor)"
        )
    problem = factory_problem(factory)
    if problem:
        raise BackboneError(f"backbone.factory={factory!r}: {problem}")
    module_name, attr = factory.split(":")
    module = _import(module_name, factory)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise BackboneError(
                f"backbone.factory={factory}: module {module_name} ({_where(module)}) has no "
                f"attribute {attr!r}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise BackboneError(
            f"backbone.factory={factory}: {attr} is a {type(target).__name__}, not a callable "
            "returning an extractor"
        )
    return target


def load_custom(cfg: BackboneConfig, device: str | torch.device = "cpu") -> ExtractorBackbone:
    """Import ``cfg.factory``, call it (with ``device=`` when it takes one), check the result
    against the protocol; returns it wrapped like an extractor given to the Python API."""
    make = find_factory(cfg.factory)
    kwargs = {"device": str(device)} if _takes_device(make) else {}
    try:
        extractor = make(**kwargs)
    except Exception as err:  # the user's code: any failure is reported in one line
        raise BackboneError(
            f"backbone.factory={cfg.factory}: calling it raised {type(err).__name__}: "
            f"{first_line(err)}"
        ) from err
    try:
        backbone = ExtractorBackbone(extractor, BackboneConfig, factory=cfg.factory)
    except BackboneError as err:
        raise BackboneError(
            f"backbone.factory={cfg.factory}: its result is refused: {err}"
        ) from None
    except Exception as err:  # e.g. describe() raising, or mean not iterable
        raise BackboneError(
            f"backbone.factory={cfg.factory} returned no usable extractor "
            f"({type(err).__name__}: {first_line(err)}; see docs/backbones.md)"
        ) from err
    if backbone.info.get("random_init"):
        log.warning(
            "backbone %r has random weights: results show the pipeline works, not detection",
            backbone.info["name"],
        )
    return backbone


def _import(module_name: str, factory: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise BackboneError(
                f"backbone.factory={factory}: no module named {missing!r} on the Python path; "
                "put the folder that holds it on PYTHONPATH (PYTHONPATH=/path/to/src "
                "clipflow-...) or pip install its package"
            ) from None
        raise BackboneError(
            f"backbone.factory={factory}: importing {module_name} failed: it needs module "
            f"{missing!r}, which is not installed"
        ) from None
    except Exception as err:  # a SyntaxError or any error raised by the module's own code
        raise BackboneError(
            f"backbone.factory={factory}: importing {module_name} raised "
            f"{type(err).__name__}: {first_line(err)}"
        ) from err


def _takes_device(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: call them plainly
        return False
    return any(
        p.name == "device" and p.kind is not p.POSITIONAL_ONLY or p.kind is p.VAR_KEYWORD
        for p in params
    )


def _where(module) -> str:
    return getattr(module, "__file__", None) or "a namespace package"
