"""The experiment configs and the settings of an arm, composed with Hydra (no torch).

``configs/experiment/<name>.yaml`` becomes an :class:`~clipflow.paper.spec.ExperimentSpec`;
``configs/experiment/all.yaml`` lists the experiments ``experiment=all`` runs (and, under
``by_name``, those run only by name). An arm's settings are ``configs/train.yaml`` with
override lists merged in order, a later value of a key replacing an earlier one
(clipflow.paper.experiments.Runner.settings says which lists, in which order).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, cast

from hydra import compose, initialize_config_module
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..errors import ClipflowError
from ..settings.config import TrainSettings, train_settings
from .spec import ArmSpec, ExperimentSpec


def _experiment_dir() -> Path:
    """configs/experiment inside the installed package (editable or wheel)."""
    return Path(str(files("clipflow.configs"))) / "experiment"


def list_experiments() -> list[str]:
    """Names of the experiment configs, in the order ``experiment=all`` runs them."""
    return list(OmegaConf.load(_experiment_dir() / "all.yaml").experiments)


def named_experiments() -> list[str]:
    """Every experiment: those of ``all`` plus those run only by name (``by_name`` in
    all.yaml, e.g. backbones, which needs several backbones' weights)."""
    path = _experiment_dir() / "all.yaml"
    extra = _yaml_mapping(OmegaConf.load(path), path).get("by_name") or []
    return list_experiments() + [n for n in extra if n not in list_experiments()]


def load_experiment(name: str) -> ExperimentSpec:
    path = _experiment_dir() / f"{name}.yaml"
    if name == "all" or not path.is_file():
        raise ClipflowError(
            f"unknown experiment {name!r}; choose one of: all, {', '.join(named_experiments())}"
        )
    raw = _yaml_mapping(OmegaConf.load(path), path)
    arms = [
        ArmSpec(a["name"], list(a.get("overrides") or []), a.get("paper")) for a in raw.pop("arms")
    ]
    unknown = sorted(set(raw) - {f for f in ExperimentSpec.__dataclass_fields__})
    if unknown:
        raise ClipflowError(f"unknown key(s) {unknown} in {path}")
    return ExperimentSpec(name=name, arms=arms, **{k: v for k, v in raw.items() if k != "name"})


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(*groups: list[str]) -> list[str]:
    """Concatenate override lists; a later value of the same key replaces an earlier one."""
    merged: dict[str, str] = {}
    for group in groups:
        for o in group:
            merged.pop(override_key(o), None)
            merged[override_key(o)] = o
    return list(merged.values())


def compose_settings(overrides: list[str]) -> TrainSettings:
    """configs/train.yaml with ``overrides`` (Hydra syntax), as typed settings."""
    try:
        with initialize_config_module(config_module="clipflow.configs", version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides))
    except Exception as err:  # Hydra's override errors say which key is wrong
        raise ClipflowError(f"bad override in {overrides}: {str(err).splitlines()[0]}") from None
    return train_settings(_yaml_mapping(cfg, "configs/train.yaml"))


def _yaml_mapping(cfg: DictConfig | ListConfig, where: object) -> dict[str, Any]:
    """A loaded config as a plain dict (interpolations resolved); ours are all mappings."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(raw, dict):  # a YAML list at the top: no setting has a name
        raise ClipflowError(f"{where} is a list, not a mapping of settings")
    return cast(dict[str, Any], raw)  # the top-level keys of a config are setting names
