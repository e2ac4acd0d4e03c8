#!/usr/bin/env python3
"""Reference values for `model/src/face/masks.rs` (Hallo2's mask preprocessing).

Reproduces, with the library versions hallo2 @ 58a9aa6 pins (opencv-python-headless 4.9.0.80,
pillow 10.3.0, numpy 1.26.4), what `hallo/utils/util.py::get_mask` and
`hallo/datasets/image_processor.py::ImageProcessor.preprocess` do after the landmarker: the
landmark boxes, `expand_region`, the binary masks, `cv2.resize` to 64x64, `cv2.GaussianBlur`,
`cv2.normalize`, the background / face / lip soft masks, the torchvision (= PIL bilinear) pyramid
and the face region; plus OpenCV and Pillow primitives on formula-generated images.

The mask logic is re-stated here (not imported) because hallo needs mediapipe, insightface and
torch; every step mirrors the upstream expression and its numpy dtypes (float64 landmarks,
np.round = round-half-even, Python floor division on floats, numpy slices with negative starts).

Usage:
    python3 -m venv /work/venv-masks
    /work/venv-masks/bin/pip install opencv-python-headless==4.9.0.80 pillow==10.3.0 \
        numpy==1.26.4 safetensors
    /work/venv-masks/bin/python model/tools/face_masks_reference.py

Writes `model/tests/fixtures/face_masks/*.safetensors` and `expand_region.json`.
"""
import json
import os

import cv2
import numpy as np
from PIL import Image
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "face_masks")

SILHOUETTE_IDS = [
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288,
    397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136,
    172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
]
LIP_IDS = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
           146, 91, 181, 84, 17, 314, 405, 321, 375]


# ---------------------------------------------------------------------------------------------
# Mask logic as in hallo/utils/util.py (re-stated)

def expand_region(region, image_w, image_h, expand_ratio):
    min_x, max_x, min_y, max_y = region
    mid_x = (max_x + min_x) // 2
    side_x = (max_x - min_x) * expand_ratio
    mid_y = (max_y + min_y) // 2
    side_y = (max_y - min_y) * expand_ratio
    min_x, max_x = mid_x - side_x // 2, mid_x + side_x // 2
    min_y, max_y = mid_y - side_y // 2, mid_y + side_y // 2
    if min_x < 0:
        max_x -= min_x
        min_x = 0
    if max_x > image_w:
        min_x -= max_x - image_w
        max_x = image_w
    if min_y < 0:
        max_y -= min_y
        min_y = 0
    if max_y > image_h:
        min_y -= max_y - image_h
        max_y = image_h
    return round(min_x), round(max_x), round(min_y), round(max_y)


def box_mask(landmarks, ids, height, width, ratio):
    """`get_lip_mask` / `get_face_mask`: returns (rounded landmark box, expanded box, mask)."""
    pts = np.take(landmarks, ids, 0)
    mn = np.round(np.min(pts, 0))
    mx = np.round(np.max(pts, 0))
    raw = [float(mn[0]), float(mx[0]), float(mn[1]), float(mx[1])]
    mn[0], mx[0], mn[1], mx[1] = expand_region([mn[0], mx[0], mn[1], mx[1]], width, height, ratio)
    mask = np.zeros((height, width), dtype=np.uint8)
    box = [round(mn[0]), round(mx[0]), round(mn[1]), round(mx[1])]
    mask[box[2]:box[3], box[0]:box[1]] = 255
    return raw, box, mask


def blur_mask(mask, ksize):
    resized = cv2.resize(mask, (64, 64))
    blurred = cv2.GaussianBlur(resized, (ksize, ksize), 0)
    return resized, blurred, cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)


def background(face_blur):
    return ((1.0 - (face_blur / 255.0)) * 255).astype(np.uint8)


def pil_resize(arr, w, h):
    """torchvision `Resize((h, w))` on a PIL image = `Image.resize((w, h), BILINEAR)`."""
    mode = "L" if arr.ndim == 2 else "RGB"
    return np.asarray(Image.fromarray(arr, mode).resize((w, h), Image.BILINEAR))


