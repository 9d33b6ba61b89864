"""The project's plate recogniser: a small CRNN (conv + BiLSTM + CTC) and its preprocessing.

The preprocessing here is the single definition used by training (train_reader.py) and
inference (reader.py), so the two can never drift apart.

Input: one grey image of ``height x width`` (default 32 x 128). Plate crops are stretched
to that size regardless of aspect ratio (plate characters have a narrow range of shapes;
stretching keeps every character at a usable resolution). Two-row plates (square EU /
motorcycle plates, recognised by their aspect ratio) are cut into a top and a bottom band
that are laid side by side, so one left-to-right CTC sequence reads both rows in order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from anpr_pipeline.vision.types import WeightsError

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  # == plates.ALPHABET; class 0 is the CTC blank


@dataclass(frozen=True)
class CRNNConfig:
    height: int = 32
    width: int = 128
    # Crops narrower than this (w/h) are two-row plates. Single-row plates measured on real
    # crops: US >= 1.64, BR >= 1.76, EU single-row ~4.4; EU two-row squares 1.38-1.45.
    two_row_aspect: float = 1.58
    # Bands for two-row plates, as fractions of the crop height (they overlap a little so a
    # row sitting off-centre is not cut).
    top_band: tuple[float, float] = (0.0, 0.56)
    bottom_band: tuple[float, float] = (0.40, 1.0)
    channels: tuple[int, ...] = (32, 64, 128, 192, 256)
    hidden: int = 128
    sequence: str = "lstm"  # "lstm" (BiLSTM) or "conv" (two 1-D convolutions over columns)
    alphabet: str = ALPHABET
    # "crnn": the conv stack above. "easyocr-g2": EasyOCR english_g2's recogniser (VGG +
    # 2 BiLSTM, 3.8 M parameters) with a plate head; channels/hidden/sequence are unused.
    backbone: str = "crnn"


def is_two_row(crop_hw: tuple[int, int], cfg: CRNNConfig) -> bool:
    h, w = crop_hw
    return h > 0 and w / h < cfg.two_row_aspect


def normalize_contrast(grey: np.ndarray) -> np.ndarray:
    """Stretch the 2nd..98th percentile to 0..255: dark, hazy or washed-out crops look alike."""
    lo, hi = np.percentile(grey, (2, 98))
    if hi - lo < 8:  # flat image: stretching would only amplify noise
        return grey
    out = (grey.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(out, 0, 255).astype(np.uint8)


def to_grey(crop: np.ndarray) -> np.ndarray:
    if crop.ndim == 3:
        return cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return crop


def layout(grey: np.ndarray, cfg: CRNNConfig) -> np.ndarray:
    """Grey crop -> (height, width) uint8 model input (two-row plates side by side)."""
    h, w = grey.shape[:2]
    if is_two_row((h, w), cfg):
        half = cfg.width // 2
        bands = []
        for top, bottom in (cfg.top_band, cfg.bottom_band):
            y0, y1 = int(round(top * h)), max(int(round(bottom * h)), int(round(top * h)) + 1)
            bands.append(cv2.resize(grey[y0:y1], (half, cfg.height), interpolation=cv2.INTER_AREA))
        return np.concatenate(bands, axis=1)
    interp = cv2.INTER_AREA if h > cfg.height else cv2.INTER_LINEAR
    return cv2.resize(grey, (cfg.width, cfg.height), interpolation=interp)


def preprocess(crop: np.ndarray, cfg: CRNNConfig) -> np.ndarray:
    """RGB/grey uint8 crop of any size -> (height, width) float32 in [-1, 1]."""
    if crop.size == 0:
        return np.zeros((cfg.height, cfg.width), dtype=np.float32)
    img = normalize_contrast(layout(to_grey(crop), cfg))
    return (img.astype(np.float32) / 127.5) - 1.0


def build_model(cfg: CRNNConfig):
    """The CRNN as a torch module: (B, 1, H, W) -> (B, T=W/4, 1 + len(alphabet)) logits."""
    import torch
    from torch import nn

    if cfg.backbone == "easyocr-g2":
        return _easyocr_g2_model(cfg)
    if cfg.backbone != "crnn":
        raise ValueError(f"unknown reader backbone {cfg.backbone!r}: crnn | easyocr-g2")

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    c1, c2, c3, c4, c5 = cfg.channels

    class CRNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                *block(1, c1),
                nn.MaxPool2d(2),  # H/2, W/2
                *block(c1, c2),
                nn.MaxPool2d(2),  # H/4, W/4
                *block(c2, c3),
                *block(c3, c3),
                nn.MaxPool2d((2, 1)),  # H/8
                *block(c3, c4),
                nn.MaxPool2d((2, 1)),  # H/16
                nn.Dropout2d(0.1),
            )
            rows = cfg.height // 16
            # Collapse the remaining rows into one feature vector per column.
            self.collapse = nn.Sequential(
                nn.Conv2d(c4, c5, (rows, 1), bias=False), nn.BatchNorm2d(c5), nn.ReLU(inplace=True)
            )
            if cfg.sequence == "lstm":
                self.rnn = nn.LSTM(c5, cfg.hidden, bidirectional=True, batch_first=True)
            else:
                self.rnn = nn.Sequential(
                    nn.Conv1d(c5, 2 * cfg.hidden, 5, padding=2),
                    nn.ReLU(inplace=True),
                    nn.Conv1d(2 * cfg.hidden, 2 * cfg.hidden, 5, padding=2),
                    nn.ReLU(inplace=True),
                )
            self.head = nn.Linear(2 * cfg.hidden, 1 + len(cfg.alphabet))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.collapse(self.features(x)).squeeze(2)  # (B, C, T)
            if cfg.sequence == "lstm":
                f, _ = self.rnn(f.permute(0, 2, 1))
            else:
                f = self.rnn(f).permute(0, 2, 1)
            return self.head(f)  # (B, T, classes)

    return CRNN()


def easyocr_g2_characters() -> str:
    """english_g2's output classes after its CTC blank, as EasyOCR itself defines them."""
    from easyocr.config import recognition_models

    return recognition_models["gen2"]["english_g2"]["characters"]


