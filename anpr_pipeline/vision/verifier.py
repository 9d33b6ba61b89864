"""Plate / not-plate verifier: a tiny CNN that scores candidate boxes (the cascade's 2nd stage).

The classical finder proposes many boxes per frame (several box fits per blob, low score
threshold): high recall, low precision. The verifier looks at each proposed box, resized to
``SIZE`` (h, w), and says how likely it is a whole, well-fitted plate. Trained on real
plate crops and real/synthetic frames (``anpr train detector --model verifier``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from anpr_pipeline.vision.types import Box

SIZE = (32, 96)  # (h, w): plates are ~2-5x wider than tall


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class PlateVerifier(nn.Module):
    """(B, 3, 32, 96) in [-0.5, 0.5] -> (B,) plate logits. ~0.1 M parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(3, 16), _block(16, 32), _block(32, 64), _block(64, 64))
        self.head = nn.Linear(64 * 2 * 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))[:, 0]


def box_patch(image: np.ndarray, box: Box) -> np.ndarray:
    """The box's pixels resized to SIZE (RGB uint8); what the verifier sees."""
    crop = box.clip(image.shape[1], image.shape[0]).crop(image)
    if crop.size == 0:
        return np.zeros((*SIZE, 3), np.uint8)
    interp = cv2.INTER_AREA if crop.shape[1] > SIZE[1] else cv2.INTER_LINEAR
    return cv2.resize(crop, (SIZE[1], SIZE[0]), interpolation=interp)


def patches_to_tensor(patches: Sequence[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).float()
    return x / 255.0 - 0.5


@torch.inference_mode()
def score_patches(
    model: PlateVerifier, patches: Sequence[np.ndarray], device: str = "cpu", batch: int = 256
) -> np.ndarray:
    """Plate probability for each patch (from :func:`box_patch`)."""
    out = [np.zeros(0, np.float32)]
    for i in range(0, len(patches), batch):
        x = patches_to_tensor(patches[i : i + batch]).to(device)
        out.append(torch.sigmoid(model(x)).float().cpu().numpy())
    return np.concatenate(out)
