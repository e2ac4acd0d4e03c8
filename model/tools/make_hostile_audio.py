#!/usr/bin/env python3
"""Makes model/tests/fixtures/speech/hostile/: small audio files whose headers declare sizes,
durations or offsets far beyond any limit (regression inputs for the decoder's checks, and seeds
for the audio fuzz target). Each comes from a real fixture with one declared quantity changed.

Run from the repository root: python3 model/tools/make_hostile_audio.py
"""
import struct
from pathlib import Path

SPEECH = Path("model/tests/fixtures/speech")
OUT = SPEECH / "hostile"


def boxes(data, start, end):
    """(offset, size, kind) of the boxes in data[start:end] (32-bit sizes only)."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        assert size >= 8, "32-bit box sizes only"
        yield at, size, kind
        at += size


def path_to(data, kinds):
    """Offsets and sizes of the boxes along `kinds` (container boxes have their children
    right after the 8-byte header)."""
    chain, start, end = [], 0, len(data)
    for kind in kinds:
        at, size, _ = next(b for b in boxes(data, start, end) if b[2] == kind)
        chain.append((at, size))
        start, end = at + 8, at + size
    return chain


def replace_payload(data, kinds, payload):
    """The file with the payload of the box at `kinds` replaced; every enclosing size fixed."""
    data = bytearray(data)
    chain = path_to(data, kinds)
    at, size = chain[-1]
    delta = len(payload) + 8 - size
    data[at + 8:at + size] = payload
    for box_at, box_size in chain:
        struct.pack_into(">I", data, box_at, box_size + delta)
    return bytes(data)


def payload(data, kinds):
    at, size = path_to(data, kinds)[-1]
    return data[at + 8:at + size]


ELST = [b"moov", b"trak", b"edts", b"elst"]
MVHD = [b"moov", b"mvhd"]


def elst_v0(entries):
    out = struct.pack(">BxxxI", 0, len(entries))
    for duration, media_time in entries:
        out += struct.pack(">Iihh", duration, media_time, 1, 0)
    return out


def elst_v1(entries):
    out = struct.pack(">BxxxI", 1, len(entries))
    for duration, media_time in entries:
        out += struct.pack(">Qqhh", duration, media_time, 1, 0)
    return out


def main():
    OUT.mkdir(exist_ok=True)
    m4a = (SPEECH / "variants/speech_48k_mono.m4a").read_bytes()
    old = payload(m4a, ELST)
    assert old[0] == 0 and struct.unpack(">I", old[4:8])[0] == 1, "one v0 entry"
    duration, media_time = struct.unpack(">Ii", old[8:16])
    files = {
        # The review's file: an empty edit of 2^32 - 1 movie ticks (49 days) before the audio.
        "m4a_empty_edit_u32.m4a": replace_payload(
            m4a, ELST, elst_v0([(0xFFFF_FFFF, -1), (duration, media_time)])),
        # Two 64-bit empty edits whose sum overflows 64 bits.
        "m4a_empty_edits_overflow.m4a": replace_payload(
            m4a, ELST, elst_v1([(1 << 63, -1), (1 << 63, -1), (duration, media_time)])),
        # A normal edit that starts 2^62 media ticks in (past the end of any audio).
        "m4a_skip_2e62.m4a": replace_payload(
            m4a, ELST, elst_v1([(duration, 1 << 62)])),
        # An edit list that says it has 2^32 - 1 entries.
        "m4a_elst_count_lies.m4a": replace_payload(
            m4a, ELST, struct.pack(">BxxxI", 0, 0xFFFF_FFFF) + old[8:]),
    }
    # The movie timescale cut to 1 tick per second: the same empty edit is 136 years.
    mvhd = bytearray(payload(m4a, MVHD))
    assert mvhd[0] == 0
    struct.pack_into(">I", mvhd, 12, 1)
    files["m4a_timescale_1.m4a"] = replace_payload(
        files["m4a_empty_edit_u32.m4a"], MVHD, bytes(mvhd))

    # A WAV whose header declares 4 GiB of 384 kHz stereo float (the data is 1 s of 16 kHz).
    wav = (SPEECH / "sense_and_sensibility_01_austen_64kb-0880.wav").read_bytes()
    assert wav[36:40] == b"data"
    body = wav[44:44 + 32000]
    header = bytearray(wav[:44])
    struct.pack_into("<HHIIHH", header, 20, 3, 2, 384_000, 384_000 * 8, 8, 32)
    struct.pack_into("<I", header, 4, 0xFFFF_FFF0)
    struct.pack_into("<I", header, 40, 0xFFFF_FFF0 - 36)
    files["wav_declares_4gib.wav"] = bytes(header) + body
    # A WAV with 0 channels, and one with a 0 Hz rate.
    header = bytearray(wav[:44])
    struct.pack_into("<H", header, 22, 0)
    files["wav_zero_channels.wav"] = bytes(header) + body
    header = bytearray(wav[:44])
    struct.pack_into("<I", header, 24, 0)
    files["wav_zero_rate.wav"] = bytes(header) + body
    # 65535 channels (the block size field wraps, as it does in such a header).
    header = bytearray(wav[:44])
    struct.pack_into("<HHIIHH", header, 20, 1, 0xFFFF, 16_000, 16_000 * 2 * 0xFFFF & 0xFFFF_FFFF,
                     2 * 0xFFFF & 0xFFFF, 16)
    files["wav_65535_channels.wav"] = bytes(header) + body

    for name, data in files.items():
        (OUT / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
