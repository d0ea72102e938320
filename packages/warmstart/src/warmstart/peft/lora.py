"""LoRA, PiSSA and QLoRA through the `peft` library, with trainable rows for new vocabulary.

Seed papers: *LoRA: Low-Rank Adaptation of Large Language Models* (Hu et al., arXiv 2106.09685),
*PiSSA: Principal Singular Values and Singular Vectors Adaptation* (Meng et al., arXiv 2404.02948) and
*QLoRA: Efficient Finetuning of Quantized LLMs* (Dettmers et al., arXiv 2305.14314).

Nothing here re-implements an adapter: :func:`apply_lora` builds a ``peft.LoraConfig`` and calls
``peft.get_peft_model``. What we add is the glue the apps need:

- ``trainable_token_indices``: after a vocabulary expansion, only the new embedding rows train (peft's
  ``TrainableTokensLayer``), next to LoRA; with an *untied* output head the same rows of the head train
  too (``output_rows=True``), since a new token needs both. Tied heads share the rows automatically.
- ``init="pissa"``: peft's ``init_lora_weights="pissa"`` (or the fast ``pissa_niter_K``): the adapter
  starts from the top-r singular triplets of W and the base weight becomes the residual, so at init the
  adapted model computes exactly what the base did (up to float rounding).
- QLoRA (:func:`load_qlora`): 4-bit NF4 base weights via bitsandbytes, which runs on CUDA only; on a
  machine without CUDA it raises :class:`QLoRAUnavailableError` naming the fix instead of failing deep
  inside bitsandbytes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from warmstart.errors import UserError

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

log = logging.getLogger(__name__)

LoraInit = Literal["lora", "gaussian", "pissa", "olora"]


class QLoRAUnavailableError(UserError, RuntimeError):
    """QLoRA was asked for where 4-bit bitsandbytes kernels cannot run (no CUDA, or no bitsandbytes)."""


def _module_name(model: nn.Module, module: nn.Module | None) -> str | None:
    """The last component of ``module``'s qualified name inside ``model`` (how peft matches targets)."""
    if module is None:
        return None
    name: str  # (torch leaves named_modules untyped)
    for name, candidate in model.named_modules():
        if candidate is module and name:
            return name.rsplit(".", 1)[-1]
    return None


def _token_targets(
    model: nn.Module, indices: Sequence[int] | dict[str, Sequence[int]], output_rows: bool
) -> list[int] | dict[str, list[int]]:
    """Expand a plain index list to the input embeddings and, if untied and asked, the output head."""
    if isinstance(indices, dict):
        return {name: [int(i) for i in ids] for name, ids in indices.items()}
    ids = [int(i) for i in indices]
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    inp = get_in() if callable(get_in) else None
    out = get_out() if callable(get_out) else None
    tied = inp is not None and out is not None and out.weight is inp.weight
    if not output_rows or out is None or tied:
        return ids  # peft targets the input embeddings (and a tied head follows them)
    in_name, out_name = _module_name(model, inp), _module_name(model, out)
    if in_name is None or out_name is None:
        return ids
    return {in_name: ids, out_name: ids}


def lora_config(
    *,
    r: int = 8,
    alpha: float = 16,
    target_modules: Sequence[str] | str | None = "all-linear",
    init: LoraInit = "lora",
    dropout: float = 0.0,
    pissa_niter: int | None = None,
    trainable_token_indices: list[int] | dict[str, list[int]] | None = None,
    modules_to_save: Sequence[str] | None = None,
    use_dora: bool = False,
    **extra: Any,
) -> LoraConfig:
    """A ``peft.LoraConfig`` from our argument names (``init`` -> ``init_lora_weights``)."""
    from peft import LoraConfig

    init_weights: bool | str
    if init == "lora":
        init_weights = True
    elif init == "pissa":
        init_weights = "pissa" if pissa_niter is None else f"pissa_niter_{int(pissa_niter)}"
    elif init in ("gaussian", "olora"):
        init_weights = init
    else:
        raise ValueError(f"init={init!r} is unknown: use lora, gaussian, pissa or olora")
    targets = (
        target_modules if isinstance(target_modules, str) or target_modules is None else list(target_modules)
    )
    # peft annotates narrower than it accepts: lora_alpha as int (it only divides by r, so a float scale
    # is fine) and init_lora_weights as literals naming "pissa_niter_[number of iters]" as a pattern
    fields: dict[str, Any] = dict(lora_alpha=alpha, init_lora_weights=init_weights)
    return LoraConfig(
        r=r,
        target_modules=targets,
        lora_dropout=dropout,
        trainable_token_indices=trainable_token_indices,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        use_dora=use_dora,
        **fields,
        **extra,
    )


