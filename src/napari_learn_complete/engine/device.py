"""Pick the compute device once, the same way for Learn and Complete."""

from __future__ import annotations

import contextlib

import torch

from ..errors import BadInputError


def choose_device(requested: str | torch.device | None = None) -> torch.device:
    """CUDA when present, then Apple MPS, else CPU; an explicit request wins, refused as bad
    input when it names no device or one this machine does not have."""
    if requested is not None:
        return _requested(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _requested(requested: str | torch.device) -> torch.device:
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as exc:
        raise BadInputError(f"device: {str(requested)!r} is not a device (cpu, cuda, cuda:N, "
                            "mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device: {str(requested)!r} asked for, but this machine has no "
                            "CUDA GPU that torch can use (use cpu)")
    if device.type == "cuda" and device.index is not None and \
            device.index >= torch.cuda.device_count():
        raise BadInputError(f"device: {str(requested)!r} asked for, but this machine has "
                            f"{torch.cuda.device_count()} CUDA GPU(s)")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and (mps is None or not mps.is_available()):
        raise BadInputError(f"device: {str(requested)!r} asked for, but Apple MPS is not "
                            "available here (use cpu)")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (the detectors' heads are fp16-safe); a no-op elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
