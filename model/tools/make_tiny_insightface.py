#!/usr/bin/env python3
"""Tiny InsightFace stand-ins (SCRFD detector + ArcFace recogniser) and reference outputs.

Writes, under model/tests/fixtures/face_analysis/:
  models/scrfd_10g_bnkps.onnx   same signature as antelopev2's SCRFD-10G-BNKPS: input `input.1`
                                [1, 3, ?, ?]; 9 outputs in the official order (scores s8/s16/s32,
                                boxes s8/s16/s32, keypoints s8/s16/s32), 2-D [N, 1|4|10] with the
                                official output names and the shapes declared for 640x640
  models/glintr100.onnx         ArcFace signature: input `input.1` [None, 3, 112, 112], one output
                                [None, 16] (16 = the tiny profile's clip_embeddings_dim); the first
                                nodes are Conv, so InsightFace normalises with 127.5/127.5
  arcface_mxnet_style.onnx      a recogniser whose first nodes are `_minusscalar0`/`_mulscalar0`
                                (InsightFace then feeds raw 0..255 pixels: mean 0, std 1)
  reference.safetensors         onnxruntime outputs + the InsightFace 0.7.3 decode / NMS / align /
                                embedding, recomputed here with NumPy, OpenCV and scikit-image
  portraits/                    the real portraits used (public domain / CC0)
and copies the two models to model/tests/fixtures/hallo2-tiny/pretrained_models/face_analysis/models/.

The detector is hand-weighted, not trained: its score is a skin-tone band test on 3x3-averaged
colour differences (R-B, R-G), so detections land on skin-coloured regions; boxes and keypoints are
a fixed face template plus small image-dependent terms. It exercises the decode path; it is not a
face detector.

Needs (venv /work/venv-onnx): onnx, onnxruntime, numpy==1.26.4, opencv-python-headless==4.9.0.80
(the version Hallo2 pins), scikit-image, pillow.
Run from the repository root:  /work/venv-onnx/bin/python model/tools/make_tiny_insightface.py
"""

import json
import os
import shutil
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

if __name__ == "__main__":
    # The reference outputs only: importers (make_full_size_insightface.py) build the graphs with
    # numpy and onnx alone.
    import cv2
    import onnxruntime
    from PIL import Image
    from skimage import transform as sktransform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # model/
FIX = os.path.join(ROOT, "tests", "fixtures", "face_analysis")
TINY_MODELS = os.path.join(
    ROOT, "tests", "fixtures", "hallo2-tiny", "pretrained_models", "face_analysis", "models"
)
PORTRAITS_SRC = "/work/shared/data/portraits"
PORTRAITS = ["astronaut.png", "grace_hopper.jpg", "camera.png"]
EMBED_DIM = 16
OPSET = 11

rng = np.random.default_rng(20240611)


# ------------------------------------------------------------------------------------------------
# graph helpers


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.counter = [], [], {}

    def _name(self, op):
        i = self.counter.get(op, 0)
        self.counter[op] = i + 1
        return f"{op}_{i}"

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, output=None, name=None, **attrs):
        name = name or self._name(op)
        output = output or f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def conv(self, x, w, b, stride=1, pad=1):
        k = w.shape[-1]
        n = self._name("Conv")
        wn = self.const(f"{n}.weight", w.astype(np.float32))
        bn = self.const(f"{n}.bias", b.astype(np.float32))
        return self.node(
            "Conv", [x, wn, bn], name=n, kernel_shape=[k, k], strides=[stride, stride],
            pads=[pad, pad, pad, pad], dilations=[1, 1], group=1,
        )


def noise(shape, scale):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# SCRFD stand-in

# Official output names of antelopev2 scrfd_10g_bnkps.onnx (onnxruntime warnings quote them).
SCRFD_OUTPUTS = ["448", "471", "494", "451", "474", "497", "454", "477", "500"]
STRIDES = [8, 16, 32]
GAIN = 15.0
# (centre, half-width) of the accepted R-B and R-G bands, in normalised units ((x-127.5)/128).
RB_BAND = (0.60, 0.35)
RG_BAND = (0.38, 0.28)
SCORE_BIAS = {8: (-9.0, -9.5), 16: (-5.0, -5.2), 32: (-4.0, -4.2)}
# Keypoint template in stride units around the anchor centre: left eye, right eye, nose, mouth
# left, mouth right (image left/right as InsightFace orders them).
KPS_TEMPLATE = np.array(
    [[-0.55, -0.40], [0.55, -0.40], [0.0, 0.15], [-0.45, 0.65], [0.45, 0.65]], np.float32
)


