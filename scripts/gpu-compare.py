#!/usr/bin/env python3
"""Compares the GPU run's `frames-<dtype>.safetensors` (scripts/gpu-check.sh) with the official
final video of the tiny fixture, and prints the max abs difference of each (the CPU's f32 run
stays within 1e-3: server/tests/cli.rs).

    python3 scripts/gpu-compare.py DIR_WITH_FRAMES
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64}


def read(path: Path) -> dict:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        raw = body[a:b]
        if meta["dtype"] == "BF16":
            u16 = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = u16.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=DTYPES[meta["dtype"]])
        out[name] = arr.astype(np.float32).reshape(meta["shape"])
    return out


def main() -> None:
    folder = Path(sys.argv[1])
    golden = read(Path("model/tests/fixtures/hallo2-tiny/cases/pipeline_final.safetensors"))["video"]
    for dtype in ["f32", "f16", "bf16"]:
        path = folder / f"frames-{dtype}.safetensors"
        if not path.exists():
            print(f"{dtype}: no output")
            continue
        video = read(path)["video"]
        if video.shape != golden.shape:
            print(f"{dtype}: shape {video.shape}, expected {golden.shape}")
            continue
        diff = np.abs(video - golden)
        print(f"{dtype}: max abs diff {diff.max():.3e}, mean {diff.mean():.3e} (f32 bound 1e-3)")


if __name__ == "__main__":
    main()