def _easyocr_g2_model(cfg: CRNNConfig):
    """english_g2's architecture, (B, 1, H, W) in [-1, 1] -> (B, W/4 - 1, 1 + len(alphabet))."""
    from easyocr.model.vgg_model import Model
    from torch import nn

    class EasyOCRPlateReader(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = Model(1, 256, 256, 1 + len(cfg.alphabet))

        def forward(self, x):
            return self.net(x, None)

    return EasyOCRPlateReader()


def init_from_easyocr_g2(model, cfg: CRNNConfig, weights: str | Path) -> None:
    """Load english_g2's pretrained weights into an "easyocr-g2" model.

    Every layer is copied; the output layer keeps only the rows of the blank and of the
    plate alphabet (upper case and digits), so the model reads plates before any training
    and fine-tuning starts from EasyOCR's general text features instead of from scratch.
    """
    import torch

    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    characters = easyocr_g2_characters()
    rows = [0] + [1 + characters.index(c) for c in cfg.alphabet]
    state["Prediction.weight"] = state["Prediction.weight"][rows]
    state["Prediction.bias"] = state["Prediction.bias"][rows]
    model.net.load_state_dict(state)


def save_checkpoint(path: str | Path, model, cfg: CRNNConfig, meta: dict, half: bool = False) -> None:
    """``half``: store float weights as float16 (half the file; loaded back as float32)."""
    import torch

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(
        {"format": "anpr-plate-crnn/1", "config": asdict(cfg), "state_dict": state, "meta": meta}, str(path)
    )


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """-> (model in eval mode on device, config, meta)."""
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # not a torch file (a text file, a truncated download, ...)
        raise WeightsError(f"{path}: not a plate reader weights file ({type(exc).__name__})") from exc
    if not isinstance(ckpt, dict) or not {"config", "state_dict"} <= set(ckpt):
        raise WeightsError(f"{path}: a torch file, but not a plate reader checkpoint (no config/state_dict)")
    raw = dict(ckpt["config"])
    for key in ("top_band", "bottom_band", "channels"):
        raw[key] = tuple(raw[key])
    cfg = CRNNConfig(**raw)
    model = build_model(cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.eval().to(device)
    return model, cfg, dict(ckpt.get("meta", {}))
