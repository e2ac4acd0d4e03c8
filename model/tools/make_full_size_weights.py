#!/usr/bin/env python3
"""Write full-size RANDOM Hallo2 weights in the official file formats, from the key manifests.

The files have the names, key sets, shapes, dtypes and container layouts of the real checkpoints
(see model/tests/fixtures/README.md, part A) but random values, so the candle loader, memory use
and timings can be exercised without downloading the real weights:

  <out>/pretrained_models/hallo2/net.pth                              torch.save zip, F16 (~4.85 GB)
  <out>/pretrained_models/stable-diffusion-v1-5/unet/config.json      SD-1.5 UNet config
  <out>/pretrained_models/sd-vae-ft-mse/diffusion_pytorch_model.safetensors + config.json (F32)
  <out>/pretrained_models/wav2vec/wav2vec2-base-960h/model.safetensors + config.json
                                                         + preprocessor_config.json (F32)

Only the Python 3 standard library and numpy are needed (no torch). Everything is streamed tensor
by tensor, so memory stays far below one file's size.

net.pth is laid out as torch 2.2's `torch.save` writes it (PyTorchStreamWriter on miniz): a stored
(uncompressed) zip whose records live under `<file stem>/` (`net/`): `data.pkl` (pickle protocol 2
of one flat dict {key: torch._utils._rebuild_tensor_v2(persistent storage, 0, size, stride, False,
OrderedDict())} with persistent ids ('storage', torch.HalfStorage, '<n>', 'cpu', numel)),
`byteorder`, `data/<n>` (raw little-endian storages, in sorted-string order of <n>), `version`
and `.data/serialization_id`; every payload 64-byte aligned through an 'FB' padding extra field,
data descriptors after each record, zip64 extra fields for offsets >= 4 GiB and a zip64 end of
central directory. Written from the tiny official net.pth's key list, data.pkl is byte-identical
to the official one and the file has the same length (checked by model/tests/integration/pth_writer.rs).

Values: N(0, 0.02) everywhere, except 1-D `.weight`s under a *norm* module and weight-norm
magnitudes (`weight_g`), which are 1 + N(0, 0.02), and the motion modules' `pos_encoder.pe`
buffers, which are the real sinusoid table. Each tensor has its own seeded stream, so a file is
reproducible and independent of the other files.

Usage:
  python3 model/tools/make_full_size_weights.py OUT_DIR [--only net|vae|wav2vec] [--seed 0]

Needs numpy (any 1.x/2.x; checked with 2.4). Where the system python has none:
  python3 -m venv /work/venv && /work/venv/bin/pip install numpy
  /work/venv/bin/python model/tools/make_full_size_weights.py OUT_DIR
and run `cargo test -p model --test pth_writer` with HALLO2_PYTHON=/work/venv/bin/python.

Measured on the 2-core dev machine: `--only vae` (335 MB) 2.1 s, `--only wav2vec` (378 MB) 2.3 s,
63-72 MB peak RSS; net.pth (4.85 GB) is estimated at ~45 s of value generation plus the disk write.
The SD-1.5 UNet safetensors and the AnimateDiff motion-module checkpoint are not written: the
official loader overwrites them completely with net.pth, and this crate reads net.pth only.
"""

import argparse
import collections
import json
import math
import os
import pickle
import random
import sys
import time
import types
import zlib

try:
    import numpy as np
except ImportError:
    raise SystemExit("make_full_size_weights.py needs numpy: python3 -m venv /work/venv && "
                     "/work/venv/bin/pip install numpy, then run it with /work/venv/bin/python")

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MANIFESTS = os.path.join(HERE, "..", "tests", "fixtures", "manifests")
TINY_MODELS = os.path.join(HERE, "..", "tests", "fixtures", "hallo2-tiny", "pretrained_models")

U32_MAX = 0xFFFFFFFF
ALIGNMENT = 64  # caffe2::serialize::kFieldAlignment

NUMPY_DTYPES = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4")}
TORCH_STORAGE_NAMES = {"F16": "HalfStorage", "F32": "FloatStorage"}

# ------------------------------------------------------------------------------------- values


