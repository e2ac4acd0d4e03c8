#!/usr/bin/env python3
"""PyTorch's side of `op_bench` (model/src/bin/op_bench.rs): the same ops at the same shapes on
the CPU, median seconds of --repeats runs, one JSON object on stdout."""

import argparse
import json
import statistics
import time

import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    def conv(b, c, side):
        x, w = torch.randn(b, c, side, side), torch.randn(c, c, 3, 3) * 0.02
        return lambda: torch.nn.functional.conv2d(x, w, padding=1)

    x_lin, w_lin = torch.randn(2048, 320), torch.randn(320, 1280) * 0.02
    q, k = torch.randn(4096, 16, 40), torch.randn(4096, 16, 40)
    gn, x_gn = torch.nn.GroupNorm(32, 320, eps=1e-5), torch.randn(2, 320, 32, 32)
    x_sm = torch.randn(16, 1024, 1024)
    ops = {
        "conv3x3_unet_2x320x32x32": conv(2, 320, 32),
        "conv3x3_vae_1x512x32x32": conv(1, 512, 32),
        "conv3x3_vae_1x128x128x128": conv(1, 128, 128),
        "matmul_linear_2048x320x1280": lambda: x_lin @ w_lin,
        "bmm_attention_scores_4096x16x40": lambda: q @ k.transpose(1, 2),
        "group_norm_32_2x320x32x32": lambda: gn(x_gn),
        "softmax_16x1024x1024": lambda: torch.softmax(x_sm, dim=-1),
    }
    report = {}
    for name, run in ops.items():
        run()
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        report[name] = statistics.median(times)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
