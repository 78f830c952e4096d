"""Fairy: anchor-based, instruction-guided video editing (arXiv 2312.13834).

Heavy modules (torch, diffusers, PyAV) load on first use, so ``import fairy``
is cheap for the CLI and the server's parent process.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import EditCancelled, FairyError, InvalidInputError, MediaError, ModelLoadError, OutputExistsError

__version__ = "0.1.0"
# The model used when none is named (fairy.loading); here so light importers
# (the server's parent process) need not import torch to know it.
DEFAULT_MODEL = "timbrooks/instruct-pix2pix"

_LAZY = {
    "FairyPipeline": "fairy.pipeline",
    "FairyPipelineOutput": "fairy.pipeline",
    "AnchorCache": "fairy.attention",
    "AnchorAttnProcessor": "fairy.attention",
    "load_pipeline": "fairy.loading",
    "edit_video": "fairy.editing",
    "EditSettings": "fairy.editing",
}

__all__ = [
    "__version__",
    "DEFAULT_MODEL",
    "EditCancelled",
    "FairyError",
    "InvalidInputError",
    "MediaError",
    "ModelLoadError",
    "OutputExistsError",
    *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover
    from .attention import AnchorAttnProcessor, AnchorCache
    from .editing import EditSettings, edit_video
    from .loading import load_pipeline
    from .pipeline import FairyPipeline, FairyPipelineOutput


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fairy' has no attribute {name!r}")