def make_scrfd(path, grow=None):
    """`grow(g, x, channels) -> x`, if given, adds layers to the stride-32 features."""
    g = Graph()
    avg = np.full((3, 3), 1.0 / 9.0, np.float32)

    # conv1: colour-difference deviations |R-B - c| and |R-G - c| as ReLU pairs, a
    # constant "inside the image" channel (zero padding makes it fall off at the borders) and
    # three random features.
    w1 = noise((8, 3, 3, 3), 0.01)
    b1 = np.zeros(8, np.float32)
    rb = np.array([1.0, 0.0, -1.0], np.float32)  # R - B (input is RGB)
    rg = np.array([1.0, -1.0, 0.0], np.float32)  # R - G
    for c, (vec, sign, centre) in enumerate(
        [(rb, 1.0, RB_BAND[0]), (rb, -1.0, RB_BAND[0]), (rg, 1.0, RG_BAND[0]), (rg, -1.0, RG_BAND[0])]
    ):
        w1[c] += sign * vec[:, None, None] * avg[None]
        b1[c] = -sign * centre
    w1[4] = 0.0
    b1[4] = 1.0
    w1[5:] += noise((3, 3, 3, 3), 0.2)
    x = g.node("Relu", [g.conv("input.1", w1, b1, stride=2)])

    # conv2: band "goodness" relu(width * inside - deviation), zero outside the image.
    w2 = noise((8, 8, 3, 3), 0.004)
    for c, (d0, d1, width) in enumerate([(0, 1, RB_BAND[1]), (2, 3, RG_BAND[1])]):
        w2[c, d0] -= avg
        w2[c, d1] -= avg
        w2[c, 4] += width * avg
    for c in range(2, 8):
        w2[c, c + 2 if c < 6 else c] += avg
    x = g.node("Relu", [g.conv(x, w2, noise(8, 0.002), stride=2)])  # stride 4

    def down(x, cin, cout):
        w = noise((cout, cin, 3, 3), 0.004)
        for c in range(min(cin, cout)):
            w[c, c] += avg
        return g.node("Relu", [g.conv(x, w, noise(cout, 0.002), stride=2)])

    feats = {}
    x = feats[8] = down(x, 8, 16)
    x = feats[16] = down(x, 16, 16)
    feats[32] = down(x, 16, 16)
    if grow:
        feats[32] = grow(g, feats[32], 16)

    scale = {8: (1.9, 2.3), 16: (1.7, 2.1), 32: (1.8, 2.2)}
    scores, boxes, kpss = [], [], []
    for s in STRIDES:
        f = feats[s]
        # scores: logit = bias + GAIN * (band goodness), one channel per anchor.
        wc = noise((2, 16, 3, 3), 0.01)
        wc[:, :2] += GAIN * avg
        cls = g.node("Sigmoid", [g.conv(f, wc, np.array(SCORE_BIAS[s], np.float32))])
        # boxes: distances (left, top, right, bottom) in stride units, per anchor.
        wb = noise((8, 16, 3, 3), 0.03)
        bb = np.repeat(np.array(scale[s], np.float32), 4)
        bb[[1, 5]] *= 1.1  # faces are a little taller above the centre
        box = g.conv(f, wb, bb)
        # keypoints: the template (scaled per anchor) plus small image-dependent terms.
        wk = noise((20, 16, 3, 3), 0.02)
        bk = np.concatenate([KPS_TEMPLATE.ravel() * scale[s][a] / 1.8 for a in range(2)])
        kps = g.conv(f, wk, bk.astype(np.float32))
        for tensor, k, out_list in [(cls, 1, scores), (box, 4, boxes), (kps, 10, kpss)]:
            t = g.node("Transpose", [tensor], perm=[0, 2, 3, 1])
            shape = g.const(f"{t}_shape", np.array([-1, k], np.int64))
            out_list.append((t, shape, k, s))
    outputs = []
    for (t, shape, k, s), name in zip(scores + boxes + kpss, SCRFD_OUTPUTS):
        g.node("Reshape", [t, shape], output=name)
        n = (640 // s) ** 2 * 2
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, k]))
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])
    graph = helper.make_graph(g.nodes, "scrfd_tiny", [inp], outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 6
    onnx.checker.check_model(model)
    onnx.save(model, path)


# ------------------------------------------------------------------------------------------------
# ArcFace stand-ins


def make_arcface(
    path, mxnet_style=False, widths=(8, 16, 16, 16), embed_dim=EMBED_DIM, grow=None
):
    """Four stride-2 convs of `widths` (112 -> 7), a Gemm to `embed_dim` and a BatchNorm;
    `grow(g, x, channels) -> x`, if given, adds layers at 7x7 before the Gemm."""
    g = Graph()
    x = "input.1"
    if mxnet_style:
        # mxnet exports normalise inside the graph; InsightFace spots these node names.
        x = g.node("Sub", [x, g.const("mean", np.float32(127.5))], name="_minusscalar0")
        x = g.node("Mul", [x, g.const("scale", np.float32(0.0078125))], name="_mulscalar0")
    chans = [3, *widths]
    for i in range(4):
        cin, cout = chans[i], chans[i + 1]
        w = noise((cout, cin, 3, 3), np.sqrt(2.0 / (cin * 9)))
        x = g.conv(x, w, noise(cout, 0.05), stride=2)
        if i == 1:
            n = g._name("BatchNormalization")
            x = g.node(
                "BatchNormalization",
                [x, g.const(f"{n}.weight", 1.0 + noise(cout, 0.1)),
                 g.const(f"{n}.bias", noise(cout, 0.1)),
                 g.const(f"{n}.running_mean", noise(cout, 0.1)),
                 g.const(f"{n}.running_var", (1.0 + np.abs(noise(cout, 0.2))).astype(np.float32))],
                name=n, epsilon=1e-5,
            )
        if i < 3:
            slope = g.const(f"prelu{i}.weight", (0.25 + noise((cout, 1, 1), 0.05)))
            x = g.node("PRelu", [x, slope])
    if grow:
        x = grow(g, x, chans[-1])
    x = g.node("Flatten", [x], axis=1)
    flat = chans[-1] * 49
    n = g._name("Gemm")
    x = g.node(
        "Gemm",
        [x, g.const(f"{n}.weight", noise((embed_dim, flat), np.sqrt(1.0 / flat))),
         g.const(f"{n}.bias", noise(embed_dim, 0.05))],
        name=n, alpha=1.0, beta=1.0, transB=1,
    )
    n = g._name("BatchNormalization")
    g.node(
        "BatchNormalization",
        [x, g.const(f"{n}.weight", 1.0 + noise(embed_dim, 0.1)),
         g.const(f"{n}.bias", noise(embed_dim, 0.1)),
         g.const(f"{n}.running_mean", noise(embed_dim, 0.1)),
         g.const(f"{n}.running_var", (1.0 + np.abs(noise(embed_dim, 0.2))).astype(np.float32))],
        output="1333", name=n, epsilon=1e-5,
    )
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])
    out = helper.make_tensor_value_info("1333", TensorProto.FLOAT, ["None", embed_dim])
    graph = helper.make_graph(g.nodes, "arcface_tiny", [inp], [out], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 6
    onnx.checker.check_model(model)
    onnx.save(model, path)


# ------------------------------------------------------------------------------------------------
# InsightFace 0.7.3 reference (model_zoo/retinaface.py, arcface_onnx.py, utils/face_align.py,
# app/face_analysis.py) and the Hallo2 face choice (hallo/datasets/image_processor.py)

ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]], np.float32,
)


