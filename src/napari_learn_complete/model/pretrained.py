"""torchvision's pretrained weights: which file a model starts from, and getting it into the cache.

The files are torchvision's own (``Weights.url``), kept where torchvision keeps them
(``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``), under the name
torchvision looks for, so a file downloaded once serves torchvision, this plugin and any other tool.
The download is ours only to report progress and honour cancel (torch.hub's prints a bar on
stderr); it checks the SHA-256 prefix in the file name the way torch.hub does, writes to a
temporary file and renames it, so an interrupted or wrong download never leaves a file behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

import torch
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights
from torchvision.models.detection import (
    FasterRCNN_MobileNet_V3_Large_320_FPN_Weights,
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    FasterRCNN_ResNet50_FPN_V2_Weights,
    FasterRCNN_ResNet50_FPN_Weights,
    KeypointRCNN_ResNet50_FPN_Weights,
)

from ..errors import BadInputError
from .config import ModelConfig

# (done bytes, total bytes or 0 when unknown, what) after each chunk; it may raise Cancelled.
DownloadFn = Callable[[int, int, str], None]
CHUNK = 1 << 20

_COCO = {
    "mobilenet_v3_large_320_fpn": FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
    "mobilenet_v3_large_fpn": FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
    "resnet50_fpn_v2": FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
    "resnet50_fpn": FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
}
_IMAGENET = {
    "mobilenet_v3_large_320_fpn": MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    "mobilenet_v3_large_fpn": MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    "resnet50_fpn_v2": ResNet50_Weights.IMAGENET1K_V1,
    "resnet50_fpn": ResNet50_Weights.IMAGENET1K_V1,
}


def pretrained_weights(config: ModelConfig, start: str) -> Any:
    """torchvision's weights a model of ``config`` starts from: ``"coco"`` the detector trained on
    COCO (Keypoint R-CNN's for a keypoint model on ResNet-50 FPN, the only backbone torchvision
    has COCO keypoint weights for; the box detector's otherwise), ``"imagenet"`` the backbone's
    ImageNet classifier."""
    if start == "imagenet":
        return _IMAGENET[config.backbone]
    if config.architecture == "keypointrcnn" and config.backbone == "resnet50_fpn":
        return KeypointRCNN_ResNet50_FPN_Weights.COCO_V1
    return _COCO[config.backbone]


def cache_file(weights: Any) -> Path:
    """Where torchvision looks for ``weights`` (and where a user may put the file by hand)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def load_state_dict(weights: Any, download: DownloadFn | None = None) -> dict[str, torch.Tensor]:
    """The state dict of ``weights``, downloaded into the cache first if missing. Offline the
    message names the file, where to put it, and how to start from random weights instead."""
    path = cache_file(weights)
    if not path.is_file():
        _download(weights.url, path, download)
    try:  # torchvision's own loader, which finds the file in its cache; plain tensors only
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as exc:  # torch.load raises many types for a bad file
        raise BadInputError(
            f"the cached weight file {path} cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it to download it again"
        ) from exc


def _download(url: str, path: Path, download: DownloadFn | None) -> None:
    """``url`` to ``path`` through a temporary file in the same folder, hash-checked."""
    name = path.name
    stem = name.rsplit(".", 1)[0]
    prefix = stem.rsplit("-", 1)[1] if "-" in stem else ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".partial")
    except OSError as exc:
        raise BadInputError(f"cannot write to torch's weight cache {path.parent}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out, urlopen(
            Request(url, headers={"User-Agent": "napari-learn-complete"}), timeout=30
        ) as response:
            total = int(response.headers.get("Content-Length") or 0)
            digest, done = hashlib.sha256(), 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if download is not None:
                    download(done, total, name)
        if prefix and not digest.hexdigest().startswith(prefix):
            raise BadInputError(
                f"the download of {name} from {url} is damaged (its SHA-256 does not start with "
                f"{prefix}); nothing was kept, try again"
            )
        os.replace(tmp, path)
    except (URLError, OSError) as exc:  # no network, a proxy, a timeout, a full disk
        raise BadInputError(
            f"torchvision's pretrained weights are not on this machine and could not be "
            f"downloaded ({getattr(exc, 'reason', exc)}): the file {name} is missing. Download "
            f"{url} and put it in {path.parent}, or create the model from random weights "
            "(--weights none; 'Random' in the Model panel)"
        ) from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