def tensor_values(key, shape, dtype, seed, index):
    """The random (or, for pos_encoder.pe, exact) values of one tensor, as a numpy array."""
    numel = math.prod(shape)
    if key.endswith("pos_encoder.pe"):
        _, max_len, d_model = shape
        return sinusoid_table(max_len, d_model).reshape(shape).astype(NUMPY_DTYPES[dtype])
    rng = np.random.default_rng([seed, index])
    values = rng.standard_normal(numel, dtype=np.float32)
    values *= np.float32(0.02)
    if is_scale(key, shape):
        values += np.float32(1.0)
    return values.reshape(shape).astype(NUMPY_DTYPES[dtype])


def is_scale(key, shape):
    """GroupNorm / LayerNorm scales and weight-norm magnitudes: values around 1."""
    parts = key.split(".")
    if parts[-1] == "weight_g":
        return True
    return parts[-1] == "weight" and len(shape) == 1 and any("norm" in p for p in parts[:-1])


def sinusoid_table(max_len, d_model):
    """AnimateDiff `PositionalEncoding.pe` (hallo/models/motion_module.py):
    pe[p, 2i] = sin(p * exp(2i * -ln(10000)/d)), pe[p, 2i+1] = cos(same).

    torch forms the exponent and the angle in float32 and evaluates exp/sin/cos in float32 to
    within an ulp; here the float32 inputs go through float64 exp/sin/cos rounded once to
    float32, which reproduces the official (F16-stored) tables of the tiny fixture exactly."""
    scale = np.float32(-math.log(10000.0) / d_model)
    exponent = np.arange(0, d_model, 2, dtype=np.float32) * scale
    div_term = np.exp(exponent.astype(np.float64)).astype(np.float32)
    angle = (np.arange(max_len, dtype=np.float32)[:, None] * div_term).astype(np.float64)
    pe = np.zeros((max_len, d_model), dtype=np.float32)
    pe[:, 0::2] = np.sin(angle).astype(np.float32)
    pe[:, 1::2] = np.cos(angle).astype(np.float32)
    return pe


# ----------------------------------------------------------------------- torch zip container


