"""`anpr train detector`: train the detector models on labelled frames and plate crops.

Two models (``--model``):

- ``verifier`` (default; shipped as ``weights/plate_verifier_v2.pt``): the cascade's
  plate/not-plate CNN (vision/verifier.py). Training patches are mined by running the
  classical proposal stage over the labelled frames (hits = positives, misses and badly
  fitted boxes = negatives) plus the plate crops; writes ``OUT/plate_verifier.pt``.
- ``platenet``: the tiny segmentation net (vision/plate_net.py), trained on windows of
  the frames with real and rendered plates pasted in; writes ``OUT/plate_net.pt``.

Data (all read from folders/CSVs, so a user can fine-tune on their own cameras):

- ``--data CSV`` (repeatable): ``file,x,y,w,h[,split]`` rows, one per plate box, files
  relative to the CSV. Every image's boxes are its positives; the rest of the image is
  background. Rows whose ``split`` is not ``train`` are held out and only measured at the
  end. Default: ``../shared/data/real_train/detection.csv`` (Romanian dashcam frames, MIT).
- ``--crops CSV`` (repeatable): whole-plate crops (``file,x,y,w,h`` with the box = the
  plate). Default: the real_train openalpr crops (AGPL-3.0: the weights inherit it;
  ``--no-crops`` avoids them).
- ``--synth-scenes N`` / ``--synth-plates N``: rendered scenes/plates from vision/synth.

``--minutes M`` bounds the training wall time (after mining); ``OUT/train_report.json``
holds the held-out recall/precision of the resulting detector.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from anpr_pipeline.vision.labels import read_label_rows

SHARED_TRAIN = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_train"
WINDOW = 384  # training window side (input pixels)
CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


# --------------------------------------------------------------------------- data sources


@dataclass
class Frame:
    path: Path
    boxes: list[tuple[int, int, int, int]]


def load_frames(csv_paths: list[Path], split: str | None) -> list[Frame]:
    """Images with their plate boxes; ``split`` filters on a ``split`` column if present."""
    frames: dict[Path, list[tuple[int, int, int, int]]] = defaultdict(list)
    for csv_path in csv_paths:
        for row in read_label_rows(csv_path):
            if split is not None and (row.split or "train") != split:
                continue
            frames[(csv_path.parent / row.file).resolve()].append(row.box)
    return [Frame(p, b) for p, b in sorted(frames.items())]


def load_crops(csv_paths: list[Path], max_per_csv: int = 2000) -> list[np.ndarray]:
    """Plate crops (RGB), cut to their CSV box."""
    crops: list[np.ndarray] = []
    for csv_path in csv_paths:
        for row in read_label_rows(csv_path)[:max_per_csv]:
            bgr = cv2.imread(str(csv_path.parent / row.file), cv2.IMREAD_COLOR)
            if bgr is None:
                continue
            x, y, w, h = row.box
            crop = bgr[y : y + h, x : x + w, ::-1]
            if crop.shape[0] >= 8 and crop.shape[1] >= 16:
                crops.append(np.ascontiguousarray(crop))
    return crops


def render_plate(rng: np.random.Generator) -> np.ndarray:
    """A rendered plate: light or dark background, 1-2 text rows, optional rim/band."""
    two_rows = rng.random() < 0.2
    aspect = rng.uniform(1.3, 2.2) if two_rows else rng.uniform(2.0, 5.0)
    h = int(rng.integers(40, 90))
    w = int(h * aspect)
    dark_plate = rng.random() < 0.2
    bg = rng.integers(0, 80, 3) if dark_plate else rng.integers(170, 256, 3)
    if rng.random() < 0.3:  # tinted plates (yellow, light blue, grey)
        bg = np.clip(bg + rng.integers(-60, 30, 3) * (0 if dark_plate else 1), 0, 255)
    ink = rng.integers(170, 256, 3) if dark_plate else rng.integers(0, 90, 3)
    plate = np.empty((h, w, 3), np.uint8)
    plate[:] = bg
    x0 = 4
    if rng.random() < 0.35:  # EU-style blue band on the left
        band = int(w * rng.uniform(0.07, 0.11))
        plate[:, :band] = (20, 50, 170)
        x0 = band + 3
    rows = [int(rng.integers(2, 4)), int(rng.integers(3, 5))] if two_rows else [int(rng.integers(5, 9))]
    font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX]))
    row_h = (h - 8) / len(rows)
    for i, n in enumerate(rows):
        text = "".join(rng.choice(list(CHARS), n))
        if n >= 6 and rng.random() < 0.5:
            cut = int(rng.integers(2, n - 2))
            text = text[:cut] + rng.choice([" ", "-", " "]) + text[cut:]
        thick = int(rng.integers(1, 4))
        (tw, th), _ = cv2.getTextSize(text, font, 1.0, thick)
        scale = min(0.8 * row_h / th, (w - x0 - 6) / tw)
        thick = max(1, round(thick * scale))
        (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
        org = (x0 + (w - x0 - tw) // 2, int(4 + row_h * i + (row_h + th) / 2))
        cv2.putText(plate, text, org, font, scale, tuple(int(c) for c in ink), thick, cv2.LINE_AA)
    if rng.random() < 0.6:
        cv2.rectangle(plate, (0, 0), (w - 1, h - 1), tuple(int(c) for c in ink), int(rng.integers(1, 3)))
    return plate


def render_synth_scenes(folder: Path, count: int, seed: int = 1000) -> Path:
    """Pre-render ``count`` synthetic scenes (vision/synth.render_scene) as a labelled folder.

    Rendering costs seconds per scene, so it happens once; an existing complete folder is
    reused. Returns the ``labels.csv`` (``file,x,y,w,h,split``) for ``--data``.
    """
    from anpr_pipeline.vision import synth

    csv_path = folder / "labels.csv"
    done = folder / f".complete-{count}-{seed}-v2"
    if done.exists():
        return csv_path
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    sizes = [(1280, 720), (960, 540), (800, 600), (1024, 768)]
    for i in range(count):
        rng = np.random.default_rng(seed + i)
        w, h = sizes[i % len(sizes)]
        img, plates_ = synth.render_scene(rng, w, h, n_plates=int(rng.integers(1, 4)), max_plate_width=0.3)
        name = f"scene_{i:04d}.jpg"
        cv2.imwrite(str(folder / name), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        split = "valid" if i >= count - count // 6 else "train"  # the last sixth is held out
        rows += [[name, b.x, b.y, b.w, b.h, split] for b, _, _ in plates_]
    with open(csv_path, "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "x", "y", "w", "h", "split"], *rows])
    done.touch()
    return csv_path


def synth_plates(count: int, seed: int = 2000) -> list[np.ndarray]:
    """Rendered plates in the demo's us/eu/br layouts (vision/synth), ~60 px tall, as paste sources."""
    from anpr_pipeline.vision import synth

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        region = synth.REGIONS[int(rng.integers(len(synth.REGIONS)))]
        backdrop = tuple(int(v) for v in rng.integers(0, 256, 3))
        plate = synth.render_plate(synth.random_plate_text(region, rng), region, rng, backdrop=backdrop)
        out.append(
            cv2.resize(plate, (round(plate.shape[1] * 60 / plate.shape[0]), 60), interpolation=cv2.INTER_AREA)
        )
    return out


