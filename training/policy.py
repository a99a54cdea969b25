"""The policy ``stage=train`` trains, and the ``final/`` folder ``stage=eval`` loads.

Qwen3.5, the paper's policy, is released as a vision-language checkpoint: config.json names
``Qwen3_5ForConditionalGeneration`` (model_type ``qwen3_5``, a text_config and a vision_config), the
weights are ``model.language_model.*`` (the language model), ``model.visual.*`` (the vision tower) and
``lm_head``, and the folder carries image and video processor files. GRPO here is text only.

The decision: train the class the checkpoint names, with every parameter outside the language model
(the vision tower) frozen, and save ``final/`` in the checkpoint's own layout with its processor files.

- Only the text part trains: the frozen tower gets no gradients and no optimizer state, and DDP leaves
  parameters that need no gradient out of its reduction, so DDP needs no ``find_unused_parameters``
  (with gradient checkpointing, the GPU default, the unfrozen tower fails DDP's reduction at step 2).
  ZeRO-3 shards the frozen tower like any weight. LoRA adapters go on the language model only.
- TRL's vLLM rollouts (colocate and server) load the checkpoint folder and then receive the trained
  weights by name; the names of this class are the checkpoint's, which vLLM maps to its own.
  The text-only ``Qwen3_5ForCausalLM`` names them ``model.layers.*``, which vLLM's
  ``Qwen3_5ForConditionalGeneration`` does not know.
- ``final/`` has the layout of the released checkpoint, so whatever serves Qwen/Qwen3.5-4B serves it:
  vLLM as ``Qwen3_5ForConditionalGeneration`` (every vLLM with Qwen3.5; the text-only
  ``Qwen3_5ForCausalLM`` is registered only in recent releases), and transformers'
  ``AutoModelForCausalLM``, which maps model_type ``qwen3_5`` to ``Qwen3_5ForCausalLM`` and drops the
  ``language_model`` prefix on load (stage=eval's local backend). A text-only model saved by transformers
  5 would instead get config ``qwen3_5_text`` with the prefix put back on its weights, a layout of its
  own: vLLM's text-only class (0.21 source) expects ``model.layers.*`` and maps no prefix.
- The cost is the tower's memory in every training process, a small share of the model.

Not carried over: the released checkpoint's multi-token-prediction head (``mtp.*``), which transformers
does not load; vLLM serves without it (only MTP speculative decoding needs it).

A text-only checkpoint (SmolLM2, Llama, Qwen3) loads as the class its config names and trains whole.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

# What a vision-language checkpoint's processor reads besides the tokenizer files (which the tokenizer saves).
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json")


def is_vision_language(config: Any) -> bool:
    """A checkpoint with a vision tower: its config has a ``vision_config``."""
    return getattr(config, "vision_config", None) is not None


def load_policy(path: str, dtype: str) -> Any:
    """The model ``path`` names (its config's ``architectures[0]``, as TRL would load it) in ``dtype``
    ("bfloat16" or "float32"), with a vision-language model's non-text modules frozen."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    architecture = (getattr(config, "architectures", None) or [""])[0]
    model_class = getattr(transformers, architecture, None) or AutoModelForCausalLM
    model = model_class.from_pretrained(path, dtype=getattr(torch, dtype))
    frozen = non_text_modules(model)
    for name in frozen:
        model.get_submodule(name).requires_grad_(False)
    if frozen:
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        held = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        log.info("train: %s is a vision-language %s; training its language model and head (%.1fM parameters), "
                 "frozen: %s (%.1fM)", path, architecture, trained / 1e6, ", ".join(frozen), held / 1e6)
    return model


def non_text_modules(model: Any) -> list[str]:
    """The outermost modules of a vision-language model that hold none of the language model's or output
    head's parameters (Qwen3.5: ``["model.visual"]``); empty for a text-only model."""
    if not is_vision_language(model.config):
        return []
    head = model.get_output_embeddings()
    text = {id(p) for p in model.get_decoder().parameters()}
    text |= {id(p) for p in head.parameters()} if head is not None else set()

    def outside(name: str, module: Any) -> list[str]:
        params = list(module.parameters())
        if not params:
            return []
        if not any(id(p) in text for p in params):
            return [name]
        return [found for child, sub in module.named_children()
                for found in outside(f"{name}.{child}" if name else child, sub)]

    return outside("", model)


def lora_exclude(model: Any) -> Optional[str]:
    """peft's ``exclude_modules`` regex that keeps LoRA adapters off the frozen modules; None for text models
    (and for no model).

    >>> lora_exclude(None) is None
    True
    """
    frozen = non_text_modules(model) if model is not None else []
    return "|".join(rf"{re.escape(name)}(\..*)?" for name in frozen) or None


def save_final(trainer: Any, tokenizer: Any, source: str, final_dir: Path) -> None:
    """Write ``final/``: the trained model (or adapter) with its config and generation config, the tokenizer
    with its chat template, and the source checkpoint's processor files when it has them.

    Every process calls it (ZeRO-3 gathers the weights across them); only the main one writes files.
    """
    trainer.save_model(str(final_dir))
    if not trainer.is_world_process_zero():
        return
    tokenizer.save_pretrained(str(final_dir))
    copied = copy_processor_files(source, final_dir)
    if copied:
        log.info("train: copied %s from %s into %s", ", ".join(copied), source, final_dir)


def copy_processor_files(source: str, final_dir: Path) -> list[str]:
    """Copy the image/video processor files of ``source`` (a folder or a hub id) that ``final_dir`` lacks.

    vLLM builds a vision-language architecture's processor from them when it starts, text-only prompts or not,
    so a Qwen3.5 ``final/`` without them may not load there. A hub id is read through the Hugging Face cache
    (downloaded if missing); a file that cannot be had is reported, not fatal: the weights are saved.
    """
    copied: list[str] = []
    if not source:  # a model built in memory (tests) names no source
        return copied
    for name in PROCESSOR_FILES:
        if (final_dir / name).exists():
            continue
        found = _source_file(source, name)
        if found is not None:
            shutil.copyfile(found, final_dir / name)
            copied.append(name)
    return copied


def _source_file(source: str, name: str) -> Optional[Path]:
    folder = Path(source)
    if folder.is_dir():
        path = folder / name
        return path if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        return Path(hf_hub_download(source, name))
    except EntryNotFoundError:
        return None
    except Exception as err:  # offline node, gated repo: the model is saved, say what is missing and how to add it
        log.warning("train: could not fetch %s of %s (%s); final/ lacks it. vLLM needs it for a vision-language "
                    "model: copy it from the base checkpoint into final/", name, source, err)
        return None
