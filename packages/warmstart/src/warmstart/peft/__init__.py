"""Adapters: LoRA / PiSSA / QLoRA through peft (with trainable new-token rows), SVFit and SLTrain."""

from warmstart.peft.apply import apply_sltrain, apply_svfit, matching_linears, merge_adapters
from warmstart.peft.lora import (
    QLoRAUnavailableError,
    apply_lora,
    load_qlora,
    lora_config,
    merge_lora,
    qlora_available,
)
from warmstart.peft.sltrain import SLTrainLinear
from warmstart.peft.svfit import SVFitLinear

__all__ = [
    "QLoRAUnavailableError",
    "SLTrainLinear",
    "SVFitLinear",
    "apply_lora",
    "apply_sltrain",
    "apply_svfit",
    "load_qlora",
    "lora_config",
    "matching_linears",
    "merge_adapters",
    "merge_lora",
    "qlora_available",
]