def arcface_norm(path):
    model = onnx.load(path)
    names = [n.name for n in model.graph.node[:8]]
    find_sub = any(n.startswith("Sub") or n.startswith("_minus") for n in names)
    find_mul = any(n.startswith("Mul") or n.startswith("_mul") for n in names)
    return (0.0, 1.0) if (find_sub and find_mul) else (127.5, 127.5)


def letterbox(img, size=(640, 640)):
    im_ratio = float(img.shape[0]) / img.shape[1]
    model_ratio = float(size[1]) / size[0]
    if im_ratio > model_ratio:
        new_height = size[1]
        new_width = int(new_height / im_ratio)
    else:
        new_width = size[0]
        new_height = int(new_width * im_ratio)
    det_scale = float(new_height) / img.shape[0]
    resized = cv2.resize(img, (new_width, new_height))
    det_img = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    det_img[:new_height, :new_width, :] = resized
    return det_img, det_scale


def distance2bbox(points, d):
    return np.stack(
        [points[:, 0] - d[:, 0], points[:, 1] - d[:, 1], points[:, 0] + d[:, 2],
         points[:, 1] + d[:, 3]], axis=-1,
    )


def distance2kps(points, d):
    preds = []
    for i in range(0, d.shape[1], 2):
        preds.append(points[:, i % 2] + d[:, i])
        preds.append(points[:, i % 2 + 1] + d[:, i + 1])
    return np.stack(preds, axis=-1)


