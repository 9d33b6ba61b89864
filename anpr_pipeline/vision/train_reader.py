"""`anpr train reader`: train (or fine-tune) the plate CRNN on labelled crops.

Data: any number of CSVs / folders with ``file,x,y,w,h,plate`` rows (paths relative to the
CSV; a folder means the ``labels.csv`` / ``crops.csv`` / ``ocr_crops.csv`` inside it), plus
optional synthetic plates from ``vision/synth.py``. Real crops get strong augmentation
(crop jitter loose/tight, perspective, blur, low resolution, noise, contrast, JPEG) so a
thousand crops train a reader that generalises.

A held-out split of the real data (by plate text, ~10 %) picks the best checkpoint; the
run is bounded by wall time (``--minutes``), with the learning-rate schedule following
the elapsed fraction, so a run has a predictable length on any machine.

Example (the shipped weights; see weights/MODELS.md)::

    nice -n 10 anpr train reader --out runs/reader \\
        --data ../shared/data/real_train/crops.csv --synthetic 20000 --minutes 35
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from anpr_pipeline.cli_args import positive_float, positive_int
from anpr_pipeline.vision import crnn, plates
from anpr_pipeline.vision.labels import fit_to_image, read_label_rows

CSV_NAMES = ("labels.csv", "crops.csv", "ocr_crops.csv")
CONTEXT = 0.25  # keep this much of the box size around each box, for outward crop jitter


@dataclass
class Sample:
    image: np.ndarray  # RGB uint8: the box plus up to CONTEXT of surroundings
    box: tuple[int, int, int, int]  # x, y, w, h of the plate inside ``image``
    text: str  # normalised plate text
    group: str  # parent folder name (us/br/eu/...), for reporting


# --------------------------------------------------------------------------- data


def resolve_csv(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in CSV_NAMES:
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p}: no {' / '.join(CSV_NAMES)} in this folder")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    return p


def load_samples(path: str | Path) -> list[Sample]:
    """Read labelled plate boxes; rows with an empty plate or a missing image are skipped."""
    csv_path = resolve_csv(path)
    out: list[Sample] = []
    cache: dict[str, np.ndarray | None] = {}
    for row in read_label_rows(csv_path):
        text = plates.normalize(row.plate)
        if not text:
            continue
        f = row.file
        if f not in cache:
            bgr = cv2.imread(str(csv_path.parent / f), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            cache[f] = None if bgr is None else np.ascontiguousarray(bgr[:, :, ::-1])
        image = cache[f]
        if image is None:
            continue
        ih, iw = image.shape[:2]
        x, y, w, h = fit_to_image(row, iw, ih, csv_path).box  # a box off the image: LabelsError
        if w < 4 or h < 4:
            continue
        mx, my = int(w * CONTEXT), int(h * CONTEXT)
        x0, y0 = max(0, x - mx), max(0, y - my)
        x1, y1 = min(iw, x + w + mx), min(ih, y + h + my)
        sub = np.ascontiguousarray(image[y0:y1, x0:x1])
        group = Path(f).parent.name or csv_path.parent.name
        out.append(Sample(sub, (x - x0, y - y0, w, h), text, group))
    return out


def synthetic_samples(
    n: int, seed: int, regions: tuple[str, ...] = ("us", "eu", "br"), fonts: str = "dejavu"
) -> list[Sample]:
    """``n`` rendered plates (vision/synth.py) on a bit of random background.

    ``fonts`` names a typeface set of :data:`synth.FONT_SETS` ("dejavu", "extended").

    Only the clean plate comes from synth; geometry and degradation are done by
    :func:`augment`, exactly as for the real crops, so both sources share one crop-jitter
    rule (which the two-row layout depends on). Plates are stored small (28-72 px high):
    the model sees 32 px, and rendering is the slow part (~50-100 ms a plate).
    """
    from anpr_pipeline.vision import synth

    rng = np.random.default_rng(seed)
    typefaces = synth.FONT_SETS[fonts]
    out = []
    for _ in range(n):
        rgba, text, region = synth.random_plate(rng, regions, fonts=typefaces)
        ph = int(rng.uniform(28, 72))
        pw = max(8, int(round(rgba.shape[1] * ph / rgba.shape[0])))
        rgba = cv2.resize(rgba, (pw, ph), interpolation=cv2.INTER_AREA)
        mx, my = int(pw * CONTEXT) + 2, int(ph * CONTEXT) + 2
        canvas = _background(rng, ph + 2 * my, pw + 2 * mx)
        a = rgba[..., 3:4].astype(np.float32) / 255.0
        roi = canvas[my : my + ph, mx : mx + pw]
        roi[:] = (rgba[..., :3] * a + roi * (1 - a)).astype(np.uint8)
        out.append(Sample(canvas, (mx, my, pw, ph), plates.normalize(text), f"synth-{region}"))
    return out


def cached_synthetic_samples(
    n: int, seed: int, cache: str | Path | None, fonts: str = "dejavu"
) -> list[Sample]:
    """:func:`synthetic_samples`, saved to / loaded from ``cache`` (.npz) when given.

    Rendering thousands of plates takes minutes on a small CPU; a cache lets repeated
    training runs (and fine-tuning) reuse them. The cache is keyed by (n, seed, fonts);
    caches written before the font sets existed hold DejaVu plates.
    """
    if cache is None:
        return synthetic_samples(n, seed, fonts=fonts)
    path = Path(cache)
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        cached_fonts = str(z["fonts"]) if "fonts" in z.files else "dejavu"
        if int(z["n"]) == n and int(z["seed"]) == seed and cached_fonts == fonts:
            out, offset = [], 0
            pixels = z["pixels"]  # NpzFile re-reads an array on every key access: read once
            for shape, box, text, group in zip(z["shapes"], z["boxes"], z["texts"], z["groups"], strict=True):
                size = int(np.prod(shape))
                img = pixels[offset : offset + size].reshape(tuple(int(v) for v in shape))
                offset += size
                out.append(Sample(img, tuple(int(v) for v in box), str(text), str(group)))
            return out
    samples = synthetic_samples(n, seed, fonts=fonts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        n=n,
        seed=seed,
        fonts=fonts,
        pixels=np.concatenate([s.image.ravel() for s in samples]) if samples else np.zeros(0, np.uint8),
        shapes=np.array([s.image.shape for s in samples], dtype=np.int32).reshape(-1, 3),
        boxes=np.array([s.box for s in samples], dtype=np.int32).reshape(-1, 4),
        texts=np.array([s.text for s in samples]),
        groups=np.array([s.group for s in samples]),
    )
    return samples


# Scene seeds for --synthetic-framed start here, clear of `anpr eval-boxes`' 8000-8059.
FRAMED_SEED_BASE = 50_000


def synthetic_framed_samples(
    scenes: int, seed: int, framings: Sequence[str] = ("holder", "lights")
) -> list[Sample]:
    """Plates of ``scenes`` rendered street scenes, each cut as a loose detector box would
    cut it (``synth.BOX_FRAMINGS``: with its holder, or merged with the lights beside it).

    The box *is* the loose crop, so the model learns to read the plate inside holder and
    light clutter instead of reading the clutter. Scene seeds start at
    ``FRAMED_SEED_BASE + seed``, never the tuning set's.
    """
    from anpr_pipeline.vision import synth

    crops = synth.framed_plate_crops(scenes, FRAMED_SEED_BASE + seed)
    return [
        Sample(crop, (0, 0, crop.shape[1], crop.shape[0]), plates.normalize(text), f"framed-{name}")
        for name in framings
        for crop, text in crops[name]
        if min(crop.shape[:2]) >= 8
    ]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Car-body-ish surroundings: a flat tone with a smooth gradient and a little noise."""
    base = rng.uniform(10, 230, 3)
    ramp = np.linspace(rng.uniform(-40, 0), rng.uniform(0, 40), h)[:, None, None]
    img = base[None, None, :] + ramp + rng.normal(0, 6, (h, w, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def pseudo_label(
    csv_path: str | Path,
    weights: str | Path | Sequence[str | Path],
    min_confidence: float = 0.8,
    regions: tuple[str, ...] = ("eu",),
) -> list[Sample]:
    """Label plate boxes that have no text (``file,x,y,w,h[,split]``) with an existing reader.

    Self-training on real crops of a layout the labelled data lacks (e.g. single-row EU
    plates). Only confident reads are kept: all three TTA views agree, every character
    has probability >= ``min_confidence``, and the text fits a plate format of
    ``regions``. Wrong labels that pass these filters are rare but possible; they are
    training data only, never part of the held-out split.
    """
    from anpr_pipeline.vision.reader import CRNNReader, tta_views

    reader = CRNNReader(weights, tta=False)
    p = resolve_csv(csv_path)
    # A split column (a detection set's) keeps its held-out rows out of training, as in
    # `anpr train detector`.
    rows = [r for r in read_label_rows(p) if (r.split or "train") == "train"]
    out: list[Sample] = []
    for start in range(0, len(rows), 64):
        chunk, crops = [], []
        for row in rows[start : start + 64]:
            bgr = cv2.imread(str(p.parent / row.file), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            if bgr is None:
                continue
            x, y, w, h = box = fit_to_image(row, bgr.shape[1], bgr.shape[0], p).box
            image = np.ascontiguousarray(bgr[:, :, ::-1])
            chunk.append((row, image, box))
            crops.append(image[y : y + h, x : x + w])
        views = [v for c in crops for v in tta_views(c)]
        reads = reader.read(views)
        for i, (row, image, box) in enumerate(chunk):
            trio = reads[3 * i : 3 * i + 3]
            text = trio[0].normalized
            if len({r.normalized for r in trio}) != 1 or not text:
                continue
            if min(min(r.char_confidences) for r in trio) < min_confidence:
                continue
            if not plates.matching_formats(text, list(regions)):
                continue
            group = "pseudo-" + (Path(row.file).parent.name or p.parent.name)
            out.append(Sample(image, box, text, group))
    return out


def is_holdout(text: str, fraction: float) -> bool:
    """Deterministic split by plate text, so one plate's crops never sit on both sides."""
    return (zlib.crc32(text.encode()) % 1000) < fraction * 1000


def write_holdout_csv(data: Sequence[str], out: str | Path, fraction: float) -> int:
    """Write the rows of ``data`` that training holds out (:func:`is_holdout`) as one labels CSV.

    Paths become absolute, so ``anpr eval-crops OUT`` measures a model on exactly the crops
    its training never saw, from anywhere. Returns the number of rows written.
    """
    rows = []
    for path in data:
        csv_path = resolve_csv(path)
        for row in read_label_rows(csv_path):
            text = plates.normalize(row.plate)
            if text and is_holdout(text, fraction):
                rows.append([str((csv_path.parent / row.file).resolve()), *row.box, row.plate])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "x", "y", "w", "h", "plate"])
        writer.writerows(rows)
    return len(rows)


# --------------------------------------------------------------------------- augmentation


def _jitter_quad(sample: Sample, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Four source corners: the box with loose/tight margins, then perspective jitter."""
    x, y, w, h = sample.box
    # Per side: negative = looser (outward), positive = tighter (inward). Inward stays small:
    # a clipped first/last character is a label error, not augmentation.
    left, right = rng.uniform(-0.12, 0.04, 2) * strength * w
    top, bottom = rng.uniform(-0.15, 0.06, 2) * strength * h
    x0, x1 = x + left, x + w - right
    y0, y1 = y + top, y + h - bottom
    quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)
    quad += rng.normal(0, 0.035 * strength, (4, 2)).astype(np.float32) * [w, h]
    # Small in-plane rotation around the centre (camera roll).
    angle = math.radians(rng.normal(0, 3.0 * strength))
    c = quad.mean(axis=0)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], np.float32)
    return (quad - c) @ rot.T + c


def augment(
    sample: Sample, cfg: crnn.CRNNConfig, rng: np.random.Generator, strength: float = 1.0
) -> np.ndarray:
    """One randomly degraded view of ``sample`` as model input (H, W) float32."""
    x, y, w, h = sample.box
    quad = _jitter_quad(sample, rng, strength)
    # Warp to the box's aspect ratio (what the reader sees at run time, and what decides
    # one-row vs two-row layout), at most 2x the model height: degrading a 160-px-high
    # crop at full size costs time and changes nothing the model will see.
    scale = min(1.0, 2.0 * cfg.height / max(h, 1))
    out_w, out_h = max(4, int(round(w * scale))), max(4, int(round(h * scale)))
    dst = np.array([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(quad, dst)
    border = cv2.BORDER_REPLICATE if rng.random() < 0.7 else cv2.BORDER_REFLECT
    img = cv2.warpPerspective(sample.image, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=border)
    grey = _grey(img, rng)
    grey = _degrade(grey, rng, strength)
    lay = crnn.layout(grey, cfg)
    lay = crnn.normalize_contrast(lay)
    return lay.astype(np.float32) / 127.5 - 1.0


def _grey(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Random channel weights: cameras and plates differ in colour response.
    wts = rng.dirichlet([4.0, 4.0, 4.0]).astype(np.float32)
    return np.clip(img.astype(np.float32) @ wts, 0, 255).astype(np.uint8)


def _degrade(grey: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    h, w = grey.shape
    if rng.random() < 0.5 * strength:  # low resolution: far or small plates (e.g. 16 px high)
        th = int(rng.uniform(12, 30))
        if th < h:
            tw = max(4, int(round(w * th / h)))
            small = cv2.resize(grey, (tw, th), interpolation=cv2.INTER_AREA)
            grey = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    r = rng.random()
    if r < 0.25 * strength:
        k = int(rng.choice([3, 5]))
        grey = cv2.GaussianBlur(grey, (k, k), 0)
    elif r < 0.35 * strength:  # horizontal motion blur
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        grey = cv2.filter2D(grey, -1, kernel)
    g = grey.astype(np.float32)
    # Contrast / brightness / gamma.
    g = (g - 128.0) * rng.uniform(0.5, 1.3) + 128.0 + rng.uniform(-50, 50)
    g = np.clip(g, 0, 255)
    g = 255.0 * (g / 255.0) ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.3 * strength:  # uneven lighting: a horizontal/vertical gradient
        ramp = np.linspace(rng.uniform(-40, 0), rng.uniform(0, 40), w if rng.random() < 0.5 else h)
        g = g + (ramp[None, :] if ramp.size == w else ramp[:, None])
    if rng.random() < 0.6 * strength:
        g = g + rng.normal(0, rng.uniform(2, 14), g.shape)
    grey = np.clip(g, 0, 255).astype(np.uint8)
    if rng.random() < 0.05:  # light-on-dark plates exist
        grey = 255 - grey
    if rng.random() < 0.5 * strength:
        q = int(rng.uniform(15, 90))
        ok, buf = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            grey = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return grey


# --------------------------------------------------------------------------- training


def encode(texts: list[str], alphabet: str):
    import torch

    idx = {c: i + 1 for i, c in enumerate(alphabet)}
    targets = torch.tensor([idx[c] for t in texts for c in t if c in idx], dtype=torch.long)
    lengths = torch.tensor([sum(c in idx for c in t) for t in texts], dtype=torch.long)
    return targets, lengths


def greedy_texts(logits, alphabet: str) -> list[str]:
    best = logits.argmax(2).cpu().numpy()
    out = []
    for row in best:
        chars, prev = [], 0
        for c in row:
            if c != 0 and c != prev:
                chars.append(alphabet[c - 1])
            prev = c
        out.append("".join(chars))
    return out


def evaluate(model, samples: list[Sample], cfg: crnn.CRNNConfig, device: str = "cpu") -> dict:
    """Exact and char accuracy of greedy decoding on un-augmented samples."""
    import torch

    model.eval()
    exact, chars = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(samples), 128):
            batch = samples[i : i + 128]
            x = np.stack([crnn.preprocess(_box_crop(s), cfg) for s in batch])[:, None]
            texts = greedy_texts(model(torch.from_numpy(x).to(device)), cfg.alphabet)
            for s, t in zip(batch, texts, strict=True):
                exact += t == s.text
                chars += plates.similarity(t, s.text)
    n = max(len(samples), 1)
    return {"n": len(samples), "exact": exact / n, "char": chars / n}


def _box_crop(s: Sample) -> np.ndarray:
    x, y, w, h = s.box
    return s.image[y : y + h, x : x + w]


@dataclass
class TrainConfig:
    minutes: float = 35.0
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    holdout: float = 0.1
    synthetic: int = 0
    synthetic_weight: float = 0.3  # share of each batch drawn from synthetic plates
    seed: int = 0
    threads: int = 1
    eval_every_s: float = 60.0
    synthetic_cache: str | None = None
    synthetic_fonts: str = "dejavu"  # typeface set of the synthetic plates (synth.FONT_SETS)
    pseudo: tuple[str, ...] = ()  # CSVs of text-less plate boxes to pseudo-label with --init
    pseudo_min_confidence: float = 0.8
    pseudo_model: str | None = None  # the model(s) that pseudo-label, comma-separated (default: --init)
    aug_start: float = 0.3  # augmentation strength at the start (ramps to 1.0 by 40 % of the run)
    synthetic_framed: int = 0  # rendered scenes whose plates are cut as loose detector boxes
    framed_weight: float = 0.1  # share of each batch drawn from those loose crops


def train(
    data: list[str],
    out_dir: Path,
    tc: TrainConfig,
    cfg: crnn.CRNNConfig,
    init: str | None = None,
    device: str = "cpu",
) -> dict:
    import torch

    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    real: list[Sample] = [s for path in data for s in load_samples(path)]
    train_real = [s for s in real if not is_holdout(s.text, tc.holdout)]
    held = [s for s in real if is_holdout(s.text, tc.holdout)]
    if tc.pseudo:
        labeller = tc.pseudo_model or init
        if not labeller:
            raise SystemExit(
                "--pseudo needs --pseudo-model or --init: the model that labels the unlabelled crops"
            )
        models = labeller.split(",")  # "A.pt,B.pt": an ensemble labels, as the default reader reads
        pseudo = [s for path in tc.pseudo for s in pseudo_label(path, models, tc.pseudo_min_confidence)]
        print(f"pseudo-labelled: {len(pseudo)} crops from {', '.join(tc.pseudo)}", flush=True)
        train_real += pseudo
    synth = (
        cached_synthetic_samples(tc.synthetic, tc.seed, tc.synthetic_cache, tc.synthetic_fonts)
        if tc.synthetic
        else []
    )
    framed = synthetic_framed_samples(tc.synthetic_framed, tc.seed) if tc.synthetic_framed else []
    if not train_real and not synth:
        raise SystemExit("no training samples: give --data with labelled plates or --synthetic N")
    print(
        f"real: {len(train_real)} train / {len(held)} held-out; synthetic: {len(synth)}; "
        f"loose synthetic boxes: {len(framed)}",
        flush=True,
    )

    if init:
        model, cfg, _ = crnn.load_checkpoint(init)
        model.train()
    else:
        model = crnn.build_model(cfg)
        if cfg.backbone == "easyocr-g2":
            from anpr_pipeline.vision.reader import easyocr_models_dir

            g2 = Path(easyocr_models_dir(None)) / "english_g2.pth"
            crnn.init_from_easyocr_g2(model, cfg, g2)
            print(f"initialised from {g2}: held-out {evaluate(model, held, cfg, device)}", flush=True)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    budget = tc.minutes * 60.0
    start = last_eval = time.time()
    step, seen, best = 0, 0, (-1.0, -1.0)
    history = []
    best_path = out_dir / "best.pt"
    while True:
        frac = (time.time() - start) / budget
        if frac >= 1.0:
            break
        # Warm-up 3 %, then cosine decay to 2 % of the peak rate.
        lr = tc.lr * (
            frac / 0.03 if frac < 0.03 else 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (frac - 0.03) / 0.97))
        )
        for group in opt.param_groups:
            group["lr"] = lr
        batch = _draw(train_real, synth, tc, rng, framed)
        # Curriculum: light augmentation first (CTC finds its alignment sooner), full later.
        strength = tc.aug_start + (1.0 - tc.aug_start) * min(1.0, frac / 0.4)
        x = torch.from_numpy(np.stack([augment(s, cfg, rng, strength) for s in batch])[:, None]).to(device)
        targets, lengths = encode([s.text for s in batch], cfg.alphabet)
        model.train()
        logp = model(x).log_softmax(2).permute(1, 0, 2)  # (T, B, C)
        in_len = torch.full((len(batch),), logp.shape[0], dtype=torch.long)
        loss = ctc(logp.cpu(), targets, in_len, lengths)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        seen += len(batch)
        if time.time() - last_eval >= tc.eval_every_s or (time.time() - start) >= budget:
            last_eval = time.time()
            m = evaluate(model, held, cfg, device) if held else {"exact": 0.0, "char": 0.0, "n": 0}
            rec = {
                "step": step,
                "seen": seen,
                "min": round((time.time() - start) / 60, 2),
                "loss": round(float(loss.detach()), 4),
                "lr": lr,
                **m,
            }
            history.append(rec)
            print(json.dumps(rec), flush=True)
            if (m["exact"], m["char"]) >= best or not held:
                best = (m["exact"], m["char"])
                crnn.save_checkpoint(best_path, model, cfg, {"step": step, "heldout": m})
    final = evaluate(model, held, cfg, device) if held else {}
    crnn.save_checkpoint(out_dir / "last.pt", model, cfg, {"step": step, "heldout": final})
    if not best_path.exists():
        crnn.save_checkpoint(best_path, model, cfg, {"step": step, "heldout": final})
    summary = {
        "data": data,
        "synthetic": tc.synthetic,
        "train_config": asdict(tc),
        "model_config": asdict(cfg),
        "steps": step,
        "samples_seen": seen,
        "samples_per_s": seen / max(time.time() - start, 1e-9),
        "best_heldout": {"exact": best[0], "char": best[1]},
        "last_heldout": final,
        "history": history,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _draw(
    real: list[Sample],
    synth: list[Sample],
    tc: TrainConfig,
    rng: np.random.Generator,
    framed: Sequence[Sample] = (),
) -> list[Sample]:
    n_framed = int(round(tc.batch_size * tc.framed_weight)) if framed else 0
    size = tc.batch_size - n_framed
    n_syn = int(round(size * tc.synthetic_weight)) if synth and real else (size if synth else 0)
    picks = [real[i] for i in rng.integers(0, len(real), size - n_syn)] if real else []
    picks += [synth[i] for i in rng.integers(0, len(synth), n_syn)] if n_syn else []
    picks += [framed[i] for i in rng.integers(0, len(framed), n_framed)] if n_framed else []
    return picks


def _input_size(ap: argparse.ArgumentParser, text: str) -> tuple[int, int]:
    """Parse HEIGHTxWIDTH ("48x192" -> (48, 192)); the CRNN pools height by 16, width by 4."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        ap.error(f"--input-size {text!r}: expected HEIGHTxWIDTH, e.g. 32x128")
    if height < 16 or height % 16 or width < 16 or width % 4:
        ap.error(f"--input-size {text!r}: height must be a multiple of 16, width a multiple of 4")
    return height, width


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="anpr train reader", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="output folder (best.pt, last.pt, summary.json); required to train")
    ap.add_argument(
        "--write-holdout",
        metavar="CSV",
        help="write the --data rows held out for checkpoint choice to CSV (absolute paths) and stop",
    )
    ap.add_argument(
        "--data", action="append", default=[], help="CSV or folder with file,x,y,w,h,plate (repeatable)"
    )
    ap.add_argument("--synthetic", type=int, default=0, help="number of synthetic plates to render")
    ap.add_argument(
        "--pseudo",
        action="append",
        default=[],
        help="CSV/folder of plate boxes WITHOUT text (file,x,y,w,h): label them with --init, keep confident reads",
    )
    ap.add_argument("--pseudo-min-confidence", type=float, default=0.8)
    ap.add_argument(
        "--pseudo-model",
        help="weights that label the --pseudo crops (default: --init; A.pt,B.pt: an ensemble), "
        "so a model trained from scratch can use them",
    )
    ap.add_argument("--synthetic-cache", help="a .npz to save rendered synthetic plates to / reuse them from")
    ap.add_argument(
        "--synthetic-fonts",
        choices=("dejavu", "extended"),
        default="dejavu",
        help="typefaces of the synthetic plates: DejaVu only, or DejaVu + the OFL plate-like fonts",
    )
    ap.add_argument(
        "--synthetic-weight", type=float, default=0.3, help="share of each batch that is synthetic"
    )
    ap.add_argument(
        "--synthetic-framed",
        type=int,
        default=0,
        help="rendered scenes whose plates are cut as loose detector boxes (holder, lights) for training",
    )
    ap.add_argument(
        "--framed-weight", type=float, default=0.1, help="share of each batch drawn from those loose crops"
    )
    ap.add_argument("--minutes", type=positive_float, default=35.0, help="wall-time budget")
    ap.add_argument("--batch-size", type=positive_int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument(
        "--holdout", type=float, default=0.1, help="share of plate texts held out for checkpoint choice"
    )
    ap.add_argument(
        "--init", help="start from these weights (fine-tuning), e.g. the shipped plate_crnn_v1.pt"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--eval-every", type=float, default=60.0, help="seconds between held-out evaluations")
    ap.add_argument("--channels", default="16,32,64,96,128", help="CRNN conv widths (5 values)")
    ap.add_argument("--hidden", type=int, default=96, help="BiLSTM hidden size per direction")
    ap.add_argument(
        "--input-size",
        default="32x128",
        help="model input HEIGHTxWIDTH (crnn: height a multiple of 16, width of 4)",
    )
    ap.add_argument(
        "--aug-start", type=float, default=0.3, help="augmentation strength at the start (ramps to 1)"
    )
    ap.add_argument("--sequence", default="lstm", choices=["lstm", "conv"], help="sequence layer")
    ap.add_argument(
        "--backbone",
        default="crnn",
        choices=["crnn", "easyocr-g2"],
        help="crnn: the small CRNN from scratch; easyocr-g2: fine-tune EasyOCR's english_g2 recogniser",
    )
    args = ap.parse_args(argv)
    if not 0 <= args.holdout < 1:  # a share: 1 or more would hold out every plate
        ap.error(f"--holdout {args.holdout}: expected a share from 0 to below 1")
    if args.write_holdout:
        if not args.data:
            ap.error("--write-holdout needs --data: the labelled CSVs to split")
        n = write_holdout_csv(args.data, args.write_holdout, args.holdout)
        print(f"{n} held-out rows written to {args.write_holdout}")
        return 0
    if not args.out:
        ap.error("--out is required to train")

    from anpr_pipeline.vision.device import resolve_device

    height, width = _input_size(ap, args.input_size)
    cfg = replace(
        crnn.CRNNConfig(),
        height=height,
        width=width,
        channels=tuple(int(c) for c in args.channels.split(",")),
        hidden=args.hidden,
        sequence=args.sequence,
        backbone=args.backbone,
    )
    tc = TrainConfig(
        minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        holdout=args.holdout,
        synthetic=args.synthetic,
        synthetic_weight=args.synthetic_weight,
        synthetic_framed=args.synthetic_framed,
        framed_weight=args.framed_weight,
        seed=args.seed,
        threads=args.threads,
        eval_every_s=args.eval_every,
        aug_start=args.aug_start,
        synthetic_cache=args.synthetic_cache,
        synthetic_fonts=args.synthetic_fonts,
        pseudo=tuple(args.pseudo),
        pseudo_min_confidence=args.pseudo_min_confidence,
        pseudo_model=args.pseudo_model,
    )
    summary = train(args.data, Path(args.out), tc, cfg, init=args.init, device=resolve_device(args.device))
    print(json.dumps({k: summary[k] for k in ("steps", "samples_seen", "samples_per_s", "best_heldout")}))
    return 0