class TorchZipWriter:
    """A stored zip in the byte layout of torch's PyTorchStreamWriter (miniz, zip64 mode).

    `zip64_threshold` only exists for tests: offsets/sizes >= it get zip64 fields as if they were
    >= 4 GiB, so the zip64 path can be checked on a small file."""

    def __init__(self, path, zip64_threshold=U32_MAX):
        self.file = open(path, "wb")
        self.archive_name = os.path.splitext(os.path.basename(path))[0]
        self.offset = 0
        self.entries = []  # (name bytes, crc, size, local header offset)
        self.threshold = zip64_threshold

    def _write(self, data):
        self.file.write(data)
        self.offset += len(data)

    def _padding(self, name_len, size):
        """caffe2::serialize::detail::getPadding: an 'FB' extra field that moves the payload to
        the next multiple of 64 (accounting for the zip64 local extra when one is written)."""
        start = self.offset + 30 + name_len + 4
        if size >= self.threshold or self.offset >= self.threshold:
            start += 4
            if size >= self.threshold:
                start += 16
            if self.offset >= self.threshold:
                start += 8
        pad = (-start) % ALIGNMENT
        return b"FB" + pad.to_bytes(2, "little") + b"Z" * pad

    def _zip64_extra(self, size, header_offset):
        """mz_zip_writer_create_zip64_extra_data: id 1, then the fields that overflow."""
        fields = b""
        if size >= self.threshold:
            fields += size.to_bytes(8, "little") * 2  # uncompressed, compressed
        if header_offset >= self.threshold:
            fields += header_offset.to_bytes(8, "little")
        if not fields:
            return b""
        return (1).to_bytes(2, "little") + len(fields).to_bytes(2, "little") + fields

    def write_record(self, name, chunks, size):
        """Writes one stored record of `size` bytes produced by the iterable `chunks`."""
        full_name = f"{self.archive_name}/{name}".encode()
        header_offset = self.offset
        zip64 = self._zip64_extra(size, header_offset)
        padding = self._padding(len(full_name), size)
        extra = zip64 + padding
        # Local header: version 0, flags 0x808 (data descriptor, UTF-8), stored, no time, CRC
        # and sizes deferred to the data descriptor.
        self._write(
            (0x04034B50).to_bytes(4, "little")
            + (0).to_bytes(2, "little")
            + (0x0808).to_bytes(2, "little")
            + bytes(2 * 3 + 4 * 3)  # method, time, date, CRC, sizes
            + len(full_name).to_bytes(2, "little")
            + len(extra).to_bytes(2, "little")
        )
        self._write(full_name)
        self._write(extra)
        if self.offset % ALIGNMENT != 0:
            raise RuntimeError(f"{name}: payload not {ALIGNMENT}-byte aligned")
        crc = 0
        written = 0
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
            written += len(chunk)
            self._write(chunk)
        if written != size:
            raise RuntimeError(f"{name}: wrote {written} bytes, expected {size}")
        descriptor = (0x08074B50).to_bytes(4, "little") + crc.to_bytes(4, "little")
        if zip64:
            descriptor += size.to_bytes(8, "little") * 2
        else:
            descriptor += size.to_bytes(4, "little") * 2
        self._write(descriptor)
        self.entries.append((full_name, crc, size, header_offset))

    def write_bytes(self, name, data):
        self.write_record(name, [data], len(data))

    def close(self, serialization_id):
        self.write_bytes("version", b"3\n")
        self.write_bytes(".data/serialization_id", serialization_id.encode())
        cd_offset = self.offset
        for full_name, crc, size, header_offset in self.entries:
            extra = self._zip64_extra(size, header_offset)
            # A field that overflows is written as 0xFFFFFFFF; readers then take the zip64 extra.
            size32 = U32_MAX if size >= self.threshold else size
            ofs32 = U32_MAX if header_offset >= self.threshold else header_offset
            self._write(
                (0x02014B50).to_bytes(4, "little")
                + (0).to_bytes(2, "little")  # version made by
                + (0).to_bytes(2, "little")  # version needed (stored)
                + (0x0808).to_bytes(2, "little")
                + bytes(2 * 3)  # method, time, date
                + crc.to_bytes(4, "little")
                + size32.to_bytes(4, "little") * 2
                + len(full_name).to_bytes(2, "little")
                + len(extra).to_bytes(2, "little")
                + bytes(2 * 3 + 4)  # comment length, disk, internal attrs, external attrs
                + ofs32.to_bytes(4, "little")
            )
            self._write(full_name)
            self._write(extra)
        cd_size = self.offset - cd_offset
        count = len(self.entries)
        zip64_eocd = self.offset
        # Zip64 end of central directory record + locator (miniz always writes them in zip64 mode).
        self._write(
            (0x06064B50).to_bytes(4, "little")
            + (44).to_bytes(8, "little")
            + (0x031E).to_bytes(2, "little")
            + (0x002D).to_bytes(2, "little")
            + bytes(4 + 4)
            + count.to_bytes(8, "little") * 2
            + cd_size.to_bytes(8, "little")
            + cd_offset.to_bytes(8, "little")
        )
        self._write(
            (0x07064B50).to_bytes(4, "little")
            + bytes(4)
            + zip64_eocd.to_bytes(8, "little")
            + (1).to_bytes(4, "little")
        )
        self._write(
            (0x06054B50).to_bytes(4, "little")
            + bytes(4)
            + min(count, 0xFFFF).to_bytes(2, "little") * 2
            + min(cd_size, U32_MAX).to_bytes(4, "little")
            + (U32_MAX if cd_offset >= self.threshold else cd_offset).to_bytes(4, "little")
            + bytes(2)
        )
        self.file.close()


# ------------------------------------------------------------------------ torch-style pickle


