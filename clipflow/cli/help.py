"""``--help`` of the Hydra commands, generated from the YAML configs and their comments.

The configs are the one place where each key, its default and its meaning are written (a
``# comment`` on the key's line or on the lines above it). This module reads them as text with
the standard library only, so ``clipflow-train --help`` answers without importing torch,
open_clip or Hydra. It lists the config groups the command's defaults list uses (and their
options), never other folders of configs/ (``experiment`` belongs to clipflow-reproduce).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.resources import files

EXIT_CODES = (
    "exit codes: 0 ok; 2 usage error or bad input (one `error: ...` line); "
    "3 training diverged; 4 some inputs unreadable (the others are done); 130 interrupted"
)
# Meanings of keys whose YAML line carries no comment (by dotted name, then by last part).
_FALLBACK = {
    "device": "auto | cpu | mps | cuda[:N]",
    "batch_size": "images per batch",
    "data.batch_size": "images per backbone batch (feature extraction)",
    "train.batch_size": "images per optimiser step (an N+P step also holds their proxies)",
    "num_workers": "image-loading processes",
    "prefetch_factor": "batches each loading process prepares ahead",
    "backbone.name": "open_clip or timm model name (tiny = random test tower)",
    "backbone.pretrained": "open_clip tag (openai), timm, or a local weights file (offline)",
    "backbone.precision": "fp32 | tf32 | bf16 | fp16 | amp_bf16",
    "backbone.preprocess": "paper | univfd (null = the checkpoint's)",
    "val_fraction": "share of each class held out for the threshold (training)",
    "max_per_class": "protocol=univfd: at most this many real + fake per set",
    "backbone.cache_dir": "where open_clip keeps downloaded weights (null = its default)",
    "proxy.name": "which proxy (the group option picks it)",
    "per_class": "natural images sampled per class",
    "views": "augmented views per training image",
    "val_root": "natural validation images (not read here)",
}
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.]*):(?P<rest>.*)$")
_COMMENT = re.compile(r"\s+#\s?(.*)$")  # an inline comment: whitespace, then '#'


@dataclass
class Key:
    name: str  # dotted: data.train_root
    default: str
    meaning: str


@dataclass
class Group:
    name: str
    default: str
    options: list[str]


@dataclass
class Config:
    header: list[str] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)  # other primary configs (extract: train)


def _config_text(name: str) -> str:
    return files("clipflow.configs").joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def _group_options(group: str) -> list[str]:
    folder = files("clipflow.configs").joinpath(group)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _split_value(rest: str) -> tuple[str, str]:
    """``" 0.1   # share"`` -> (``"0.1"``, ``"share"``)."""
    match = _COMMENT.search(rest)
    if match is None:
        return rest.strip(), ""
    return rest[: match.start()].strip(), match.group(1).strip()


def parse_config(text: str, prefix: str = "") -> Config:
    """Header comments, defaults-list groups and every key (dotted) with default and meaning.

    The ``hydra:`` section is left out: its keys are Hydra's (``--hydra-help``).
    """
    cfg = Config()
    stack: list[tuple[int, str]] = []  # (indent, key) of the open sections
    pending: list[str] = []  # comment lines above the next key
    section = None  # "defaults" / "hydra" while inside those top-level blocks
    seen_key = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            pending = [] if seen_key else pending
            continue
        if stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            (pending if seen_key else cfg.header).append(comment)
            continue
        indent = len(line) - len(line.lstrip(" "))
        if section == "defaults" and stripped.startswith("- "):
            _default_entry(stripped[2:], cfg)
            continue
        match = _KEY.match(line)
        if match is None:
            continue
        seen_key = True
        key = match.group("key")
        if indent == 0:
            section = key if key in ("defaults", "hydra") else None
        if section is not None:
            pending = []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, meaning = _split_value(match.group("rest"))
        dotted = ".".join([p for p in (prefix, *[k for _, k in stack], key) if p])
        meaning = " ".join([*pending, meaning]).strip()
        pending = []
        if value == "":
            stack.append((indent, key))
            if meaning:
                cfg.keys.append(Key(dotted + ".*", "", meaning))
            continue
        last = dotted.rsplit(".", 1)[-1]
        meaning = meaning or _FALLBACK.get(dotted) or _FALLBACK.get(last, "")
        cfg.keys.append(Key(dotted, value, meaning))
    return cfg


def _default_entry(entry: str, cfg: Config) -> None:
    entry = entry.split("#")[0].strip()
    if entry == "_self_" or entry.startswith("override "):
        return
    if ":" in entry:
        group, option = (s.strip() for s in entry.split(":", 1))
        cfg.groups.append(Group(group, option, _group_options(group)))
    else:
        cfg.includes.append(entry)


def resolve(name: str) -> Config:
    """The config ``name`` with the primary configs it includes merged in (later wins)."""
    own = parse_config(_config_text(name))
    merged = Config(header=own.header)
    for inc in own.includes:
        base = resolve(inc)
        merged.groups += base.groups
        merged.keys += base.keys
    merged.groups += own.groups
    merged.keys += own.keys
    for group in merged.groups:  # a group's keys, with the default option's values
        sub = parse_config(_config_text(f"{group.name}/{group.default}"), prefix=group.name)
        merged.keys += sub.keys
    by_name: dict[str, Key] = {}
    for key in merged.keys:
        by_name[key.name] = key
    merged.keys = list(by_name.values())
    return merged


def help_text(name: str, prog: str) -> str:
    """The text ``prog --help`` prints for the Hydra config ``name``."""
    cfg = resolve(name)
    lines = [*cfg.header, ""]
    if cfg.groups:
        lines.append("Config groups (group=option; each option's keys can then be set too):")
        width = max(len(g.name) for g in cfg.groups)
        for g in cfg.groups:
            others = [o for o in g.options if o != g.default]
            lines.append(f"  {g.name:<{width}}  {' | '.join([g.default + ' (default)', *others])}")
        lines.append("")
    lines.append("Keys (key=value; the default is in the middle column):")
    keys = [k for k in cfg.keys if not k.name.endswith(".*")]
    notes = {k.name[:-2]: k.meaning for k in cfg.keys if k.name.endswith(".*")}
    kw = max(len(k.name) for k in keys)
    vw = min(12, max(len(k.default) for k in keys))
    shown_notes: set[str] = set()
    for k in keys:
        section = k.name.rsplit(".", 1)[0] if "." in k.name else ""
        if section in notes and section not in shown_notes:
            shown_notes.add(section)
            lines.append(f"  # {section}: {notes[section]}")
        lines.append(f"  {k.name:<{kw}}  {k.default:<{vw}}  {k.meaning}".rstrip())
    lines += [
        "",
        "Hydra: --cfg job prints the resolved config; -m sweeps (e.g. -m seed=0,1,2); "
        "--hydra-help lists Hydra's own options.",
        EXIT_CODES,
    ]
    text = "\n".join(lines).strip()
    return text + "\n" if text.startswith(prog) else f"{prog}\n{text}\n"


def wants_help(argv: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)