def apply_lora(
    model: nn.Module,
    *,
    r: int = 8,
    alpha: float = 16,
    target_modules: Sequence[str] | str | None = "all-linear",
    init: LoraInit = "lora",
    dropout: float = 0.0,
    pissa_niter: int | None = None,
    trainable_token_indices: Sequence[int] | dict[str, Sequence[int]] | None = None,
    output_rows: bool = True,
    modules_to_save: Sequence[str] | None = None,
    use_dora: bool = False,
    **extra: Any,
) -> PeftModel:
    """Wrap ``model`` in a peft LoRA adapter; everything else is frozen. Returns the ``PeftModel``.

    Args:
        r, alpha, dropout: LoRA rank, scaling numerator (scale = alpha / r) and dropout.
        target_modules: module-name suffixes to adapt, or ``"all-linear"``.
        init: ``lora`` (B = 0), ``gaussian``, ``pissa`` (principal singular vectors; base becomes the
            residual) or ``olora``.
        pissa_niter: with ``init="pissa"``, use fast randomized SVD with this many subspace iterations.
        trainable_token_indices: rows of the embedding to train (e.g. the ids a vocabulary expansion
            added); a list targets the input embeddings, a dict maps module names to ids.
        output_rows: with a list of indices and an untied output head, train the same head rows too.
        modules_to_save: modules trained in full next to LoRA (e.g. a new classifier head).
        extra: any other ``peft.LoraConfig`` field.
    """
    from peft import get_peft_model

    tokens = (
        None
        if trainable_token_indices is None
        else _token_targets(model, trainable_token_indices, output_rows)
    )
    config = lora_config(
        r=r,
        alpha=alpha,
        target_modules=target_modules,
        init=init,
        dropout=dropout,
        pissa_niter=pissa_niter,
        trainable_token_indices=tokens,
        modules_to_save=modules_to_save,
        use_dora=use_dora,
        **extra,
    )
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info("LoRA (%s, r=%d): %d trainable of %d parameters", init, r, trainable, total)
    return peft_model


def merge_lora(model: PeftModel) -> nn.Module:
    """Fold the LoRA (and trainable-token) weights into the base model and drop the peft wrappers."""
    merged: nn.Module = model.merge_and_unload()
    return merged


def qlora_available() -> bool:
    """Whether 4-bit bitsandbytes kernels can run here (CUDA and bitsandbytes present)."""
    if not torch.cuda.is_available():
        return False
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def _require_qlora() -> None:
    if not torch.cuda.is_available():
        raise QLoRAUnavailableError(
            "QLoRA needs a CUDA GPU: bitsandbytes' 4-bit (NF4) kernels do not run on this machine's CPU. "
            "Run on a CUDA machine, or use plain LoRA (adapter method 'lora', or init 'pissa') here."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise QLoRAUnavailableError(
            "QLoRA needs the bitsandbytes package: `pip install bitsandbytes` (CUDA build), or use plain LoRA"
        ) from exc


def load_qlora(
    pretrained: str | Path,
    *,
    model_cls: Any = None,
    compute_dtype: torch.dtype = torch.bfloat16,
    double_quant: bool = True,
    gradient_checkpointing: bool = True,
    **lora_kwargs: Any,
) -> PeftModel:
    """Load a transformers model in 4-bit NF4 and attach LoRA to it (QLoRA). CUDA only.

    ``pretrained`` is a local directory or a hub id, ``model_cls`` a transformers auto class
    (``AutoModelForCausalLM`` by default); ``lora_kwargs`` go to :func:`apply_lora` (``init="pissa"`` is
    not supported on quantized weights by peft: use ``lora``).
    """
    _require_qlora()
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
    )
    cls = model_cls or AutoModelForCausalLM
    model = cls.from_pretrained(
        str(pretrained),
        quantization_config=quant,
        torch_dtype=compute_dtype,
        device_map={"": torch.cuda.current_device()},
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    return apply_lora(model, **lora_kwargs)