def fake_torch_modules():
    """Stand-ins for `torch._utils._rebuild_tensor_v2` and `torch.<Dtype>Storage` that pickle as
    the same GLOBAL opcodes (the pickler looks them up by module and name)."""
    torch = sys.modules.get("torch")
    if torch is None or not getattr(torch, "_hallo2_fake", False):
        torch = types.ModuleType("torch")
        torch._hallo2_fake = True
        utils = types.ModuleType("torch._utils")

        def _rebuild_tensor_v2(*args):  # never called: only pickled by reference
            raise RuntimeError("placeholder")

        _rebuild_tensor_v2.__module__ = "torch._utils"
        _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
        utils._rebuild_tensor_v2 = _rebuild_tensor_v2
        torch._utils = utils
        for storage_name in TORCH_STORAGE_NAMES.values():
            setattr(torch, storage_name, type(storage_name, (), {"__module__": "torch"}))
        sys.modules["torch"] = torch
        sys.modules["torch._utils"] = utils
    return torch


class _Storage:
    def __init__(self, storage_type, key, numel):
        self.storage_type, self.key, self.numel = storage_type, key, numel


class _Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce_ex__(self, protocol):
        torch = sys.modules["torch"]
        stride = []
        step = 1
        for dim in reversed(self.shape):
            stride.append(step)
            step *= dim
        args = (
            self.storage,
            0,
            tuple(self.shape),
            tuple(reversed(stride)),
            False,
            collections.OrderedDict(),
        )
        return (torch._utils._rebuild_tensor_v2, args)


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            # Same tuple (and the same interned 'storage' / 'cpu' strings) as torch.save.
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def torch_data_pkl(tensors):
    """data.pkl for a flat dict of {key: (shape, dtype)} in the given order."""
    torch = fake_torch_modules()
    state = {}
    for index, (key, (shape, dtype)) in enumerate(tensors.items()):
        storage_type = getattr(torch, TORCH_STORAGE_NAMES[dtype])
        state[key] = _Tensor(_Storage(storage_type, str(index), math.prod(shape)), shape)
    buffer = __import__("io").BytesIO()
    _TorchPickler(buffer, protocol=2).dump(state)
    return buffer.getvalue()


def write_torch_state_dict(path, tensors, seed, zip64_threshold=U32_MAX, progress=None):
    """torch.save({key: tensor}) of random tensors {key: (shape, dtype)} into `path`."""
    writer = TorchZipWriter(path, zip64_threshold)
    writer.write_bytes("data.pkl", torch_data_pkl(tensors))
    writer.write_bytes("byteorder", b"little")
    items = list(tensors.items())
    # torch.save writes storages in sorted order of their string keys ('0', '1', '10', '100', ...).
    for key_str in sorted(str(i) for i in range(len(items))):
        index = int(key_str)
        key, (shape, dtype) = items[index]
        values = tensor_values(key, shape, dtype, seed, index)
        data = values.tobytes()
        writer.write_record(f"data/{key_str}", [data], len(data))
        if progress:
            progress(len(data))
    rand = random.Random(seed)
    writer.close(f"{rand.getrandbits(64):020d}{zlib.crc32(path.encode()):020d}")


# ----------------------------------------------------------------------------- safetensors