# ---------------------------------------------------------------------------------------------
# Deterministic inputs (the Rust tests regenerate the same formulas)

def pattern(w, h, c=1, seed=0):
    """u8 image: ((x*37 + y*91 + (x*y) % 17 + 53*ch + seed) * 5) % 256."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    chans = [((x * 37 + y * 91 + (x * y) % 17 + 53 * ch + seed) * 5) % 256 for ch in range(c)]
    out = np.stack(chans, -1).astype(np.uint8)
    return out[..., 0] if c == 1 else out


def synthetic_landmarks(seed, cx, cy, rx, ry, lip_w, lip_h):
    """468 float32 points: silhouette on an ellipse, lips on a small ellipse, the rest inside.

    A few extreme coordinates are put on .5 to exercise np.round's half-to-even rule.
    """
    rng = np.random.RandomState(seed)
    pts = np.zeros((468, 3), dtype=np.float64)
    ang = rng.uniform(0, 2 * np.pi, 468)
    rad = rng.uniform(0, 0.8, 468)
    pts[:, 0] = cx + rx * rad * np.cos(ang)
    pts[:, 1] = cy + ry * rad * np.sin(ang)
    pts[:, 2] = rng.uniform(-20, 20, 468)
    t = np.linspace(0, 2 * np.pi, len(SILHOUETTE_IDS), endpoint=False)
    pts[SILHOUETTE_IDS, 0] = cx + rx * np.sin(t) + rng.uniform(-2, 2, len(t))
    pts[SILHOUETTE_IDS, 1] = cy - ry * np.cos(t) + rng.uniform(-2, 2, len(t))
    t = np.linspace(0, 2 * np.pi, len(LIP_IDS), endpoint=False)
    ly = cy + 0.55 * ry
    pts[LIP_IDS, 0] = cx + lip_w * np.cos(t) + rng.uniform(-1, 1, len(t))
    pts[LIP_IDS, 1] = ly + lip_h * np.sin(t) + rng.uniform(-1, 1, len(t))
    # Ties for np.round: put the lip x-extremes on .5.
    i_min = LIP_IDS[int(np.argmin(pts[LIP_IDS, 0]))]
    i_max = LIP_IDS[int(np.argmax(pts[LIP_IDS, 0]))]
    pts[i_min, 0] = np.floor(pts[i_min, 0]) + 0.5
    pts[i_max, 0] = np.floor(pts[i_max, 0]) + 0.5
    return pts.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Cases

def mask_case(name, landmarks, width, height, image_size, face_ratio, full):
    """The whole `get_mask` + `ImageProcessor` mask path for one landmark set."""
    lm = landmarks.astype(np.float64)  # MediaPipe pixels are Python floats (float64)
    face_raw, face_box, face_mask = box_mask(lm, SILHOUETTE_IDS, height, width, face_ratio)
    lip_raw, lip_box, lip_mask = box_mask(lm, LIP_IDS, height, width, 2.0)
    face_rs, face_bl, face_blur = blur_mask(face_mask, 51)
    lip_rs, lip_bl, lip_blur = blur_mask(lip_mask, 31)
    bg = background(face_blur)
    sep_face = cv2.subtract(face_blur, lip_blur)
    t = {
        "landmarks": landmarks,
        "image_hw": np.array([height, width], dtype=np.int64),
        "image_size": np.array([image_size], dtype=np.int64),
        "face_ratio": np.array([face_ratio], dtype=np.float64),
        "face_raw": np.array(face_raw, dtype=np.float64),
        "lip_raw": np.array(lip_raw, dtype=np.float64),
        "face_box": np.array(face_box, dtype=np.int64),
        "lip_box": np.array(lip_box, dtype=np.int64),
        "background": bg,
        "sep_face": sep_face,
        "sep_lip": lip_blur,
    }
    if full:
        t.update({
            "face_resized": face_rs, "lip_resized": lip_rs,
            "face_blurred": face_bl, "lip_blurred": lip_bl,
            "face_blur": face_blur,
        })
    for key, m in (("full", bg), ("face", sep_face), ("lip", lip_blur)):
        for div in (8, 16, 32, 64):
            side = image_size // div
            if side != 64:  # 64 -> 64 is Image.copy(): the soft mask itself, stored above
                t[f"{key}_{div}"] = pil_resize(m, side, side)
    # Face region: the binary face mask PNG opened as RGB, Resize((S, S)), ToTensor. One channel
    # is stored (the three are equal); skipped when it would be large.
    if image_size * image_size <= 64 * 64:
        rgb = np.repeat(face_mask[..., None], 3, -1)
        region = pil_resize(rgb, image_size, image_size)
        assert (region[..., 0] == region[..., 1]).all() and (region[..., 0] == region[..., 2]).all()
        t["face_region"] = np.ascontiguousarray(region[..., 0])
    save_file(t, os.path.join(OUT, f"{name}.safetensors"),
              metadata={"opencv": cv2.__version__, "pillow": Image.__version__,
                        "numpy": np.__version__, "upstream": "hallo2@58a9aa6"})


def expand_cases():
    cases = []
    regions = [
        ([100.0, 200.0, 120.0, 260.0], 512, 512, 1.2),
        ([100.0, 201.0, 121.0, 260.0], 512, 512, 1.2),   # odd sums: floor of x.5
        ([10.0, 21.0, 5.0, 16.0], 64, 64, 1.2),            # side 13.2 -> 6
        ([3.0, 40.0, 2.0, 30.0], 64, 64, 2.0),              # goes negative, shifted right
        ([30.0, 63.0, 40.0, 64.0], 64, 64, 2.0),            # exceeds, shifted left
        ([-5.0, 70.0, -3.0, 50.0], 64, 48, 1.2),            # wider than the image: negative start
        ([-12.0, -2.0, 10.0, 20.0], 64, 64, 1.2),           # box fully left of the image
        ([0.0, 0.0, 0.0, 0.0], 64, 64, 2.0),                # degenerate
        ([7.0, 8.0, 7.0, 8.0], 64, 64, 2.0),                # mid 7, half 1
        ([11.0, 34.0, 17.0, 50.0], 64, 64, 1.37),
        ([-1.0, 14.0, -7.0, 9.0], 64, 64, 1.0),
    ]
    for region, w, h, ratio in regions:
        out = expand_region([np.float64(v) for v in region], w, h, ratio)
        cases.append({"region": region, "w": w, "h": h, "ratio": ratio,
                      "expanded": [int(v) for v in out]})
    with open(os.path.join(OUT, "expand_region.json"), "w") as f:
        json.dump(cases, f, indent=1)


def primitive_cases():
    t = {}
    # Gaussian kernels (sigma 0 -> OpenCV's rule), as float64.
    for k in (31, 51):
        t[f"kernel_{k}"] = cv2.getGaussianKernel(k, 0).reshape(-1).astype(np.float64)
    # cv2.resize INTER_LINEAR (u8): down non-integer, down 8x, exact 2x (-> INTER_AREA), up, odd.
    for (sw, sh, dw, dh) in ((97, 83, 64, 64), (128, 128, 64, 64), (37, 29, 64, 64),
                             (41, 200, 64, 64), (300, 17, 25, 9)):
        t[f"cv_resize_{sw}x{sh}_{dw}x{dh}"] = cv2.resize(pattern(sw, sh, seed=sw), (dw, dh))
    # cv2.GaussianBlur (u8, sigma 0, BORDER_REFLECT_101) on a pattern and on a blocky mask.
    src = pattern(64, 64, seed=3)
    blocky = np.zeros((64, 64), np.uint8)
    blocky[10:40, 20:61] = 255
    blocky[45:50, 0:8] = 128
    for k in (31, 51):
        t[f"cv_blur_pattern_{k}"] = cv2.GaussianBlur(src, (k, k), 0)
        t[f"cv_blur_blocky_{k}"] = cv2.GaussianBlur(blocky, (k, k), 0)
    t["cv_blur_pattern_40x33_31"] = cv2.GaussianBlur(pattern(40, 33, seed=9), (31, 31), 0)
    # cv2.normalize NORM_MINMAX on u8 with a non-zero minimum (tests scale and shift rounding).
    narrow = (pattern(64, 64, seed=5) // 3 + 40).astype(np.uint8)
    t["cv_normalize_narrow"] = cv2.normalize(narrow, None, 0, 255, cv2.NORM_MINMAX)
    t["cv_normalize_blocky51"] = cv2.normalize(t["cv_blur_blocky_51"], None, 0, 255,
                                               cv2.NORM_MINMAX)
    # Values 1..211: v*scale+shift in float32 rounds differently with and without a fused
    # multiply-add for 4 of them; OpenCV's AVX2 convertTo fuses (result depends on the CPU).
    ramp = np.tile(np.arange(1, 212, dtype=np.uint8), (2, 1))
    t["cv_normalize_ramp"] = cv2.normalize(ramp, None, 0, 255, cv2.NORM_MINMAX)
    flat = np.full((8, 8), 77, np.uint8)
    t["cv_normalize_flat"] = cv2.normalize(flat, None, 0, 255, cv2.NORM_MINMAX)
    # PIL bilinear (mode L and RGB): down by 2/4/8, non-integer down, up, mixed.
    for (sw, sh, dw, dh) in ((64, 64, 32, 32), (64, 64, 16, 16), (64, 64, 8, 8), (64, 64, 1, 1),
                             (50, 50, 17, 17), (20, 20, 64, 64), (40, 30, 23, 51)):
        t[f"pil_l_{sw}x{sh}_{dw}x{dh}"] = pil_resize(pattern(sw, sh, seed=sw + 1), dw, dh)
    for (sw, sh, dw, dh) in ((30, 20, 16, 16), (30, 20, 45, 33), (97, 61, 24, 20)):
        t[f"pil_rgb_{sw}x{sh}_{dw}x{dh}"] = pil_resize(pattern(sw, sh, 3, seed=sw + 2), dw, dh)
    save_file(t, os.path.join(OUT, "primitives.safetensors"),
              metadata={"opencv": cv2.__version__, "pillow": Image.__version__,
                        "numpy": np.__version__})


def main():
    os.makedirs(OUT, exist_ok=True)
    expand_cases()
    primitive_cases()
    # A: 512x512 portrait, the official size; every intermediate.
    mask_case("case_512", synthetic_landmarks(1, 250.3, 230.7, 95.0, 120.0, 30.0, 12.0),
              512, 512, 512, 1.2, full=True)
    # B: non-square 600x520 (squashed to 64x64 by cv2.resize).
    mask_case("case_600x520", synthetic_landmarks(2, 310.0, 250.0, 120.0, 150.0, 40.0, 15.0),
              600, 520, 512, 1.2, full=False)
    # C: 128x128 (exact 2x: OpenCV switches INTER_LINEAR to INTER_AREA), face at the top-left
    # border with landmarks outside the image, face_expand_ratio 1.5.
    mask_case("case_128_border", synthetic_landmarks(3, 20.0, 25.0, 30.0, 36.0, 10.0, 4.0),
              128, 128, 512, 1.5, full=True)
    # D: the tiny profile: 150x130 image, image_size 64 (pyramid 8/4/2/1, face region 64x64).
    mask_case("case_tiny", synthetic_landmarks(4, 70.0, 60.0, 40.0, 45.0, 12.0, 5.0),
              150, 130, 64, 1.2, full=False)
    # E: face box wider than the image: numpy's negative-start slice keeps only a strip.
    mask_case("case_overflow", synthetic_landmarks(5, 40.0, 30.0, 38.0, 20.0, 12.0, 4.0),
              80, 60, 64, 1.2, full=False)
    # F: source pixels: a small RGB image squashed to 64x64 (u8 before ToTensor/Normalize).
    src = pattern(83, 47, 3, seed=11)
    save_file({"resized": pil_resize(src, 64, 64)},
              os.path.join(OUT, "source_pixels.safetensors"))


if __name__ == "__main__":
    main()
