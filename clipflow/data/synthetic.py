"""Generated image folders in the real benchmark layouts, for the demo and the mini reproduction.

"Natural" images are random fields with a 1/f amplitude spectrum (like photos); "fake" ones
add the periodic up-sampling traces that GAN/diffusion decoders leave (a checkerboard in the
spectrum). They exercise every code path; with a random backbone they prove nothing about
detection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .layouts import CLASS_LEVEL_SETS, FAKE_DIR, PAPER_ORDER, POOL_OF, REAL_DIR

DEMO_CLASSES = ("airplane", "cat")


def natural_image(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """An RGB uint8 (size, size, 3) image with a 1/f spectrum."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size)
    channels = []
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi, (size, size))
        field = np.fft.ifft2(amplitude * np.exp(1j * phase)).real
        channels.append((field - field.mean()) / (field.std() + 1e-8))
    img = 128 + 40 * np.stack(channels, axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


def fake_image(rng: np.random.Generator, size: int = 96, strength: float = 12.0) -> np.ndarray:
    """A natural-looking image plus a period-2 checkerboard (transposed-convolution trace)."""
    img = natural_image(rng, size).astype(np.float64)
    yy, xx = np.mgrid[:size, :size]
    img += strength * ((yy + xx) % 2 * 2 - 1)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(
    folder: Path,
    n: int,
    rng: np.random.Generator,
    *,
    fake: bool = False,
    size: int = 96,
    ext: str = ".png",
) -> None:
    """``n`` images ``0000<ext>``... in ``folder`` (created even when ``n`` is 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = fake_image(rng, size) if fake else natural_image(rng, size)
        Image.fromarray(arr).save(folder / f"{i:04d}{ext}")


def _write_pair(
    folder: Path, n_real: int, n_fake: int, rng: np.random.Generator, size: int, fake_ext: str
) -> None:
    """``<folder>/0_real`` and ``<folder>/1_fake``."""
    write_images(folder / "0_real", n_real, rng, size=size)
    write_images(folder / "1_fake", n_fake, rng, fake=True, size=size, ext=fake_ext)


def make_train_folder(
    root: Path,
    n_per_class: int = 40,
    seed: int = 0,
    size: int = 96,
    n_fake: int | None = None,
    classes: Sequence[str] = DEMO_CLASSES,
) -> Path:
    """``<root>/<class>/0_real`` (and a ``1_fake`` that training must ignore).

    ``n_fake`` fakes per class (default a tenth of the reals): only the UnivFD linear-probe
    baseline reads them.
    """
    rng = np.random.default_rng(seed)
    fakes = max(1, n_per_class // 10) if n_fake is None else n_fake
    for cls in classes:
        _write_pair(Path(root) / cls, n_per_class, fakes, rng, size, ".png")
    return Path(root)


def make_cnnspot_folder(
    root: Path,
    sets: Mapping[str, tuple[int, int]],
    class_level: Mapping[str, Sequence[str]] | None = None,
    n_per_class: int = 2,
    seed: int = 1,
    size: int = 96,
    fake_ext: str = ".png",
) -> Path:
    """CNNSpot test layout: ``<root>/<set>/{0_real,1_fake}`` with ``(n_real, n_fake)`` images
    per entry of ``sets``, then ``<root>/<set>/<class>/{0_real,1_fake}`` with ``n_per_class``
    each for every class of ``class_level``."""
    rng = np.random.default_rng(seed)
    for name, (n_real, n_fake) in sets.items():
        _write_pair(Path(root) / name, n_real, n_fake, rng, size, fake_ext)
    for name, classes in (class_level or {}).items():
        for cls in classes:
            _write_pair(Path(root) / name / cls, n_per_class, n_per_class, rng, size, ".png")
    return Path(root)


def make_univfd_folder(
    root: Path,
    pools: Mapping[str, int],
    gens: Mapping[str, int],
    seed: int = 2,
    size: int = 96,
    pool_ext: str = ".png",
) -> Path:
    """UnivFD diffusion layout: shared reals ``<root>/<pool>/0_real`` (count per pool), then
    generator folders with only ``1_fake`` (count per generator)."""
    rng = np.random.default_rng(seed)
    for name, count in pools.items():
        write_images(Path(root) / name / "0_real", count, rng, size=size, ext=pool_ext)
    for name, count in gens.items():
        write_images(Path(root) / name / "1_fake", count, rng, fake=True, size=size)
    return Path(root)


def make_test_folder(
    root: Path, sets: dict[str, str], n: int = 12, seed: int = 1, size: int = 96
) -> Path:
    """Test sets in the layout each name has in the real benchmark.

    ``sets`` maps a set name to its layout: ``plain`` (``<name>/0_real,1_fake``), ``classes``
    (CNNSpot class level), or ``imagenet``/``laion`` (UnivFD: only ``1_fake``, reals shared).
    Fakes of plain sets get an upper-case ``.PNG`` and shared reals ``.jpg``, on purpose.
    """
    rng = np.random.default_rng(seed)
    for name, layout in sets.items():
        if layout == "plain":
            _write_pair(root / name, n, n, rng, size, ".PNG")
        elif layout == "classes":
            for cls in DEMO_CLASSES:
                _write_pair(root / name / cls, max(1, n // 2), max(1, n // 2), rng, size, ".png")
        elif layout in ("imagenet", "laion"):
            pool = root / layout / "0_real"
            if not pool.exists():
                write_images(pool, n, rng, size=size, ext=".jpg")
            write_images(root / name / "1_fake", n, rng, fake=True, size=size)
        else:
            raise ValueError(f"unknown layout {layout!r} for {name}")
    return root


DEMO_TEST_SETS = {"progan": "classes", "biggan": "plain", "guided": "imagenet", "ldm_200": "laion"}


# ---------------------------------------------------------------- the whole benchmark, in miniature
GAN_SETS: tuple[str, ...] = PAPER_ORDER[:11]  # the CNNSpot test set's 11 of the paper's 19
DIFFUSION_SETS: tuple[str, ...] = PAPER_ORDER[11:]  # UnivFD's 8 diffusion sets
NEW_GENERATORS: tuple[str, ...] = ("dalle3", "deepfloyd", "realvisxl", "sd15")  # Table V's, by name


def benchmark_layout(layout: str = "release") -> dict[str, dict[str, str]]:
    """Container folder -> {set: layout} for all 19 sets.

    ``release``: the downloads as unpacked — ``CNN_synth_testset/`` (progan, cyclegan, stylegan
    with a class level) and ``diffusion_datasets/`` (shared ``imagenet``/``laion`` reals, each
    generator with only ``1_fake``). ``mirror``: every set with its own ``0_real``/``1_fake``.
    """
    if layout == "release":
        gans = {s: "classes" if s in CLASS_LEVEL_SETS else "plain" for s in GAN_SETS}
        return {
            "CNN_synth_testset": gans,
            "diffusion_datasets": {s: POOL_OF[s] for s in DIFFUSION_SETS},
        }
    if layout == "mirror":
        return {"benchmark": {s: "plain" for s in PAPER_ORDER}}
    raise ValueError(f"layout={layout!r}: use release or mirror")


def make_benchmark(
    root: Path,
    layout: str = "release",
    n: int = 4,
    size: int = 48,
    n_train: int = 8,
    n_val: int = 4,
    classes: Sequence[str] = DEMO_CLASSES,
    seed: int = 0,
) -> dict[str, Path]:
    """A miniature of everything the paper uses, in the real folder layouts.

    ``progan_train/<class>/{0_real,1_fake}``, ``progan_val/<class>/{0_real,1_fake}``,
    ``test/`` with all 19 sets (``n`` real + ``n`` fake each, see :func:`benchmark_layout`) and
    ``new_generators/<name>/{0_real,1_fake}`` for Table V. Returns the four roots.
    """
    root = Path(root)
    paths = {
        "train_root": root / "progan_train",
        "val_root": root / "progan_val",
        "test_root": root / "test",
        "extra_root": root / "new_generators",
    }
    make_train_folder(paths["train_root"], n_train, seed, size, n_fake=n_train, classes=classes)
    make_train_folder(paths["val_root"], n_val, seed + 1, size, n_fake=n_val, classes=classes)
    for i, (container, sets) in enumerate(benchmark_layout(layout).items()):
        make_test_folder(paths["test_root"] / container, sets, n, seed + 2 + i, size)
    make_test_folder(paths["extra_root"], {g: "plain" for g in NEW_GENERATORS}, n, seed + 9, size)
    return paths


# ---------------------------------------------------------------- today's benchmarks, in miniature
# GenImage generator folders as the archives unpack (<Gen>/imagenet_*) and as its README draws
# them (<Gen>/{train,val}); names as published.
GENIMAGE_ARCHIVES = {
    "stable_diffusion_v_1_4": "imagenet_ai_0419_sdv4",
    "Midjourney": "imagenet_midjourney",
    "ADM": "imagenet_ai_0508_adm",
}
GENIMAGE_PARTS = ("train/ai", "train/nature", "val/ai", "val/nature")
PAIR = (REAL_DIR, FAKE_DIR)
# benchmark -> the forms its tree takes in a documented placement
FORMS: dict[str, tuple[str, ...]] = {
    "univfd": ("release", "mirror"),
    "genimage": ("archive", "readme"),
    "chameleon": ("release", "nested"),
    "synthbuster": ("release",),
    "wildrf": ("release",),
}


def _parts(folder: Path, parts: Sequence[str], n: int, rng: np.random.Generator, size: int):
    for part in parts:
        fake = Path(part).name in (FAKE_DIR, "ai")
        write_images(folder / part, n, rng, fake=fake, size=size)


def make_genimage(
    folder: Path,
    form: str = "archive",
    parts: Sequence[str] = GENIMAGE_PARTS,
    gens: Sequence[str] = tuple(GENIMAGE_ARCHIVES),
    n: int = 2,
    size: int = 16,
    seed: int = 3,
) -> list[Path]:
    """GenImage under ``folder``: ``<Gen>/imagenet_*/<part>`` (``archive``) or ``<Gen>/<part>``
    (``readme``) for each of ``gens`` and ``parts`` (e.g. only ``val/ai``: an incomplete
    generator). Returns the generator folders (those holding ``val``)."""
    if form not in FORMS["genimage"]:
        raise ValueError(f"form={form!r}: use {' or '.join(FORMS['genimage'])}")
    rng = np.random.default_rng(seed)
    out = []
    for gen in gens:
        g = folder / gen
        if form == "archive":
            g = g / GENIMAGE_ARCHIVES.get(gen, f"imagenet_{gen}")
        _parts(g, parts, n, rng, size)
        out.append(g)
    return out


def make_chameleon(
    folder: Path, form: str = "release", parts: Sequence[str] = PAIR, n: int = 2, size: int = 16
) -> Path:
    """Chameleon: ``<folder>/test/{0_real,1_fake}``, or ``nested``:
    ``<folder>/Chameleon/test/...`` (as some copies unpack). Returns the ``test`` folder."""
    test = folder / ("Chameleon/test" if form == "nested" else "test")
    _parts(test, parts, n, np.random.default_rng(4), size)
    return test


def make_synthbuster(
    folder: Path,
    gens: Sequence[str] = ("dalle2", "glide"),
    reals: bool = True,
    n: int = 2,
    size: int = 16,
) -> Path:
    """Synthbuster as GRIP's script unpacks it: ``<folder>/{real_RAISE_1k,<gen>...}``, images
    directly inside (``reals=False``: the RAISE archive not unpacked)."""
    rng = np.random.default_rng(5)
    if reals:
        write_images(folder / "real_RAISE_1k", n + 1, rng, size=size)
    for g in gens:
        write_images(folder / g, n, rng, fake=True, size=size)
    return folder


def make_wildrf(
    folder: Path,
    platforms: Mapping[str, Sequence[str]] | None = None,
    splits: Sequence[str] = ("train", "val"),
    n: int = 2,
    size: int = 16,
) -> Path:
    """WildRF: ``<folder>/{train,val}/{0_real,1_fake}`` and
    ``<folder>/test/<platform>/<parts>`` (default: reddit, twitter, facebook with both;
    ``{}``: no ``test`` at all)."""
    rng = np.random.default_rng(6)
    for split in splits:
        _parts(folder / split, PAIR, n, rng, size)
    plats = {p: PAIR for p in ("reddit", "twitter", "facebook")} if platforms is None else platforms
    for p, parts in plats.items():
        _parts(folder / "test" / p, parts, n, rng, size)
    return folder


def make_placed(root: Path, benchmark: str, form: str, home: str, folder: str) -> Path:
    """``benchmark``'s miniature tree in ``form`` at ``root/<home>/<folder>`` (a Layout's
    documented place: clipflow.data.benchmarks.LAYOUTS); returns that folder."""
    where = Path(root) / home / folder
    if benchmark == "univfd":
        for i, (container, sets) in enumerate(benchmark_layout(form).items()):
            make_test_folder(where / container, sets, n=1, seed=20 + i, size=16)
    elif benchmark == "genimage":
        make_genimage(where, form)
    elif benchmark == "chameleon":
        make_chameleon(where, form)
    elif benchmark in ("synthbuster", "wildrf") and form == "release":
        (make_synthbuster if benchmark == "synthbuster" else make_wildrf)(where)
    else:
        raise ValueError(f"no miniature of {benchmark!r} in form {form!r}: see FORMS")
    return where
