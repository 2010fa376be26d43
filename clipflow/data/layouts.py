"""The benchmark folders' vocabulary: label folders, set names and the test-set record.

Labels everywhere: 0 = real (``0_real``), 1 = fake (``1_fake``). The CNNSpot and UnivFD set
names in the paper's order and families, their display names, the class-level sets and
UnivFD's shared real pools (SPEC §6, §8) live here; :class:`TestSet` is what every finder
returns. Finding the sets is :mod:`clipflow.data.testsets` (CNNSpot / UnivFD / plain folders)
and :mod:`clipflow.data.benchmarks` (the modern benchmarks); the natural training images are
:mod:`clipflow.data.train_images`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REAL_DIR = "0_real"
FAKE_DIR = "1_fake"

PAPER_ORDER: tuple[str, ...] = (
    "progan", "cyclegan", "biggan", "stylegan", "gaugan", "stargan", "deepfake",
    "seeingdark", "san", "crn", "imle", "guided", "ldm_200", "ldm_200_cfg", "ldm_100",
    "glide_100_27", "glide_50_27", "glide_100_10", "dalle",
)  # fmt: skip
# The paper's grouping of its 19 sets (§IV: six GAN models; DeepFakes, the low-level vision and
# perceptual-loss models and DALL-E; the diffusion models Guided, LDM and Glide).
PAPER_FAMILIES: dict[str, tuple[str, ...]] = {
    "gan": ("progan", "cyclegan", "biggan", "stylegan", "gaugan", "stargan"),
    "diffusion": (
        "guided", "ldm_200", "ldm_200_cfg", "ldm_100", "glide_100_27", "glide_50_27",
        "glide_100_10",
    ),
    "other": ("deepfake", "seeingdark", "san", "crn", "imle", "dalle"),
}  # fmt: skip
# Other CNNSpot sets we recognise; they sort after the paper's 19.
KNOWN_SETS: tuple[str, ...] = PAPER_ORDER + ("stylegan2", "whichfaceisreal")

DISPLAY_NAMES: dict[str, str] = {
    "progan": "ProGAN", "cyclegan": "CycleGAN", "biggan": "BigGAN", "stylegan": "StyleGAN",
    "gaugan": "GauGAN", "stargan": "StarGAN", "deepfake": "DeepFakes", "seeingdark": "SITD",
    "san": "SAN", "crn": "CRN", "imle": "IMLE", "guided": "Guided", "ldm_200": "LDM_200",
    "ldm_200_cfg": "LDM_200_cfg", "ldm_100": "LDM_100", "glide_100_27": "Glide_100_27",
    "glide_50_27": "Glide_50_27", "glide_100_10": "Glide_100_10", "dalle": "DALL-E",
    "stylegan2": "StyleGAN2", "whichfaceisreal": "WFIR",
}  # fmt: skip

# Sets that carry a <class> level in the CNNSpot release (any set may have one, though).
CLASS_LEVEL_SETS = frozenset({"progan", "stylegan", "stylegan2", "cyclegan"})
# UnivFD's diffusion release: real images shared by several generator folders.
SHARED_REAL_POOLS: dict[str, list[str]] = {
    "imagenet": ["guided"],
    "laion": ["ldm_200", "ldm_200_cfg", "ldm_100", "glide_100_27", "glide_50_27",
              "glide_100_10", "dalle"],
}  # fmt: skip

# generator -> its shared real pool (UnivFD diffusion sets)
POOL_OF = {gen: pool for pool, gens in SHARED_REAL_POOLS.items() for gen in gens}


@dataclass
class TestSet:
    """One evaluation set: real (label 0) and fake (label 1) image paths."""

    __test__ = False  # not a pytest test class, despite the name

    name: str
    display_name: str
    real: list[Path]
    fake: list[Path]
    note: str = ""
    # Entries under 0_real/1_fake that are not scored, with the reason (symlinks that would
    # count an image twice or under the other label, FIFOs, unreadable folders ...).
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    # Which benchmark the set belongs to and how it is scored (clipflow.data.benchmarks);
    # empty for sets found by this module alone.
    benchmark: str = ""
    protocol: str = ""

    @property
    def n_real(self) -> int:
        return len(self.real)

    @property
    def n_fake(self) -> int:
        return len(self.fake)


# The fewest natural images a folder of training or calibration photos may hold (one to fit or
# calibrate on, one more: a split and a p-value both need two); clipflow-calibrate's
def display_name(name: str) -> str:
    """The paper's name of a set folder (unknown names display as themselves)."""
    return DISPLAY_NAMES.get(name, name)


def listing_skips(sets: list[TestSet]) -> list[tuple[str, str]]:
    """The entries discovery left out of ``sets``, each once (sets share real pools)."""
    return list(dict.fromkeys((str(p), r) for ts in sets for p, r in ts.skipped))