# --------------------------------------------------------------------------- augmentation


def paste_plate(
    canvas: np.ndarray, plate: np.ndarray, boxes: list, rng: np.random.Generator, width: int
) -> np.ndarray:
    """Warp ``plate`` to about ``width`` px with a mild perspective and paste it on a free spot."""
    ph, pw = plate.shape[:2]
    scale = width / pw
    w, h = max(8, round(pw * scale)), max(4, round(ph * scale * rng.uniform(0.85, 1.15)))
    H, W = canvas.shape[:2]
    if w >= W - 4 or h >= H - 4:
        return canvas
    for _ in range(10):
        x, y = int(rng.integers(0, W - w)), int(rng.integers(0, H - h))
        if all(_overlap((x, y, w, h), b) == 0 for b in boxes):
            break
    else:
        return canvas
    j = 0.08  # perspective jitter, fraction of the size
    src = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
    dst = np.float32([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
    dst += rng.uniform(-j, j, (4, 2)).astype(np.float32) * np.float32([w, h])
    if rng.random() < 0.5:  # in-plane rotation
        angle = math.radians(rng.uniform(-8, 8))
        c = dst.mean(axis=0)
        rot = np.float32([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        dst = (dst - c) @ rot.T + c
    gain = rng.uniform(0.55, 1.2)
    plate = np.clip(plate.astype(np.float32) * gain + rng.uniform(-25, 25), 0, 255).astype(np.uint8)
    # Warp into the destination's bounding rectangle only (a full-frame warp is 20x slower).
    bx0, by0 = np.floor(dst.min(axis=0)).astype(int)
    bx1, by1 = np.ceil(dst.max(axis=0)).astype(int)
    bx0, by0, bx1, by1 = max(bx0, 0), max(by0, 0), min(bx1, W), min(by1, H)
    if bx1 - bx0 < 4 or by1 - by0 < 4:
        return canvas
    m = cv2.getPerspectiveTransform(src, dst - np.float32([bx0, by0]))
    size = (bx1 - bx0, by1 - by0)
    warped = cv2.warpPerspective(plate, m, size, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(np.full((ph, pw), 255, np.uint8), m, size, flags=cv2.INTER_LINEAR)
    a = (alpha.astype(np.float32) / 255.0)[..., None]
    roi = canvas[by0:by1, bx0:bx1].astype(np.float32)
    canvas[by0:by1, bx0:bx1] = (roi * (1 - a) + warped.astype(np.float32) * a).astype(np.uint8)
    boxes.append((int(bx0), int(by0), int(bx1 - bx0), int(by1 - by0)))
    return canvas


def _overlap(a: tuple, b: tuple) -> int:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour, contrast, blur, noise and JPEG artefacts."""
    out = img.astype(np.float32)
    if rng.random() < 0.8:
        out = out * rng.uniform(0.6, 1.4, 3).astype(np.float32) ** 0.3 * rng.uniform(0.7, 1.35)
        out = (out - out.mean()) * rng.uniform(0.6, 1.3) + out.mean() + rng.uniform(-30, 30)
    if rng.random() < 0.1:
        out[:] = out.mean(axis=2, keepdims=True)
    out = np.clip(out, 0, 255).astype(np.uint8)
    r = rng.random()
    if r < 0.25:
        k = int(rng.choice([3, 5]))
        out = cv2.GaussianBlur(out, (k, k), 0)
    elif r < 0.35:  # horizontal motion blur
        k = int(rng.integers(3, 9))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        out = cv2.filter2D(out, -1, kernel)
    if rng.random() < 0.4:
        noise = rng.standard_normal(out.shape, dtype=np.float32) * rng.uniform(2, 12)
        out = np.clip(out + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
        if ok:
            out = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)
    return out


def box_mask(shape: tuple[int, int], boxes: list) -> np.ndarray:
    """Stride-4 soft target: the share of each output cell covered by a plate box."""
    from anpr_pipeline.vision.plate_net import STRIDE

    h, w = shape
    full = np.zeros((h, w), np.float32)
    for x, y, bw, bh in boxes:
        full[max(0, y) : max(0, y + bh), max(0, x) : max(0, x + bw)] = 1.0
    return cv2.resize(full, (w // STRIDE, h // STRIDE), interpolation=cv2.INTER_AREA)


class SampleMaker:
    """Training windows (image, target map) from frames + pasted real/rendered plates."""

    def __init__(self, frames: list[Frame], crops: list[np.ndarray], seed: int) -> None:
        self.frames, self.crops = frames, crops
        self.rng = np.random.default_rng(seed)
        self._cache: dict[Path, np.ndarray] = {}

    def _image(self, frame: Frame) -> np.ndarray:
        img = self._cache.get(frame.path)
        if img is None:
            bgr = cv2.imread(str(frame.path), cv2.IMREAD_COLOR)
            img = np.ascontiguousarray(bgr[:, :, ::-1])
            # The frame set is small (~1.2 GB decoded): decode each once.
            if len(self._cache) < 1200:
                self._cache[frame.path] = img
        return img

    def make(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        frame = self.frames[int(rng.integers(len(self.frames)))]
        img = self._image(frame).copy()
        boxes = list(frame.boxes)
        # Paste 0-3 extra plates (real crops or rendered), sized like this frame's plates.
        ref_w = float(np.median([b[2] for b in boxes])) if boxes else 50.0
        for _ in range(int(rng.choice([0, 1, 1, 2, 3]))):
            plate = (
                self.crops[int(rng.integers(len(self.crops)))] if self.crops and rng.random() < 0.6 else None
            )
            if plate is None:
                plate = render_plate(rng)
            img = paste_plate(img, plate, boxes, rng, width=ref_w * rng.uniform(0.6, 1.8))
        # Scale so one plate spans a log-uniform 12..260 px, then cut a window around it.
        target_w = math.exp(rng.uniform(math.log(12), math.log(260)))
        anchor = boxes[int(rng.integers(len(boxes)))] if boxes else None
        scale = target_w / max(anchor[2], 4) if anchor else rng.uniform(0.5, 2.0)
        scale = float(np.clip(scale, 0.3, 6.0))  # below 0.3 a 1280 px frame no longer fills the window
        # Cut the window in source pixels first, then resize only the window.
        H, W = img.shape[:2]
        side = WINDOW / scale
        if anchor is not None and rng.random() < 0.85:
            ax, ay = anchor[0] + anchor[2] / 2, anchor[1] + anchor[3] / 2
            x0 = ax - rng.uniform(0.1, 0.9) * side
            y0 = ay - rng.uniform(0.1, 0.9) * side
        else:  # a random window: mostly background
            x0, y0 = (
                rng.uniform(-0.1 * side, max(W - 0.9 * side, 1)),
                rng.uniform(-0.1 * side, max(H - 0.9 * side, 1)),
            )
        m = np.float32([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        if scale < 0.5:  # warpAffine has no area filter: pre-shrink to avoid aliasing
            f = 0.5 / scale
            img = cv2.resize(img, (round(W / f), round(H / f)), interpolation=cv2.INTER_AREA)
            m = np.float32([[scale * f, 0, -x0 * scale], [0, scale * f, -y0 * scale]])
        # Constant border: a reflected border would mirror (unlabelled) plates into the window.
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        win = cv2.warpAffine(
            img, m, (WINDOW, WINDOW), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=fill
        )
        win_boxes = [
            (round((x - x0) * scale), round((y - y0) * scale), round(w * scale), round(h * scale))
            for x, y, w, h in boxes
        ]
        return photometric(win, rng), box_mask((WINDOW, WINDOW), win_boxes)


# --------------------------------------------------------------------------- training


def _loss(logits, target):
    from torch.nn import functional as F

    # No positive up-weighting: it bloats the predicted plate region, and boxes are read
    # off that region's outline (dice already balances the rare positives).
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = logits.sigmoid()
    inter = (prob * target).sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return bce + 0.5 * dice.mean()


def validate(model, frames: list[Frame], max_side: int, detector=None) -> dict:
    """Recall / precision at IoU >= 0.5 on held-out frames, via the shipped detector code."""
    from anpr_pipeline.vision.detector import NetDetector
    from anpr_pipeline.vision.types import Box

    det = detector or NetDetector(model=model, max_side=max_side)
    hits = n_boxes = n_dets = true_dets = 0
    for frame in frames:
        img = cv2.imread(str(frame.path), cv2.IMREAD_COLOR)[:, :, ::-1]
        dets = det.detect([np.ascontiguousarray(img)])[0]
        labels = [Box(*b) for b in frame.boxes]
        n_boxes += len(labels)
        n_dets += len(dets)
        hits += sum(any(d.box.iou(lab) >= 0.5 for d in dets) for lab in labels)
        true_dets += sum(any(d.box.iou(lab) >= 0.5 for lab in labels) for d in dets)
    return {
        "frames": len(frames),
        "boxes": n_boxes,
        "recall": round(hits / max(n_boxes, 1), 4),
        "precision": round(true_dets / max(n_dets, 1), 4),
    }


def fit_for(model, lr: float, minutes: float, batch_loss: Callable, log_every: int) -> int:
    """Train ``model`` with AdamW for ``minutes`` of wall time; returns the step count.

    ``batch_loss()`` draws a batch and returns its loss. The learning rate decays on a
    cosine over the wall-clock budget (to 2 % of ``lr``), since the step count is unknown
    up front. The model is left in eval mode.
    """
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    budget = minutes * 60
    start, step, running = time.monotonic(), 0, 0.0
    model.train()
    while (elapsed := time.monotonic() - start) < budget:
        for g in opt.param_groups:
            g["lr"] = lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * elapsed / budget)))
        loss = batch_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % log_every == 0:
            print(f"step {step}  loss {running:.4f}  {time.monotonic() - start:.0f}s", flush=True)
    model.eval()
    return step


def train(
    out: Path,
    data: list[Path],
    crops: list[Path],
    minutes: float,
    batch: int = 12,
    lr: float = 3e-3,
    seed: int = 0,
    threads: int = 1,
    init: Path | None = None,
    max_side: int = 640,
    n_synth_plates: int = 0,
) -> dict:
    import torch

    from anpr_pipeline.vision.plate_net import PlateNet, to_tensor

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    cv2.setNumThreads(1)
    train_frames = load_frames(data, "train")
    val_frames = load_frames(data, "valid")
    plate_crops = load_crops(crops) + synth_plates(n_synth_plates)
    print(f"train frames {len(train_frames)}  valid frames {len(val_frames)}  paste crops {len(plate_crops)}")
    maker = SampleMaker(train_frames, plate_crops, seed)
    model = PlateNet()
    if init:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True)["state_dict"])

    def batch_loss():
        samples = [maker.make() for _ in range(batch)]
        x = to_tensor([s[0] for s in samples])
        y = torch.from_numpy(np.stack([s[1] for s in samples]))[:, None]
        return _loss(model(x), y)

    step = fit_for(model, lr, minutes, batch_loss, log_every=50)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "steps": step,
        "batch": batch,
        "minutes": minutes,
        "window": WINDOW,
        "data": [str(p) for p in data],
        "crops": [str(p) for p in crops],
        "seed": seed,
        "synth_plates": n_synth_plates,
    }
    torch.save({"state_dict": model.state_dict(), "meta": meta}, out / "plate_net.pt")
    report = {**meta, "valid": validate(model, val_frames, max_side) if val_frames else None}
    (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["valid"]))
    return report


# --------------------------------------------------------------------------- verifier (cascade)


def _jitter_box(box, rng: np.random.Generator, amount: float):
    from anpr_pipeline.vision.types import Box

    x, y, w, h = box.x, box.y, box.w, box.h
    dx0, dx1 = rng.uniform(-amount, amount, 2) * w
    dy0, dy1 = rng.uniform(-amount, amount, 2) * h * 1.5
    return Box(round(x + dx0), round(y + dy0), max(4, round(w - dx0 + dx1)), max(3, round(h - dy0 + dy1)))


def _degrade(patch_src: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Resolution loss on a crop before it becomes a patch (far plates are a few px tall)."""
    if rng.random() < 0.3 and patch_src.shape[1] > 24:
        w = int(rng.integers(20, min(60, patch_src.shape[1]) + 1))
        h = max(4, round(patch_src.shape[0] * w / patch_src.shape[1]))
        small = cv2.resize(patch_src, (w, h), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (patch_src.shape[1], patch_src.shape[0]), interpolation=cv2.INTER_LINEAR)
    return patch_src


def mine_patches(
    frames: list[Frame], crops: list[np.ndarray], seed: int = 0, pos_iou: float = 0.6, neg_iou: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """Verifier training patches: (N, 32, 96, 3) uint8 and (N,) labels in {0, 1}.

    Positives: labelled boxes (jittered, IoU >= 0.6 kept), real plate crops, and proposals
    that hit a plate (IoU >= 0.6). Negatives: proposals that miss (IoU < 0.35, i.e. other
    text, lights, grilles, and badly fitted boxes on a plate), plate boxes jittered into poor
    fits, and random plate-shaped windows. Proposals between 0.35 and 0.6 are not used.
    """
    from anpr_pipeline.vision.detector import PROPOSAL_PARAMS, ClassicalDetector
    from anpr_pipeline.vision.types import Box
    from anpr_pipeline.vision.verifier import box_patch

    rng = np.random.default_rng(seed)
    proposer = ClassicalDetector(PROPOSAL_PARAMS)
    patches: list[np.ndarray] = []
    labels: list[int] = []

    def add(img: np.ndarray, box, label: int) -> None:
        src = box.clip(img.shape[1], img.shape[0]).crop(img)
        if src.shape[0] >= 3 and src.shape[1] >= 6:
            patches.append(box_patch(_degrade(src, rng), Box(0, 0, src.shape[1], src.shape[0])))
            labels.append(label)

    for n, frame in enumerate(frames):
        img = np.ascontiguousarray(cv2.imread(str(frame.path), cv2.IMREAD_COLOR)[:, :, ::-1])
        gts = [Box(*b) for b in frame.boxes]
        for det in proposer.detect_one(img):
            iou = max((det.box.iou(g) for g in gts), default=0.0)
            if iou >= pos_iou or iou < neg_iou:
                add(img, det.box, int(iou >= pos_iou))
        for g in gts:
            for _ in range(4):
                j = _jitter_box(g, rng, 0.08)
                if j.iou(g) >= pos_iou:
                    add(img, j, 1)
            for _ in range(2):
                j = _jitter_box(g, rng, 0.6)
                if j.iou(g) < neg_iou:
                    add(img, j, 0)
        H, W = img.shape[:2]
        for _ in range(4):
            w = int(rng.integers(30, max(31, W // 4)))
            h = max(8, int(w / rng.uniform(1.5, 5.0)))
            b = Box(int(rng.integers(0, max(1, W - w))), int(rng.integers(0, max(1, H - h))), w, h)
            if all(b.iou(g) < 0.1 for g in gts):
                add(img, b, 0)
        if n % 100 == 0:
            print(
                f"mined {n}/{len(frames)} frames: {len(labels)} patches, {sum(labels)} positive", flush=True
            )
    for crop in crops:  # whole real plates: exact fits plus small jitters inside the crop
        h, w = crop.shape[:2]
        add(crop, Box(0, 0, w, h), 1)
        j = _jitter_box(Box(0, 0, w, h), rng, 0.05)
        add(crop, j.clip(w, h), 1)
    return np.stack(patches), np.asarray(labels, np.float32)


def _augment_batch(x, rng: np.random.Generator):
    """Per-sample gain/bias/contrast, grey, noise on a (B, 3, H, W) [-0.5, 0.5] tensor."""
    import torch

    b = x.shape[0]
    gain = torch.from_numpy(rng.uniform(0.6, 1.4, (b, 1, 1, 1)).astype(np.float32))
    tint = torch.from_numpy(rng.uniform(0.85, 1.15, (b, 3, 1, 1)).astype(np.float32))
    bias = torch.from_numpy(rng.uniform(-0.15, 0.15, (b, 1, 1, 1)).astype(np.float32))
    x = x * gain * tint + bias
    grey = torch.from_numpy(rng.random(b) < 0.15)
    x[grey] = x[grey].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    x = x + torch.randn_like(x) * torch.from_numpy(rng.uniform(0, 0.05, (b, 1, 1, 1)).astype(np.float32))
    return x.clamp(-0.5, 0.5)


def train_verifier(
    out: Path,
    data: list[Path],
    crops: list[Path],
    minutes: float,
    seed: int = 0,
    threads: int = 1,
    n_synth_plates: int = 0,
    holdout: list[Path] | None = None,
    init: Path | None = None,
    pos_iou: float = 0.6,
    neg_iou: float = 0.35,
) -> dict:
    import torch
    from torch.nn import functional as F

    from anpr_pipeline.vision.detector import CascadeDetector
    from anpr_pipeline.vision.verifier import PlateVerifier, patches_to_tensor

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(seed)
    frames = load_frames(data, "train")
    plate_crops = load_crops(crops) + synth_plates(n_synth_plates)
    print(f"frames {len(frames)}  crops {len(plate_crops)}", flush=True)
    x_all, y_all = mine_patches(frames, plate_crops, seed, pos_iou, neg_iou)
    print(f"patches {len(y_all)}  positive {int(y_all.sum())}", flush=True)
    model = PlateVerifier()
    if init:  # fine-tuning, e.g. the shipped weights on a user's own labelled frames
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True)["state_dict"])
    pos = np.flatnonzero(y_all == 1)
    neg = np.flatnonzero(y_all == 0)

    def batch_loss():
        # Balanced batches: negatives outnumber positives several times over.
        idx = np.concatenate([rng.choice(pos, 48), rng.choice(neg, 80)])
        x = _augment_batch(patches_to_tensor(list(x_all[idx])), rng)
        return F.binary_cross_entropy_with_logits(model(x), torch.from_numpy(y_all[idx]))

    step = fit_for(model, 2e-3, minutes, batch_loss, log_every=200)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "steps": step,
        "minutes": minutes,
        "patches": len(y_all),
        "positives": int(y_all.sum()),
        "data": [str(p) for p in data],
        "crops": [str(p) for p in crops],
        "synth_plates": n_synth_plates,
        "seed": seed,
    }
    torch.save({"state_dict": model.state_dict(), "meta": meta}, out / "plate_verifier.pt")
    report = {**meta, "valid": {}}
    for csv_path in [*data, *(holdout or [])]:
        val = load_frames([csv_path], "valid")
        if val:
            report["valid"][str(csv_path)] = validate(None, val, 0, detector=CascadeDetector(model=model))
    (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["valid"]))
    return report


def main(argv: list[str] | None = None) -> int:
    """`anpr train detector --out DIR [--data CSV ...] [--crops CSV ...] [--minutes M]`."""
    ap = argparse.ArgumentParser(prog="anpr train detector", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        choices=("verifier", "platenet"),
        default="verifier",
        help="verifier: the cascade's plate/not-plate CNN (the shipped default); platenet: the segmenter",
    )
    ap.add_argument(
        "--pos-iou", type=float, default=0.6, help="verifier: proposals at/above this IoU are plates"
    )
    ap.add_argument("--neg-iou", type=float, default=0.35, help="verifier: proposals below this IoU are not")
    ap.add_argument(
        "--holdout", action="append", type=Path, help="extra CSV whose 'valid' rows are only measured"
    )
    ap.add_argument("--out", required=True, type=Path, help="output folder (plate_net.pt, train_report.json)")
    ap.add_argument(
        "--data", action="append", type=Path, help="file,x,y,w,h[,split] CSV of frames (repeatable)"
    )
    ap.add_argument("--crops", action="append", type=Path, help="plate-crop CSV to paste (repeatable)")
    ap.add_argument("--no-crops", action="store_true", help="paste only rendered plates")
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (shared machines: 1)")
    ap.add_argument("--init", type=Path, help="start from these weights (fine-tuning)")
    ap.add_argument(
        "--synth-scenes", type=int, default=0, help="add N rendered synthetic scenes (cached in OUT/synth)"
    )
    ap.add_argument(
        "--synth-plates", type=int, default=0, help="add N rendered us/eu/br plates to the paste sources"
    )
    args = ap.parse_args(argv)
    data = list(args.data or [SHARED_TRAIN / "detection.csv"])
    if args.synth_scenes:
        data.append(render_synth_scenes(args.out / "synth", args.synth_scenes))
    if args.no_crops:
        crops = []
    else:
        crops = args.crops or [SHARED_TRAIN / "crops.csv", SHARED_TRAIN / "crops_eu_notext.csv"]
    if args.model == "verifier":
        train_verifier(
            args.out,
            data,
            crops,
            args.minutes,
            args.seed,
            args.threads,
            args.synth_plates,
            args.holdout,
            args.init,
            args.pos_iou,
            args.neg_iou,
        )
        return 0
    train(
        args.out,
        data,
        crops,
        args.minutes,
        args.batch,
        args.lr,
        args.seed,
        args.threads,
        args.init,
        n_synth_plates=args.synth_plates,
    )
    return 0
