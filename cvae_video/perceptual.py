"""LPIPS (Zhang et al. 2018), the perceptual distance video-prediction papers report beside PSNR and SSIM: AlexNet
features with the v0.1 linear heads, from the ``lpips`` package (``pip install -e ".[lpips]"``).

Nothing is downloaded. The linear heads ship inside the ``lpips`` package; the AlexNet backbone's ImageNet weights
are torchvision's ``alexnet-owt-7be5be79.pth``, read from torch's hub cache (``~/.cache/torch/hub/checkpoints/``, or
under ``$TORCH_HOME``) or from ``--lpips_weights PATH``. Frames in [0, 1] are scaled to [-1, 1], as LPIPS expects.
Lower is closer; 0 for identical frames.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .errors import CvaeError

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
# torchvision's alexnet.features indices -> the slices of lpips' AlexNet (relu1 .. relu5)
_SLICES = ((1, range(0, 2)), (2, range(2, 5)), (3, range(5, 8)), (4, range(8, 10)), (5, range(10, 12)))


def hub_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def _backbone_state(path: Path) -> dict[str, torch.Tensor]:
    """torchvision AlexNet weights -> the state dict of lpips' sliced AlexNet (``slice{k}.{index}.weight``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # torch raises several types for files that are not checkpoints
        raise CvaeError(f"--lpips_weights {path}: not readable as AlexNet weights ({e.__class__.__name__})") from None
    out = {}
    for k, indices in _SLICES:
        for i in indices:
            for name in ("weight", "bias"):
                key = f"features.{i}.{name}"
                if key in state:
                    out[f"slice{k}.{i}.{name}"] = state[key]
    if len(out) != 10:   # five convolutions, weight and bias each
        raise CvaeError(f"--lpips_weights {path}: not torchvision's AlexNet weights ({ALEXNET_FILE}): found "
                        f"{len(out)} of the 10 feature tensors")
    return out


class LPIPS:
    """Per-frame LPIPS of predicted against ground-truth frames; ``weights``: the AlexNet file (default: torch's
    hub cache). ``random_backbone=True`` keeps the backbone randomly initialised (tests only: no weights needed)."""

    def __init__(self, device: torch.device, weights: str | os.PathLike | None = None, random_backbone: bool = False,
                 chunk: int = 256):
        try:
            import lpips
        except ImportError:
            raise CvaeError("--lpips needs the lpips package: pip install -e \".[lpips]\" (or pip install lpips)") \
                from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # torchvision's note on its deprecated `pretrained` flag
            self.net = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        if not random_backbone:
            path = Path(weights) if weights else hub_weights_path()
            if not path.is_file():
                given = f" ({path} not found)" if weights else ""
                raise CvaeError(f"LPIPS needs torchvision's AlexNet weights, {ALEXNET_FILE}, and nothing is "
                                f"downloaded at run time{given}: put the file at {hub_weights_path()} or pass "
                                f"--lpips_weights PATH (it is at {ALEXNET_URL})")
            self.net.net.load_state_dict(_backbone_state(path))
        self.net = self.net.to(device).eval()
        self.device, self.chunk = device, chunk

    @torch.inference_mode()
    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """pred, gt (..., C, H, W) in [0, 1] -> LPIPS (...) per frame, float32 on the CPU."""
        lead = pred.shape[:-3]
        a, b = pred.reshape(-1, *pred.shape[-3:]).float(), gt.reshape(-1, *gt.shape[-3:]).float()
        out = [self.net(a[i:i + self.chunk].to(self.device) * 2 - 1, b[i:i + self.chunk].to(self.device) * 2 - 1)
               .flatten().cpu() for i in range(0, len(a), self.chunk)]
        return torch.cat(out).reshape(lead) if out else torch.zeros(lead)