def nms(dets, thresh=0.4):
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def detect(session, img_bgr, thresh=0.5):
    det_img, det_scale = letterbox(img_bgr)
    blob = cv2.dnn.blobFromImage(det_img, 1.0 / 128.0, (640, 640), (127.5, 127.5, 127.5),
                                 swapRB=True)
    outs = session.run(SCRFD_OUTPUTS, {"input.1": blob})
    scores_list, bboxes_list, kpss_list = [], [], []
    for idx, stride in enumerate(STRIDES):
        scores = outs[idx]
        bbox_preds = outs[idx + 3] * stride
        kps_preds = outs[idx + 6] * stride
        h = w = 640 // stride
        centers = np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float32)
        centers = (centers * stride).reshape((-1, 2))
        centers = np.stack([centers] * 2, axis=1).reshape((-1, 2))
        pos = np.where(scores >= thresh)[0]
        scores_list.append(scores[pos])
        bboxes_list.append(distance2bbox(centers, bbox_preds)[pos])
        kpss_list.append(distance2kps(centers, kps_preds).reshape((-1, 5, 2))[pos])
    scores = np.vstack(scores_list)
    order = scores.ravel().argsort()[::-1]
    bboxes = np.vstack(bboxes_list) / det_scale
    kpss = np.vstack(kpss_list) / det_scale
    pre_det = np.hstack((bboxes, scores)).astype(np.float32, copy=False)[order, :]
    # numpy's argsort is not stable; with distinct scores the order is unambiguous.
    assert len(np.unique(scores)) == len(scores), "tied detection scores: order is ambiguous"
    keep = nms(pre_det)
    det = pre_det[keep, :]
    kpss = kpss[order, :, :][keep, :, :]
    return det_img, blob, outs, det, kpss


def estimate_norm(lmk, dtype):
    """`estimate_norm` for a 112 crop, fitted in `dtype` (InsightFace: float32 throughout)."""
    tform = sktransform.SimilarityTransform()
    tform.estimate(lmk.astype(dtype), ARCFACE_DST.astype(dtype))
    return tform.params[0:2, :]


# ------------------------------------------------------------------------------------------------
# output


