#!/usr/bin/env python3
"""Full-size stand-ins for the two InsightFace (antelopev2) files Hallo2 reads:

  <out>/pretrained_models/face_analysis/models/scrfd_10g_bnkps.onnx   ~16.9 MB (real: 16.9 MB)
  <out>/pretrained_models/face_analysis/models/glintr100.onnx         ~256 MB (real: 261 MB)

The signatures are the real ones: SCRFD input `input.1` [1, 3, ?, ?] and the 9 outputs
448 471 494 / 451 474 497 / 454 477 500 (scores, boxes, keypoints at strides 8/16/32, 2-D
[N, 1|4|10]); ArcFace input `input.1` [None, 3, 112, 112] and one output [None, 512] (512 =
Hallo2's clip_embeddings_dim). Both are the graphs of make_tiny_insightface.py, grown with real,
used layers until the files have about the real sizes, so loading parses as many bytes as the
real models while a run stays quick (~1.6 and ~2.5 GMAC):

- SCRFD: the tiny hand-weighted detector (the same weights: the tiny module's generator is
  consumed in the same order, the added layers draw from their own) plus a 256-wide 3x3 conv
  branch at stride 32 (~4.2 M weights, as SCRFD-10G has) added back through a near-zero conv, so
  it finds what the tiny one finds (a face in model/tests/fixtures/face/astronaut.png).
- ArcFace: widths 64/128/256/512 down to 7x7, 21 more 512-channel 3x3 convs (PReLU) at 7x7 and
  the real head's Gemm 25088 -> 512 + BatchNorm.

Needs numpy and onnx only. Usage:
  python3 model/tools/make_full_size_insightface.py OUT_DIR
"""

import argparse
import os
import time

import numpy as np

import make_tiny_insightface as tiny

SCRFD_GROW_WIDTH = 256
SCRFD_GROW_CONVS = 7  # 256 -> 256 convs, between the 16 -> 256 and 256 -> 16 ones
ARCFACE_WIDTHS = (64, 128, 256, 512)
ARCFACE_GROW_CONVS = 21
EMBED_DIM = 512

# The added layers draw from their own generator, so the tiny layers keep the tiny weights.
rng = np.random.default_rng(20240612)


def noise(shape, scale):
    return (scale * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def he(shape):
    """Conv weights that keep activations' scale through a ReLU/PReLU chain."""
    return noise(shape, np.sqrt(2.0 / (shape[1] * shape[2] * shape[3])))


def grow_scrfd(g, x, channels):
    w = SCRFD_GROW_WIDTH
    y = g.node("Relu", [g.conv(x, he((w, channels, 3, 3)), np.zeros(w, np.float32))])
    for _ in range(SCRFD_GROW_CONVS):
        y = g.node("Relu", [g.conv(y, he((w, w, 3, 3)), np.zeros(w, np.float32))])
    # Near zero: the branch adds bytes and work, not a change in what is detected.
    y = g.conv(y, noise((channels, w, 3, 3), 1e-5), np.zeros(channels, np.float32))
    return g.node("Add", [x, y])


def grow_arcface(g, x, channels):
    for i in range(ARCFACE_GROW_CONVS):
        slope = g.const(f"grow_prelu{i}.weight", 0.25 + noise((channels, 1, 1), 0.05))
        x = g.node("PRelu", [x, slope])
        x = g.conv(x, he((channels, channels, 3, 3)), noise(channels, 0.05))
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output root; files go to OUT/pretrained_models/face_analysis/models")
    args = parser.parse_args()
    models = os.path.join(args.out, "pretrained_models", "face_analysis", "models")
    os.makedirs(models, exist_ok=True)
    start = time.time()
    # SCRFD first: it then gets exactly the tiny detector's weights (see the docstring).
    scrfd = os.path.join(models, "scrfd_10g_bnkps.onnx")
    tiny.make_scrfd(scrfd, grow=grow_scrfd)
    arcface = os.path.join(models, "glintr100.onnx")
    tiny.make_arcface(arcface, widths=ARCFACE_WIDTHS, embed_dim=EMBED_DIM, grow=grow_arcface)
    for path in [scrfd, arcface]:
        print(f"{path}: {os.path.getsize(path) / 1e6:.1f} MB")
    print(f"done in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
