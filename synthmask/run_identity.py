"""Who a run is: its name, tags, settings and code provenance, from the command line and the
resolved config (plain dicts: nothing here knows Lightning or W&B).

- name: the experiment (config file stem, ``shapes_synth_robust.yaml`` -> ``shapes-synth-robust``)
  and the command-line overrides in short keys, sorted:
  ``shapes-synth-robust reliability_mode=none seed_everything=1``.
- tags: computed from the resolved config (model, net, reliability mode, data, generator, mask
  method, prompt recipe, number of images), so they follow every override.
- settings: the resolved config flattened to dotted keys without ``init_args``
  (``model.reliability_mode``, ``data.synthesis.num_images``), for comparing runs.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Command-line keys that say how to run or log, not what is trained: left out of the name.
NOT_SETTINGS = ("config", "print_config", "ckpt_path", "trainer.logger", "trainer.callbacks")
# Config sections left out of the flat settings (logging plumbing, not the experiment).
NOT_FLATTENED = ("trainer.logger", "trainer.callbacks", "config", "ckpt_path")
SECTIONS = ("model.", "data.", "trainer.")
_CLASS_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*\.[A-Z]\w*$")
_TAG_LIMIT = 64  # W&B's longest tag


def experiment_name(config_paths: Sequence[str | Path], fallback: str = "run") -> str:
    """``shapes_synth_robust.yaml`` -> ``shapes-synth-robust`` (several configs: joined by +)."""
    stems = [Path(str(p)).stem.replace("_", "-") for p in config_paths]
    return "+".join(stems) if stems else fallback


def _strip_init_args(key: str) -> str:
    return ".".join(part for part in key.split(".") if part != "init_args")


def short_key(key: str) -> str:
    """``model.init_args.optimizer.init_args.lr`` -> ``optimizer.lr``; ``trainer.max_epochs``
    -> ``max_epochs``; ``model.init_args.net.class_path`` -> ``net``; ``seed_everything``
    stays."""
    key = _strip_init_args(key).removesuffix(".class_path")
    for section in SECTIONS:
        if key.startswith(section):
            return key[len(section) :]
    return key


def short_value(value: str) -> str:
    """A class path becomes its class name (``synthmask.masks.SelfRefineMaskConfig`` ->
    ``SelfRefineMaskConfig``); any other value is kept."""
    return value.rsplit(".", 1)[-1] if _CLASS_PATH.match(value) else value


def _is_setting(key: str) -> bool:
    return not any(key == k or key.startswith((k + ".", k + "+")) for k in NOT_SETTINGS)


def command_line_overrides(args: Sequence[str], settings_only: bool = True) -> dict[str, str]:
    """The ``--key=value`` / ``--key value`` options of a command line, key -> value, the last
    one winning; with ``settings_only`` the config files, logging and callback options (how to
    run, not what) are left out."""
    found: dict[str, str] = {}
    items = list(args)
    i = 0
    while i < len(items):
        token = items[i]
        i += 1
        if not token.startswith("--"):
            continue
        key, eq, value = token[2:].partition("=")
        if not eq:
            has_value = i < len(items) and not items[i].startswith("--")
            value = items[i] if has_value else "true"
            i += int(has_value)
        if _is_setting(key) or not settings_only:
            found.pop(key, None)
            found[key] = value
    return found


def run_name(experiment: str, overrides: Mapping[str, str]) -> str:
    """``experiment key=value ...`` with short keys, sorted (the same settings, the same name)."""
    parts = sorted(f"{short_key(k)}={short_value(str(v))}" for k, v in overrides.items())
    return " ".join([experiment, *parts])


def _class_and_args(node: Any) -> tuple[str | None, dict[str, Any]]:
    """(class name, init_args) of a ``{class_path, init_args}`` node; a plain dict: (None, it)."""
    if not isinstance(node, Mapping):
        return None, {}
    if "class_path" in node:
        return str(node["class_path"]).rsplit(".", 1)[-1], dict(node.get("init_args") or {})
    return None, dict(node)


def flat_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config as ``{dotted key without init_args: value}``; a class node gives its
    class name under its own key (``data.mask: SelfRefineMaskConfig``), lists stay lists."""
    flat: dict[str, Any] = {}

    def visit(node: Any, key: str) -> None:
        if key in NOT_FLATTENED:
            return
        if isinstance(node, Mapping):
            name, args = _class_and_args(node)
            if name is not None:
                flat[key] = name
            for child, value in args.items():
                visit(value, f"{key}.{child}" if key else str(child))
        else:
            flat[key] = node

    visit(config, "")
    return flat


