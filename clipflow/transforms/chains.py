"""``perturb=chain``: random chains of 1..max_len degradations per image, evaluated per length.

Design (docs/robustness.md):

* For each length L in 1..``max_len`` every image gets one random chain of exactly L *distinct*
  ops from ``ops`` (in random order, strengths drawn from :data:`RANGES`), so each L is a
  full evaluation of every file: AP/AUC per length, per set and for the means.
* The draw for an image depends only on (eval seed, the file name's bytes), via
  :func:`image_seed`, never on batch order, workers or global RNG. One permutation of the ops
  with their strengths is drawn per image and the length-L chain is its first L steps, so
  the chains are *nested*: an image's length-(L+1) chain is its length-L chain plus one op,
  applied to the very same intermediate pixels (the noise and crop of step i draw from a
  generator seeded by (image seed, i)). Marginally each length is still a uniformly random
  L-subset of the ops in random order; the nesting only pairs the lengths, which makes the
  AUC-vs-length curve less noisy.
* Strengths are rounded (qualities to integers, the rest to 1–2 decimals) *before* they are
  applied, so the recorded chain string (``jpeg63+blur1.4+crop0.81``) is exactly what ran.
* robust AUC (per set and per mean row) = the mean AUC over lengths 1..max_len, i.e. the area
  under the AUC-vs-length step curve divided by max_len; robust AP likewise.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.fileio import path_key_bytes
from ..errors import ClipflowError
from .config import CHAIN_OPS, ChainConfig, check_chain_config
from .perturb import Perturbation, apply_steps, parse_perturbation, resolve_perturbations
from .variant import Variant, VariantFn

# The strength range of each op (inclusive), as recent robustness challenges draw them.
RANGES: dict[str, tuple[float, float]] = {
    "jpeg": (30, 95),  # quality
    "webp": (30, 95),  # quality
    "resize": (0.5, 1.5),  # scale factor (down- and upscaling)
    "blur": (0.5, 3.0),  # Gaussian σ in pixels
    "noise": (1.0, 10.0),  # Gaussian σ on the 0–255 scale
    "crop": (0.6, 1.0),  # fraction of each side kept
}
DECIMALS = {"jpeg": 0, "webp": 0, "resize": 2, "blur": 1, "noise": 1, "crop": 2}
# Bump when the sampler changes: it is part of every chain variant's cache key.
SAMPLER_VERSION = 1
FAMILY = "chain"


def image_seed(seed: int, path: str) -> int:
    """A 63-bit seed for one image's chains, from the eval seed and the file name's bytes."""
    digest = hashlib.blake2b(
        b"chain/%d/%d/" % (SAMPLER_VERSION, seed) + path_key_bytes(path), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _strength(op: str, rng: np.random.Generator) -> float | int:
    lo, hi = RANGES[op]
    if DECIMALS[op] == 0:
        return int(rng.integers(int(lo), int(hi) + 1))
    # Clipped after rounding: a rounded draw never leaves the documented range.
    return float(min(hi, max(lo, round(float(rng.uniform(lo, hi)), DECIMALS[op]))))


def _atom(op: str, value: float | int) -> str:
    return f"{op}{value}" if isinstance(value, int) else f"{op}{value:g}"


def draw_chain(seed: int, path: str, length: int, ops: Sequence[str] = CHAIN_OPS) -> str:
    """The length-``length`` chain of ``path`` as a perturbation name (``webp41+noise3.2``)."""
    rng = np.random.default_rng(image_seed(seed, path))
    order = rng.permutation(len(ops))  # one permutation + strengths per image: nested chains
    strengths = {ops[i]: _strength(ops[i], rng) for i in order}
    return "+".join(_atom(ops[i], strengths[ops[i]]) for i in order[:length])


def apply_chain(image: torch.Tensor, chain: str, seed: int, path: str) -> torch.Tensor:
    """Apply a drawn chain to ``path``'s image; step i's noise/crop draw from (image seed, i)."""
    steps = parse_perturbation(chain).steps
    base = image_seed(seed, path)
    gens = [torch.Generator().manual_seed(_step_seed(base, i)) for i in range(len(steps))]
    return apply_steps(image, steps, gens)


def _step_seed(base: int, step: int) -> int:
    digest = hashlib.blake2b(b"%d/%d" % (base, step), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class ChainLength(Perturbation):
    """All images, each under its own random chain of exactly ``length`` ops (one variant)."""

    length: int = 1
    seed: int = 0
    ops: tuple[str, ...] = CHAIN_OPS

    def __call__(self, image, generator=None):
        raise TypeError("a chain variant is applied per file: use variant().fn_for(path)")

    def chain_for(self, path: str) -> str:
        return draw_chain(self.seed, path, self.length, self.ops)

    def _fn(self, path: str) -> VariantFn:
        chain = self.chain_for(path)
        return lambda image, generator: apply_chain(image, chain, self.seed, path)

    def cache_key(self) -> str:
        """Names everything the draw depends on: length, seed, ops, ranges, sampler version."""
        spec = json.dumps([SAMPLER_VERSION, RANGES, DECIMALS], sort_keys=True)
        digest = hashlib.blake2b(spec.encode(), digest_size=6).hexdigest()
        return f"chain:len={self.length}:seed={self.seed}:ops={','.join(self.ops)}:{digest}"

    def variant(self) -> Variant:
        return Variant(self.cache_key(), per_file=self._fn)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "family": FAMILY,
            "strength": self.strength,
            "length": self.length,
            "seed": self.seed,
            "ops": list(self.ops),
            "ranges": {op: list(RANGES[op]) for op in self.ops},
            "sampler_version": SAMPLER_VERSION,
            "chains": "per image, see chains.jsonl",
        }


def chain_perturbations(cfg: ChainConfig, seed: int) -> list[ChainLength]:
    """One variant per length 1..max_len (a bad setting raises ClipflowError, one line)."""
    problem = check_chain_config(cfg)
    if problem:
        raise ClipflowError(problem)
    return [
        ChainLength(
            name=f"chain_L{n}",
            family=FAMILY,
            strength=float(n),
            length=n,
            seed=seed,
            ops=tuple(cfg.ops),
        )
        for n in range(1, cfg.max_len + 1)
    ]


def resolve_with_chains(
    spec: str | Sequence[str] | None, cfg: ChainConfig, seed: int
) -> list[Perturbation]:
    """:func:`~clipflow.transforms.perturb.resolve_perturbations`, plus ``chain`` (alone or
    among other names) -> the chain variants of every length, after the named perturbations."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    items = [i.strip() for i in items if i.strip()]
    named = [i for i in items if i.lower() != FAMILY]
    out = resolve_perturbations(named)
    if len(named) < len(items):
        out += chain_perturbations(cfg, seed)  # ChainLength is a Perturbation
    return out
