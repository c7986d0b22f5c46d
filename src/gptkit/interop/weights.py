"""Reading and writing weight files safely: safetensors always; legacy `.bin` only with weights_only.

Nothing here unpickles arbitrary objects: a `.bin` is read with `torch.load(weights_only=True)`, which
refuses any pickle that would construct something other than tensors and plain containers.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..atomic import atomic_path
from ..errors import GptkitError


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors.save_file to a temp name, fsync, rename: a reader never sees half a file."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a truncated or corrupt file is a GptkitError naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise GptkitError(f"{path}: not a valid safetensors file ({_one_line(e)}); it may be truncated or corrupt") from None


def _blocked_part(error: Exception) -> str:
    """What torch's weights-only unpickler refused (e.g. 'unsupported GLOBAL posix.system'), without
    its advice to retry with weights_only=False, which is the one thing a loader of untrusted files
    must not suggest."""
    found = re.search(r"(unsupported GLOBAL [\w.]+|Unsupported global: GLOBAL [\w.]+|Unsupported operand \S+)",
                      str(error))
    return found.group(1) if found else "torch's weights-only unpickler blocked it"


def load_torch_bin(path: Path) -> dict[str, torch.Tensor]:
    """A legacy PyTorch pickle of tensors, read with weights_only=True so no code can run."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise GptkitError(
            f"{path}: refused to load: the pickle holds more than tensors ({_blocked_part(e)}), and loading it "
            "could run code; gptkit reads only tensors from a pickle (convert the file to safetensors with a "
            "tool you trust, from a source you trust)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise GptkitError(f"{path}: not a readable PyTorch weight file ({_one_line(e)[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GptkitError(f"{path}: expected a flat dict of tensors")
    return state


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
