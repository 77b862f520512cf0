"""Pick the compute device once, the same way for Learn and Complete, and the precision each
operation runs at on it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


# The numeric precision of each operation on CUDA, chosen by measurement (issue 14, demo Learn on
# an H100): fp16 autocast took 40 s, bf16 14-16 s, fp32 12 s and fp32 with TF32 11.6 s, so
# training runs in fp32 with TF32 matmuls and convolutions (fp32 storage and accumulation, a 10-bit
# mantissa for the products). Inference is not measured on a GPU yet and runs the same way, in
# full precision until a measurement says otherwise. One of "fp32", "tf32", "fp16", "bf16"; other
# devices always run in fp32.
PRECISION: dict[str, str] = {"train": "tf32", "infer": "tf32"}
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


@contextlib.contextmanager
def precision(device: torch.device, operation: str) -> Iterator[None]:
    """Run the block at :data:`PRECISION` ``[operation]`` ("train" or "infer") on ``device``:
    an autocast for fp16/bf16, TF32 allowed (or not) for fp32 on CUDA, restored afterwards."""
    name = PRECISION[operation]
    if device.type != "cuda":
        yield
        return
    if name in _AUTOCAST:
        with torch.autocast("cuda", dtype=_AUTOCAST[name]):
            yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = name == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
