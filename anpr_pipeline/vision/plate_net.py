"""A tiny fully-convolutional plate segmenter ("PlateNet") and its pre/post-processing.

The net predicts, at 1/4 of its input resolution, the probability that a pixel lies on a
plate (the target is the filled plate box). Boxes come from connected components of the
thresholded, upsampled map. Dense per-pixel supervision is what lets a ~0.2 M-parameter
net learn from a few hundred real frames on a CPU in half an hour.

Shape: a MobileNet-like encoder (strides 2..32, depthwise-separable blocks, one dilated
block for wide plates) and a small FPN-style decoder back to stride 4.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

STRIDE = 4  # output map stride
ALIGN = 32  # input sides are padded to a multiple of the encoder's total stride


def _conv_bn(
    cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SepBlock(nn.Module):
    """Depthwise 3x3 + pointwise 1x1; residual when the shape allows."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.dw = _conv_bn(cin, cin, 3, stride, groups=cin, dilation=dilation)
        self.pw = _conv_bn(cin, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return x + y if self.residual else y


class PlateNet(nn.Module):
    def __init__(self, width: int = 1) -> None:
        super().__init__()
        c = [16 * width, 32 * width, 64 * width, 96 * width, 128 * width]
        self.s2 = _conv_bn(3, c[0], 3, 2)
        self.s4 = nn.Sequential(SepBlock(c[0], c[1], 2), SepBlock(c[1], c[1]))
        self.s8 = nn.Sequential(SepBlock(c[1], c[2], 2), SepBlock(c[2], c[2]))
        self.s16 = nn.Sequential(
            SepBlock(c[2], c[3], 2), SepBlock(c[3], c[3]), SepBlock(c[3], c[3], dilation=2)
        )
        self.s32 = nn.Sequential(
            SepBlock(c[3], c[4], 2), SepBlock(c[4], c[4]), SepBlock(c[4], c[4], dilation=2)
        )
        f = 48 * width
        self.lat = nn.ModuleList([nn.Conv2d(ch, f, 1) for ch in (c[1], c[2], c[3], c[4])])
        self.smooth = nn.ModuleList([SepBlock(f, f) for _ in range(3)])
        self.head = nn.Sequential(_conv_bn(f, 32, 3), nn.Conv2d(32, 1, 1))
        nn.init.constant_(self.head[-1].bias, -4.0)  # start near "no plate" (rare positives)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-0.5, 0.5] -> (B, 1, H/4, W/4) plate logits."""
        f4 = self.s4(self.s2(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        y = self.lat[3](f32)
        for lat, smooth, feat in zip(self.lat[2::-1], self.smooth, (f16, f8, f4), strict=True):
            y = smooth(lat(feat) + F.interpolate(y, size=feat.shape[-2:], mode="nearest"))
        return self.head(y)


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """Same-sized RGB uint8 images -> normalised (B, 3, H, W) float tensor."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return x / 255.0 - 0.5


def letterbox(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Resize so the longer side is ``max_side`` (never upscale past 2x), pad to ALIGN.

    Returns the padded image and the scale (input pixels per original pixel).
    """
    h, w = image.shape[:2]
    scale = min(max_side / max(h, w), 2.0)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
    ph, pw = -nh % ALIGN, -nw % ALIGN
    if ph or pw:
        resized = cv2.copyMakeBorder(resized, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return resized, scale


def boxes_from_map(
    prob: np.ndarray,
    threshold: float = 0.5,
    min_peak: float = 0.6,
    min_area: int = 12,
    aspect: tuple[float, float] = (0.0, 1e9),
) -> list[tuple[float, float, float, float, float]]:
    """Stride-4 probability map -> [(x, y, w, h, score)] in input-pixel coordinates.

    The map is upsampled to input resolution first, so box edges are found at sub-cell
    precision (small plates are only 3-4 cells tall). Score = the component's peak.
    """
    up = cv2.resize(prob, (prob.shape[1] * STRIDE, prob.shape[0] * STRIDE), interpolation=cv2.INTER_LINEAR)
    mask = (up >= threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        if area < min_area or not aspect[0] <= w / max(h, 1) <= aspect[1]:
            continue
        peak = float(up[y : y + h, x : x + w][labels[y : y + h, x : x + w] == i].max())
        if peak >= min_peak:
            out.append((float(x), float(y), float(w), float(h), peak))
    return out
