#!/usr/bin/env python3
"""Prints a GPU `stage_bench` result (its JSON file, then the peak GPU memory in MiB) beside the
official code's figures on an H100 (../shared/GPU.md) and issue #17's goals."""

import json
import sys

OFFICIAL_STEP_S, OFFICIAL_CLIP_S, OFFICIAL_GIB = 0.2698, 11.34, 7.73
GOAL_CLIP_S, GOAL_GIB = 5.7, 6.5

s = json.load(open(sys.argv[1]))
peak = int(sys.argv[2]) / 1024
clip = s["reference_s"] + 40 * s["unet_step_s"] + s["decode_s"]
print(
    f"== stages {s['size']}² {s['dtype']}: reference {s['reference_s']:.3f} s · "
    f"step {1000 * s['unet_step_s']:.1f} ms (official {1000 * OFFICIAL_STEP_S:.1f} ms, "
    f"{s['unet_step_s'] / OFFICIAL_STEP_S:.2f}×) · decode {s['decode_s']:.3f} s · "
    f"wav2vec2 on {s['audio_seconds']} s {s['wav2vec2_s']:.3f} s"
)
print(
    f"   one clip at 40 steps ≈ {clip:.2f} s (official {OFFICIAL_CLIP_S} s, "
    f"{clip / OFFICIAL_CLIP_S:.2f}×; goal ≤ {GOAL_CLIP_S} s) · peak GPU memory {peak:.2f} GiB "
    f"(official {OFFICIAL_GIB}, goal ≤ {GOAL_GIB})"
)
