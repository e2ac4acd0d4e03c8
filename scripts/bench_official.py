#!/usr/bin/env python3
"""The official Hallo2 code's side of scripts/bench-official.sh: the same stages as our
`stage_bench`, on the same full-size weights, at the same size, timed in the official code itself.

The models are built as scripts/inference_long.py builds them (the UNets from the SD-1.5 config
with long.yaml's additional kwargs, FaceLocator/ImageProj/AudioProj with its arguments, net.pth
loaded strictly) and one clip runs through the official FaceAnimatePipeline.__call__ on zero
conditioning; the stages are cut by wrapping its modules:

  reference  VAE encode of the 1 + M reference/motion images + the reference UNet + AudioProj
  unet_step  one denoising step (the 3-D UNet on the CFG rows x F frames + guidance + DDIM),
             the median of the steps after the first
  decode     pipeline.decode_latents (the VAE, one frame at a time)
  wav2vec2   the official Wav2VecModel on `--audio-seconds` of 16 kHz audio, padded to whole
             clips as AudioProcessor.preprocess pads it, all hidden states stacked

Usage: python bench_official.py --src HALLO2_SRC --weights DIR/pretrained_models [--size 128]
Prints one JSON object on stdout. Nothing of the official code is copied: it is imported from
--src (a checkout or export of fudan-generative-vision/hallo2).
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
import tempfile


# The heads' arguments, as scripts/inference_long.py passes them.
AUDIO_PROJ = dict(
    seq_len=5, blocks=12, channels=768, intermediate_dim=512, output_dim=768, context_tokens=32
)
FACE_EMBEDDING = 512


def stub_modules(folder):
    """Empty stand-ins, first on sys.path, for the packages the model modules import but this
    path never calls (as ../shared/fixtures/PRODUCING.md sets the official code up). diffusers
    looks for xformers' distribution, not its module, so attention stays on PyTorch's SDPA."""
    modules = {
        "cv2": "",
        "mediapipe": "",
        "insightface/__init__": "",
        "insightface/app": "class FaceAnalysis: pass",
        "moviepy/__init__": "",
        "moviepy/editor": "class AudioFileClip: pass\nclass VideoClip: pass\n"
        "class VideoFileClip: pass\ndef concatenate_videoclips(*a, **k): pass",
        "audio_separator/__init__": "",
        "audio_separator/separator": "class Separator: pass",
        "xformers/__init__": "",
        "xformers/ops": "",
        "icecream": "def ic(*a): pass",
        "pydub": "class AudioSegment: pass",
    }
    for name, text in modules.items():
        path = os.path.join(folder, name + ".py")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")
    sys.path.insert(0, folder)


def timed(fn, sink, ends=None):
    """`fn`, adding each call's seconds to `sink` (and its end time to `ends`)."""

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        end = time.perf_counter()
        sink.append(end - t)
        if ends is not None:
            ends.append(end)
        return out

    return wrapper


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--audio-seconds", type=float, default=10.0)
    args = parser.parse_args()

    stub_modules(tempfile.mkdtemp(prefix="hallo2-stubs-"))
    sys.path.insert(1, args.src)
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler
    from omegaconf import OmegaConf

    from hallo.animate.face_animate import FaceAnimatePipeline
    from hallo.models.audio_proj import AudioProjModel
    from hallo.models.face_locator import FaceLocator
    from hallo.models.image_proj import ImageProjModel
    from hallo.models.unet_2d_condition import UNet2DConditionModel
    from hallo.models.unet_3d import UNet3DConditionModel
    from hallo.models.wav2vec import Wav2VecModel

    torch.set_grad_enabled(False)
    w = args.weights
    config = OmegaConf.load(os.path.join(args.src, "configs/inference/long.yaml"))
    base = os.path.join(w, "stable-diffusion-v1-5")

    t = time.perf_counter()
    vae = AutoencoderKL.from_pretrained(os.path.join(w, "sd-vae-ft-mse"))
    reference_unet = UNet2DConditionModel.from_config(
        UNet2DConditionModel.load_config(base, subfolder="unet")
    )
    # What from_pretrained_2d builds before it loads the SD-1.5 and motion weights, all of
    # which net.pth then overwrites.
    unet_config = UNet3DConditionModel.load_config(os.path.join(base, "unet", "config.json"))
    unet_config["_class_name"] = "UNet3DConditionModel"
    unet_config["down_block_types"] = ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"]
    unet_config["up_block_types"] = ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3
    unet_config["mid_block_type"] = "UNetMidBlock3DCrossAttn"
    denoising_unet = UNet3DConditionModel.from_config(
        unet_config, **OmegaConf.to_container(config.unet_additional_kwargs)
    )
    face_locator = FaceLocator(conditioning_embedding_channels=320)
    image_proj = ImageProjModel(
        cross_attention_dim=denoising_unet.config.cross_attention_dim,
        clip_embeddings_dim=FACE_EMBEDDING,
        clip_extra_context_tokens=4,
    )
    audio_proj = AudioProjModel(**AUDIO_PROJ)
    net = torch.nn.Module()
    net.reference_unet = reference_unet
    net.denoising_unet = denoising_unet
    net.face_locator = face_locator
    net.imageproj = image_proj
    net.audioproj = audio_proj
    missing, unexpected = net.load_state_dict(
        torch.load(os.path.join(w, "hallo2", "net.pth"), map_location="cpu")
    )
    assert not missing and not unexpected, (missing[:5], unexpected[:5])
    wav2vec = Wav2VecModel.from_pretrained(
        os.path.join(w, "wav2vec", "wav2vec2-base-960h"), local_files_only=True
    )
    wav2vec.feature_extractor._freeze_parameters()
    print(f"loaded in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    sched_kwargs = OmegaConf.to_container(config.noise_scheduler_kwargs)
    if config.get("enable_zero_snr"):
        sched_kwargs.update(
            rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction"
        )
    scheduler = DDIMScheduler(**sched_kwargs)
    pipeline = FaceAnimatePipeline(
        vae=vae,
        reference_unet=reference_unet,
        denoising_unet=denoising_unet,
        face_locator=face_locator,
        scheduler=scheduler,
        image_proj=image_proj,
    )
    pipeline.to(device="cpu", dtype=torch.float32)

    size, f, m = args.size, config.data.n_sample_frames, config.data.n_motion_frames
    encode_s, reference_s, decode_s, reference_end = [], [], [], []
    vae.encode = timed(vae.encode, encode_s)
    reference_unet.forward = timed(reference_unet.forward, reference_s, reference_end)
    pipeline.decode_latents = timed(pipeline.decode_latents, decode_s)
    marks = []

    def on_step(step, timestep, latents):
        marks.append(time.perf_counter())

    # Zero conditioning of the official shapes (a pass costs the same whatever the values).
    masks = [torch.zeros(f, (size // d) ** 2) for d in (8, 16, 32, 64)]
    a = AUDIO_PROJ
    audio_windows = torch.zeros(1, f, a["seq_len"], a["blocks"], a["channels"])
    t = time.perf_counter()
    audio_tokens = audio_proj(audio_windows)
    audio_proj_s = time.perf_counter() - t
    pipeline(
        ref_image=torch.zeros(1, 1 + m, 3, size, size),
        audio_tensor=audio_tokens,
        face_emb=torch.zeros(1, FACE_EMBEDDING),
        face_mask=torch.zeros(1, 3, size, size),
        pixel_values_full_mask=masks,
        pixel_values_face_mask=masks,
        pixel_values_lip_mask=masks,
        width=size,
        height=size,
        video_length=f,
        num_inference_steps=args.steps,
        guidance_scale=config.cfg_scale,
        generator=torch.manual_seed(42),
        motion_scale=[config.pose_weight, config.face_weight, config.lip_weight],
        callback=on_step,
    )
    # Step i ends at marks[i]; the first begins when the reference pass ends.
    steps = [b - a for a, b in zip(reference_end[-1:] + marks[:-1], marks)]

    fps, rate = config.data.export_video.fps, config.data.driving_audio.sample_rate
    frames = math.ceil(args.audio_seconds * fps)
    frames += (-frames) % f
    samples = frames * (rate // fps)
    audio = torch.sin(torch.arange(samples, dtype=torch.float32) * 0.07) * 0.1
    t = time.perf_counter()
    normed = (audio - audio.mean()) / torch.sqrt(audio.var() + 1e-7)
    out = wav2vec(normed.unsqueeze(0), seq_len=frames, output_hidden_states=True)
    torch.stack(out.hidden_states[1:], dim=1)
    wav2vec2_s = time.perf_counter() - t

    print(
        json.dumps(
            {
                "size": size,
                "frames": f,
                "motion_frames": m,
                "cfg_rows": 2 if config.cfg_scale > 1.0 else 1,
                "audio_seconds": args.audio_seconds,
                "audio_frames": frames,
                "reference_s": sum(encode_s) + sum(reference_s) + audio_proj_s,
                "unet_step_s": statistics.median(steps[1:]),
                "first_step_s": steps[0],
                "decode_s": sum(decode_s),
                "wav2vec2_s": wav2vec2_s,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