def save_safetensors(path, tensors):
    dtypes = {np.float32: "F32", np.float64: "F64", np.uint8: "U8", np.int64: "I64"}
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        raw = a.tobytes()
        header[name] = {"dtype": dtypes[a.dtype.type], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def main():
    os.makedirs(os.path.join(FIX, "models"), exist_ok=True)
    os.makedirs(os.path.join(FIX, "portraits"), exist_ok=True)
    det_path = os.path.join(FIX, "models", "scrfd_10g_bnkps.onnx")
    rec_path = os.path.join(FIX, "models", "glintr100.onnx")
    mx_path = os.path.join(FIX, "arcface_mxnet_style.onnx")
    make_scrfd(det_path)
    make_arcface(rec_path)
    make_arcface(mx_path, mxnet_style=True)
    os.makedirs(TINY_MODELS, exist_ok=True)
    for p in [det_path, rec_path]:
        shutil.copy(p, TINY_MODELS)

    det_sess = onnxruntime.InferenceSession(det_path, providers=["CPUExecutionProvider"])
    rec_sess = onnxruntime.InferenceSession(rec_path, providers=["CPUExecutionProvider"])
    mx_sess = onnxruntime.InferenceSession(mx_path, providers=["CPUExecutionProvider"])
    mean, std = arcface_norm(rec_path)
    mx_mean, mx_std = arcface_norm(mx_path)
    assert (mean, std) == (127.5, 127.5) and (mx_mean, mx_std) == (0.0, 1.0)

    out = {}
    summary = {}
    for name in PORTRAITS:
        key = os.path.splitext(name)[0]
        rgb = np.array(Image.open(os.path.join(PORTRAITS_SRC, name)).convert("RGB"))
        # Stored as PNG of the PIL-decoded RGB pixels, so the Rust side sees the same pixels
        # whatever its JPEG decoder does.
        Image.fromarray(rgb).save(os.path.join(FIX, "portraits", key + ".png"), optimize=True)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # as Hallo2 hands it to FaceAnalysis.get
        det_img, blob, outs, det, kpss = detect(det_sess, bgr)
        # letterbox checks: per-row and per-column sums of the 640x640 RGB image
        det_rgb = det_img[:, :, ::-1].astype(np.int64)
        out[f"{key}.letterbox_row_sums"] = det_rgb.sum(axis=1).astype(np.int64)
        out[f"{key}.letterbox_col_sums"] = det_rgb.sum(axis=0).astype(np.int64)
        if key == "astronaut":
            for i, o in enumerate(outs):
                out[f"{key}.net.{i}"] = o.astype(np.float32)
        out[f"{key}.det"] = det.astype(np.float32)
        out[f"{key}.kps"] = kpss.astype(np.float32)
        summary[key] = {"faces": int(det.shape[0])}
        if det.shape[0] == 0:
            continue
        # Hallo2: the largest box (Python's sort is stable, reverse keeps the NMS order on ties)
        areas = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
        best = sorted(range(det.shape[0]), key=lambda i: areas[i], reverse=True)[0]
        # InsightFace hands float32 keypoints to scikit-image, whose `_umeyama` (0.24) then works
        # in float32 with a LAPACK SVD: not reproducible bit for bit. The reference fits in
        # float64 (what the Rust closed form matches to ~1e-14); the float32 path is kept too,
        # to measure what that costs.
        M = estimate_norm(kpss[best], np.float64)
        aligned = cv2.warpAffine(bgr, M, (112, 112), borderValue=0.0)
        rec_blob = cv2.dnn.blobFromImages([aligned], 1.0 / std, (112, 112), (mean,) * 3,
                                          swapRB=True)
        emb = rec_sess.run(["1333"], {"input.1": rec_blob})[0].flatten()
        M32 = estimate_norm(kpss[best], np.float32)
        aligned32 = cv2.warpAffine(bgr, M32, (112, 112), borderValue=0.0)
        blob32 = cv2.dnn.blobFromImages([aligned32], 1.0 / std, (112, 112), (mean,) * 3,
                                        swapRB=True)
        emb32 = rec_sess.run(["1333"], {"input.1": blob32})[0].flatten()
        out[f"{key}.norm_matrix_f32_fit"] = M32.astype(np.float64)
        out[f"{key}.embedding_f32_fit"] = emb32.astype(np.float32)
        summary[key].update(
            f32_fit_matrix_diff=float(np.abs(M32 - M).max()),
            f32_fit_pixels_changed=int((aligned32 != aligned).any(axis=2).sum()),
            f32_fit_embedding_diff=float(np.abs(emb32 - emb).max()),
        )
        mx_blob = cv2.dnn.blobFromImages([aligned], 1.0 / mx_std, (112, 112), (mx_mean,) * 3,
                                         swapRB=True)
        mx_emb = mx_sess.run(["1333"], {"input.1": mx_blob})[0].flatten()
        out[f"{key}.best"] = np.array([best], np.int64)
        out[f"{key}.norm_matrix"] = M.astype(np.float64)
        out[f"{key}.aligned"] = aligned[:, :, ::-1].copy()  # RGB, 112x112x3 u8
        out[f"{key}.embedding"] = emb.astype(np.float32)
        out[f"{key}.embedding_mxnet_style"] = mx_emb.astype(np.float32)
        summary[key].update(
            best=int(best), det=det[best].round(2).tolist(),
            embedding_norm=float(np.linalg.norm(emb)),
        )
    save_safetensors(os.path.join(FIX, "reference.safetensors"), out)
    print(json.dumps(summary, indent=1))
    for p in [det_path, rec_path, mx_path, os.path.join(FIX, "reference.safetensors")]:
        print(p, os.path.getsize(p))


if __name__ == "__main__":
    sys.exit(main())