def _kebab(name: str, drop: str = "") -> str:
    """``SegmentationModule`` (drop ``Module``) -> ``segmentation``, ``ShapesWorld`` ->
    ``shapes-world``."""
    if drop and name.endswith(drop) and name != drop:
        name = name[: -len(drop)]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()


def model_slug(config: Mapping[str, Any]) -> str:
    """The experiment name of a run without a config file: its model class, kebab-case
    (``SegmentationModule`` -> ``segmentation``)."""
    model_class, _ = _class_and_args(config.get("model"))
    return _kebab(model_class, "Module") if model_class else "run"


def _mask_method(class_name: str) -> str:
    from synthmask.masks.choices import MASK_METHOD_CONFIGS

    by_class = {cls.__name__: method for method, cls in MASK_METHOD_CONFIGS.items()}
    return by_class.get(class_name, _kebab(class_name, "MaskConfig"))


def generator_name(pipeline: Mapping[str, Any]) -> str:
    """``synthmask:shapes-ldm`` -> ``shapes-ldm``; a hub id or folder -> its last part; with
    ``+lora`` / ``+vae`` when the model's LoRA or autoencoder is replaced."""
    model = str(pipeline.get("model") or "").rstrip("/\\")
    name = re.split(r"[/\\:]", model)[-1] or "unknown"
    name += "+lora" if pipeline.get("lora_path") else ""
    name += "+vae" if pipeline.get("vae_path") else ""
    return name


def prompt_recipe(prompts: Any) -> str:
    """``shapes-scenes``, ``shapes-scenes+synonyms``, ``templates-default``,
    ``templates-photo+context+augment``, ``texts``."""
    _, args = _class_and_args(prompts)
    if not args:
        return "templates-default"
    if args.get("scenes"):
        return f"{args['scenes']}-scenes" + ("+synonyms" if args.get("synonyms") else "")
    if args.get("texts"):
        recipe = "texts"
    else:
        templates = args.get("templates", "default")
        recipe = f"templates-{templates if isinstance(templates, str) else 'custom'}"
    return recipe + ("+augment" if args.get("augment") else "")


def run_tags(config: Mapping[str, Any]) -> list[str]:
    """Tags from the resolved config: ``model:``, ``net:``, ``reliability:``, ``data:``,
    ``generator:``, ``mask:``, ``prompts:``, ``images:`` (each only where the config has it)."""
    tags: list[str] = []
    model_class, model = _class_and_args(config.get("model"))
    data_class, data = _class_and_args(config.get("data"))
    if model_class:
        tags.append(f"model:{_kebab(model_class, 'Module')}")
    net_class, net = _class_and_args(model.get("net"))
    if net_class:
        encoder = net.get("encoder_name")
        tags.append(f"net:{net_class.lower()}" + (f"-{encoder}" if encoder else ""))
    if model.get("reliability_mode"):
        tags.append(f"reliability:{model['reliability_mode']}")
    if data_class:
        tags.append(f"data:{_kebab(data_class, 'DataModule')}")
    if isinstance(data.get("pipeline"), Mapping):
        tags.append(f"generator:{generator_name(data['pipeline'])}")
        mask_class, _ = _class_and_args(data.get("mask"))
        tags.append(f"mask:{_mask_method(mask_class) if mask_class else 'attn2mask'}")
        tags.append(f"prompts:{prompt_recipe(data.get('prompts'))}")
        synthesis = data.get("synthesis") or {}
        if isinstance(synthesis, Mapping) and synthesis.get("num_images") is not None:
            tags.append(f"images:{synthesis['num_images']}")
    return [tag[:_TAG_LIMIT] for tag in tags]


def merge_tags(*groups: Sequence[str] | None) -> list[str]:
    """All tags of the groups in order, each once."""
    merged: list[str] = []
    for group in groups:
        for tag in group or ():
            if str(tag) not in merged:
                merged.append(str(tag))
    return merged


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def code_provenance(source: Path | None = None) -> dict[str, Any]:
    """``{"git_sha", "git_dirty"}`` when the package runs from its git checkout (an editable
    install; tracked files changed = dirty), else ``{"version"}`` of the installed package."""
    root = source or Path(__file__).resolve().parents[1]
    checkout = (root / "pyproject.toml").is_file() and (root / "synthmask").is_dir()
    inside = _git(["rev-parse", "--is-inside-work-tree"], root) if checkout else None
    sha = _git(["rev-parse", "HEAD"], root) if inside and inside.strip() == "true" else None
    if sha:
        status = _git(["status", "--porcelain", "--untracked-files=no"], root)
        return {"git_sha": sha.strip(), "git_dirty": bool(status and status.strip())}
    try:
        return {"version": importlib.metadata.version("synthmask")}
    except importlib.metadata.PackageNotFoundError:
        return {"version": "unknown"}
