"""One model format for every non-language model: ``config.json`` + ``model.safetensors`` + ``README.md``.

The layout the Hugging Face Hub expects of any model, written by one function (:func:`save_model`) and
read by one (:func:`load_model`), so a reader who wants to change "how a model is saved" finds it here.
:class:`HubMixin` puts the pair on a model class through ``huggingface_hub``'s ``ModelHubMixin``, so
``Cls.from_pretrained(path or hub id)``, ``model.save_pretrained(dir)`` and ``model.push_to_hub(repo)``
work the same for every model the apps train. Language models keep transformers' ``save_pretrained``.

``config.json``::

    {"warmstart_kind": "rl.idm",          # what the folder holds; checked on load
     "warmstart_version": "0.1.0",
     "config": {...},                     # what the model's factory needs to rebuild it
     "files": {"model.safetensors": {"size": ..., "digest": ...}},
     ...extra keys (env spec, vocabularies, metrics)}

The weights are verified against the recorded size and digest before they are read: a truncated or
altered file is one line naming it (:class:`~warmstart.errors.CheckpointError`, exit 2).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from huggingface_hub import ModelHubMixin
from safetensors import SafetensorError
from safetensors.torch import load_model as _st_load_model
from safetensors.torch import save_model as _st_save_model
from torch import nn

from warmstart import integrity
from warmstart.errors import CheckpointError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
FORMAT_VERSION = 1
_RESERVED = {"warmstart_kind", "warmstart_version", "format_version", "config", "files"}


@dataclass
class ModelCard:
    """What the generated ``README.md`` says about a model."""

    title: str
    """One line: what the model is ("Inverse-dynamics model for ALE/Pong-v5")."""
    paper: str = ""
    """The seed paper: title and arXiv id."""
    description: str = ""
    data: str = ""
    """What it was trained on (dataset name / folder and size)."""
    command: str = ""
    """The command that made it."""
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    """The training configuration (engine settings, steps, lr)."""
    tags: list[str] = field(default_factory=list)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def render_card(card: ModelCard, kind: str, config: Mapping[str, Any]) -> str:
    """The model card's text: YAML front matter (library, tags) and the sections a reader looks for."""
    from warmstart import __version__

    tags = ["warmstart", kind.split(".")[0], *card.tags]
    lines = ["---", "library_name: warmstart", "tags:", *(f"- {t}" for t in dict.fromkeys(tags)), "---", ""]
    lines += [f"# {card.title}", ""]
    if card.description:
        lines += [card.description, ""]
    lines += [f"- kind: `{kind}` (warmstart {__version__})"]
    if card.paper:
        lines += [f"- seed paper: {card.paper}"]
    if card.data:
        lines += [f"- data: {card.data}"]
    if card.command:
        lines += ["", "## How it was made", "", "```bash", card.command, "```"]
    if card.metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in card.metrics.items()
        ]
    lines += [
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(_jsonable(config), indent=2, sort_keys=True),
        "```",
    ]
    if card.training:
        lines += [
            "",
            "## Training",
            "",
            "```json",
            json.dumps(_jsonable(card.training), indent=2, sort_keys=True),
        ]
        lines += ["```"]
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "from warmstart.hub import read_config",
        f'read_config("PATH", kind="{kind}")',
    ]
    lines += ["```", ""]
    return "\n".join(lines)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_model(
    model: nn.Module,
    directory: str | Path,
    *,
    kind: str,
    config: Mapping[str, Any] | Any,
    card: ModelCard | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``directory`` as config.json + model.safetensors + README.md; returns the folder.

    ``config`` (a mapping or a dataclass) is what the model's factory takes to rebuild it; ``extra`` adds
    top-level keys (an env spec, vocabularies, metrics). Tied/shared tensors are stored once
    (safetensors' ``save_model``). ``config.json`` is written last, so a folder without it is incomplete.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG).unlink(missing_ok=True)
    tmp = directory / f".{WEIGHTS}.tmp-{os.getpid()}"
    _st_save_model(model, str(tmp))
    os.replace(tmp, directory / WEIGHTS)
    cfg = _jsonable(config)
    from warmstart import __version__

    meta: dict[str, Any] = {
        "warmstart_kind": kind,
        "warmstart_version": __version__,
        "format_version": FORMAT_VERSION,
        "config": cfg,
        **{k: v for k, v in _jsonable(dict(extra or {})).items() if k not in _RESERVED},
        "files": integrity.manifest(directory, [WEIGHTS]),
    }
    card = card or ModelCard(title=f"warmstart {kind}")
    _write_text_atomic(directory / CARD, render_card(card, kind, cfg))
    _write_text_atomic(directory / CONFIG, json.dumps(meta, indent=2, sort_keys=True))
    return directory


def resolve(source: str | Path, **hub_kwargs: Any) -> Path:
    """A local folder as is; anything else is taken as a hub id and fetched with ``snapshot_download``."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; pass the model's folder (with {CONFIG} and {WEIGHTS})")
        return path
    text = str(source)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise CheckpointError(
            f"{source}: no such folder; pass a saved model's folder or a hub id (owner/name)"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=text, **hub_kwargs))
    except Exception as exc:  # network, auth, missing repo: all one line for the user
        raise CheckpointError(
            f"{source}: not a local folder and not reachable as a hub id ({type(exc).__name__}); "
            "pass a saved model's folder or check the id and your network"
        ) from None


def read_config(source: str | Path, kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """The whole ``config.json`` of a saved model, its kind checked against ``kind``."""
    directory = resolve(source)
    path = directory / CONFIG
    if not path.is_file():
        raise CheckpointError(
            f"{directory} has no {CONFIG}: not a saved warmstart model (or an unfinished save)"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); save the model again") from None
    if not isinstance(meta, dict) or "warmstart_kind" not in meta:
        raise CheckpointError(f"{path} has no warmstart_kind: not a model saved by warmstart.hub.save_model")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and meta["warmstart_kind"] not in kinds:
        raise CheckpointError(
            f"{directory} holds a {meta['warmstart_kind']} model where a {' or '.join(kinds)} is needed; "
            "pass the folder the matching command wrote"
        )
    return meta


def load_model[M](
    source: str | Path,
    build: Callable[[dict[str, Any]], M],
    *,
    kind: str | tuple[str, ...] | None = None,
    strict: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[M, dict[str, Any]]:
    """Rebuild a model with ``build(config)`` (a torch module) and load its verified weights; returns
    (model, config.json)."""
    directory = resolve(source)
    meta = read_config(directory, kind)
    problem = integrity.verify(directory, meta.get("files", {WEIGHTS: {}}))
    if problem:
        raise CheckpointError(f"{directory}: {problem}; save or download the model again")
    model = build(meta["config"])
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_model: build returned a {type(model).__name__}, not a torch.nn.Module")
    try:
        missing, unexpected = _st_load_model(
            model, str(directory / WEIGHTS), strict=strict, device=str(device)
        )
    except SafetensorError as exc:
        raise CheckpointError(f"{directory / WEIGHTS} cannot be read ({exc}); save the model again") from None
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{directory / WEIGHTS} does not fit the model its {CONFIG} describes ({first}); "
            "was the folder written by another version?"
        ) from None
    return model, meta


class HubMixin(ModelHubMixin):
    """``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` for a model class, in the one format.

    A class sets ``warmstart_kind``, returns its rebuild arguments from ``hub_config()`` and rebuilds
    itself in ``from_hub_config(config)``::

        class IDM(nn.Module, HubMixin):
            warmstart_kind = "rl.idm"
            def hub_config(self) -> dict: return dataclasses.asdict(self.cfg)
            @classmethod
            def from_hub_config(cls, config): return cls(IDMConfig(**config))

    ``model_card`` (a :class:`ModelCard`) may be set on an instance before saving.
    """

    warmstart_kind: ClassVar[str] = ""
    model_card: ModelCard | None = None
    hub_extra: Mapping[str, Any] | None = None

    def hub_config(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define hub_config()")

    @classmethod
    def from_hub_config(cls, config: dict[str, Any]) -> Self:
        raise NotImplementedError(f"{cls.__name__} must define from_hub_config()")

    def _save_pretrained(self, save_directory: Path) -> None:
        assert isinstance(self, nn.Module)
        save_model(
            self,
            save_directory,
            kind=self.warmstart_kind,
            config=self.hub_config(),
            card=self.model_card,
            extra=self.hub_extra,
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        device: str | torch.device = "cpu",
        strict: bool = True,
        **hub_kwargs: Any,
    ) -> Self:
        """Load from a saved folder or a hub id (``revision``, ``token``, … pass to ``snapshot_download``)."""
        directory = resolve(pretrained_model_name_or_path, **hub_kwargs)
        model, meta = load_model(
            directory, cls.from_hub_config, kind=cls.warmstart_kind, strict=strict, device=device
        )
        model.hub_extra = {k: v for k, v in meta.items() if k not in {"config", "files"}}
        return model