def write_safetensors(path, tensors, seed, progress=None):
    """A safetensors file of random tensors {key: (shape, dtype)}, keys in sorted order."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    ordered = sorted(tensors.items())
    for key, (shape, dtype) in ordered:
        nbytes = math.prod(shape) * NUMPY_DTYPES[dtype].itemsize
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * ((-len(header_bytes)) % 8)
    index_of = {key: i for i, key in enumerate(tensors)}
    with open(path, "wb") as f:
        f.write(len(header_bytes).to_bytes(8, "little"))
        f.write(header_bytes)
        for key, (shape, dtype) in ordered:
            data = tensor_values(key, shape, dtype, seed, index_of[key]).tobytes()
            f.write(data)
            if progress:
                progress(len(data))


# ------------------------------------------------------------------------------------ driver


def load_manifest(path):
    with open(path) as f:
        manifest = json.load(f)
    tensors = {k: (tuple(v["shape"]), v["dtype"]) for k, v in manifest["tensors"].items()}
    for key, (_, dtype) in tensors.items():
        if dtype not in NUMPY_DTYPES:
            raise SystemExit(f"{path}: {key} has unsupported dtype {dtype}")
    return manifest, tensors


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


class Progress:
    def __init__(self, label, total):
        self.label, self.total, self.done = label, total, 0
        self.start = self.last = time.time()

    def __call__(self, nbytes):
        self.done += nbytes
        now = time.time()
        if now - self.last > 5 or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9) / 1e6
            print(f"  {self.label}: {self.done / 1e9:.2f}/{self.total / 1e9:.2f} GB ({rate:.0f} MB/s)",
                  flush=True)


def total_bytes(tensors):
    return sum(math.prod(s) * NUMPY_DTYPES[d].itemsize for s, d in tensors.values())


def make_net(out, manifest_path, unet_manifest_path, seed, zip64_threshold):
    manifest, tensors = load_manifest(manifest_path)
    path = os.path.join(out, manifest["file"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    print(f"{path}: {len(tensors)} tensors, {total_bytes(tensors) / 1e9:.2f} GB", flush=True)
    write_torch_state_dict(path, tensors, seed, zip64_threshold,
                           Progress("net.pth", total_bytes(tensors)))
    if unet_manifest_path:
        unet_manifest, _ = load_manifest(unet_manifest_path)
        config_path = os.path.join(out, os.path.dirname(unet_manifest["file"]), "config.json")
        os.makedirs(os.path.dirname(config_path), exist_ok=True)
        write_json(config_path, unet_manifest["config"])
        print(f"{config_path}")


def make_safetensors(out, manifest_path, seed, label, extra_configs):
    manifest, tensors = load_manifest(manifest_path)
    path = os.path.join(out, manifest["file"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    print(f"{path}: {len(tensors)} tensors, {total_bytes(tensors) / 1e9:.2f} GB", flush=True)
    write_safetensors(path, tensors, seed, Progress(label, total_bytes(tensors)))
    for name, value in extra_configs(manifest).items():
        config_path = os.path.join(os.path.dirname(path), name)
        write_json(config_path, value)
        print(config_path)


def vae_configs(manifest):
    return {"config.json": manifest["config"]} if "config" in manifest else {}


def wav2vec_configs(manifest):
    """The tiny config.json's structure (as transformers 4.39.2 writes it) with the official
    values of the manifest, and the (size-independent) preprocessor config."""
    if "config" not in manifest:
        return {}
    tiny_dir = os.path.join(TINY_MODELS, "wav2vec", "wav2vec2-base-960h")
    with open(os.path.join(tiny_dir, "config.json")) as f:
        config = json.load(f)
    config.update(manifest["config"])
    config["output_hidden_size"] = config["hidden_size"]
    with open(os.path.join(tiny_dir, "preprocessor_config.json")) as f:
        preprocessor = json.load(f)
    return {"config.json": dict(sorted(config.items())), "preprocessor_config.json": preprocessor}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output root; files go to OUT/pretrained_models/...")
    parser.add_argument("--only", choices=["net", "vae", "wav2vec"], help="write one file only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--manifests", default=DEFAULT_MANIFESTS, help="folder of manifests")
    parser.add_argument("--net-manifest", help="manifest for net.pth (default: hallo2_net.pth.json)")
    parser.add_argument("--vae-manifest", help="manifest for the VAE (default: sd_vae_ft_mse.json)")
    parser.add_argument("--wav2vec-manifest",
                        help="manifest for wav2vec2 (default: wav2vec2_base_960h.json)")
    parser.add_argument("--zip64-threshold", type=int, default=U32_MAX,
                        help=argparse.SUPPRESS)  # tests only: force zip64 fields on small files
    args = parser.parse_args()

    start = time.time()
    if args.only in (None, "net"):
        net = args.net_manifest or os.path.join(args.manifests, "hallo2_net.pth.json")
        unet = None if args.net_manifest else os.path.join(args.manifests, "sd15_unet.json")
        make_net(args.out, net, unet, args.seed, args.zip64_threshold)
    if args.only in (None, "vae"):
        vae = args.vae_manifest or os.path.join(args.manifests, "sd_vae_ft_mse.json")
        make_safetensors(args.out, vae, args.seed, "vae", vae_configs)
    if args.only in (None, "wav2vec"):
        w2v = args.wav2vec_manifest or os.path.join(args.manifests, "wav2vec2_base_960h.json")
        make_safetensors(args.out, w2v, args.seed, "wav2vec2", wav2vec_configs)
    print(f"done in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
