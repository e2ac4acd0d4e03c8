#!/usr/bin/env python3
"""Soak test of the studio on the tiny profile, loopback only, bounded in time.

For --seconds (default 240): 100 SSE clients follow /api/events (reconnecting with
Last-Event-ID), a stream of submissions well past the queue's capacity, random cancels, a
/health/live probe every 0.25 s, and three `kill -9` restarts of the server at random moments.
Then it waits for every accepted job to end and checks:

- every accepted job ended exactly once, as completed or cancelled (its task.log has one final
  line; none lost, none stuck, none listed twice);
- every 429 had Retry-After;
- the server's RSS stayed under --max-rss-mb;
- no panic in the server's output.

It prints the figures (the README quotes them) and exits 1 when a check fails.
Usage: scripts/soak.sh (builds the server first) or python3 scripts/soak.py --server PATH.
Only the standard library.
"""
import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "model/tests/fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav"
PORTRAIT = ROOT / "model/tests/fixtures/face/astronaut.png"


def short_wav(seconds):
    """The first `seconds` of the 16 kHz mono speech fixture as a new WAV."""
    wav = SPEECH.read_bytes()
    assert wav[36:40] == b"data"
    data = wav[44:44 + int(seconds * 16000) * 2]
    header = bytearray(wav[:44])
    header[4:8] = (36 + len(data)).to_bytes(4, "little")
    header[40:44] = len(data).to_bytes(4, "little")
    return bytes(header) + data


def multipart(fields, files):
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
    for name, (filename, data) in files.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{filename}\"\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(out)


class Soak:
    def __init__(self, args):
        self.args = args
        self.scratch = Path(tempfile.mkdtemp(prefix="hallo2-soak-"))
        self.port = free_port()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.server = None
        self.restarts = 0
        self.accepted = []
        self.counts = {"sent": 0, "429": 0, "429_without_retry_after": 0, "other_4xx_5xx": 0,
                       "unanswered": 0, "cancels": 0, "sse_events": 0, "sse_reconnects": 0}
        self.live_ms = []
        self.max_rss = 0
        self.config = self.write_config()
        self.portrait = PORTRAIT.read_bytes()
        self.audio = short_wav(0.3)

    def write_config(self):
        toml = (
            f'bind = "127.0.0.1:{self.port}"\nload = "eager"\ndevice = "cpu"\ndtype = "f32"\n'
            f'inference = "{ROOT / "configs/inference/long_tiny.yaml"}"\n'
            f'cache_dir = "{self.scratch / "cache"}"\nlog_dir = "{self.scratch / "logs"}"\n'
            f'data_dir = "{self.scratch / "data"}"\ncheckpoint_seconds = 0.5\n'
            'vocal_separation = false\n'
            f'[weights]\nsource = "local"\n'
            f'path = "{ROOT / "model/tests/fixtures/hallo2-tiny/pretrained_models"}"\n'
            '[limits]\nqueue_capacity = 4\naudio_seconds = 20.0\nmin_free_bytes = 0\n'
            '[warmup]\nenabled = false\n'
        )
        path = self.scratch / "studio.toml"
        path.write_text(toml)
        return path

    # -- the server ---------------------------------------------------------------------------
    def start_server(self):
        log = open(self.scratch / f"server-{self.restarts}.log", "wb")
        self.server = subprocess.Popen(
            [self.args.server, "--config", str(self.config)], cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "info"})
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                self.request("GET", "/health/live", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the server did not start")

    def kill_and_restart(self):
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()
        self.restarts += 1
        self.start_server()

    def request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    # -- the load -----------------------------------------------------------------------------
    def sse_client(self):
        last_id = None
        while not self.stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
                conn.request("GET", "/api/events", headers=headers)
                resp = conn.getresponse()
                while not self.stop.is_set():
                    line = resp.fp.readline()
                    if not line:
                        break
                    if line.startswith(b"id:"):
                        last_id = int(line[3:].strip())
                        with self.lock:
                            self.counts["sse_events"] += 1
                conn.close()
            except (OSError, ValueError, http.client.HTTPException):
                pass
            with self.lock:
                self.counts["sse_reconnects"] += 1
            time.sleep(0.5)

    def submitter(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            ctype, body = multipart(
                {"steps": "1", "seed": str(n)},
                {"image_file": ("face.png", self.portrait), "audio_file": ("a.wav", self.audio)})
            with self.lock:
                self.counts["sent"] += 1
            try:
                status, headers, data = self.request(
                    "POST", "/api/v1/inference/hallo2", body, {"Content-Type": ctype})
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.counts["unanswered"] += 1
                time.sleep(0.2)
                continue
            with self.lock:
                if status == 200:
                    self.accepted.append(json.loads(data)["task_id"])
                elif status == 429:
                    self.counts["429"] += 1
                    if not any(k.lower() == "retry-after" for k in headers):
                        self.counts["429_without_retry_after"] += 1
                else:
                    self.counts["other_4xx_5xx"] += 1
            time.sleep(0.15)

    def canceller(self):
        while not self.stop.is_set():
            time.sleep(random.uniform(0.5, 2.0))
            with self.lock:
                ids = list(self.accepted)
            if not ids:
                continue
            try:
                self.request("DELETE", f"/api/v1/tasks/{random.choice(ids)}")
                with self.lock:
                    self.counts["cancels"] += 1
            except (OSError, http.client.HTTPException):
                pass

    def prober(self):
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                self.request("GET", "/health/live", timeout=5)
                with self.lock:
                    self.live_ms.append((time.perf_counter() - started) * 1000)
            except (OSError, http.client.HTTPException):
                pass  # a restart
            try:
                status = Path(f"/proc/{self.server.pid}/status").read_text()
                rss = int(next(l for l in status.splitlines() if l.startswith("VmRSS:")).split()[1])
                self.max_rss = max(self.max_rss, rss * 1024)
            except (OSError, StopIteration, ValueError):
                pass
            time.sleep(0.25)

    # -- the run ------------------------------------------------------------------------------
    def run(self):
        self.start_server()
        threads = [threading.Thread(target=self.sse_client, daemon=True)
                   for _ in range(self.args.sse)]
        threads += [threading.Thread(target=f, daemon=True)
                    for f in (self.submitter, self.canceller, self.prober)]
        for t in threads:
            t.start()
        started = time.time()
        kills = sorted(random.uniform(0.15, 0.85) * self.args.seconds for _ in range(3))
        for at in kills:
            time.sleep(max(0.0, started + at - time.time()))
            self.kill_and_restart()
        time.sleep(max(0.0, started + self.args.seconds - time.time()))
        self.stop.set()
        for t in threads:
            t.join(timeout=35)
        return self.check(time.time() - started)

    def final_states(self, ids, timeout):
        deadline = time.time() + timeout
        while True:
            states = {}
            for task_id in ids:
                status, _, data = self.request("GET", f"/api/v1/tasks/{task_id}")
                states[task_id] = json.loads(data)["status"] if status == 200 else f"http {status}"
            pending = [i for i, s in states.items() if s not in ("completed", "cancelled", "failed")]
            if not pending or time.time() > deadline:
                return states

    def check(self, ran_s):
        ids = list(self.accepted)
        states = self.final_states(ids, timeout=600)
        problems = []
        for task_id, state in states.items():
            if state not in ("completed", "cancelled"):
                problems.append(f"{task_id}: {state}")
                continue
            log = self.scratch / "data/jobs" / task_id / "task.log"
            finals = [l for l in log.read_text().splitlines()
                      if l.split(" ")[1:2] in (["completed"], ["cancelled"], ["failed"])]
            if len(finals) != 1:
                problems.append(f"{task_id}: {len(finals)} final lines in task.log")
        _, _, data = self.request("GET", "/api/v1/tasks")
        records = json.loads(data)["jobs"]
        listed = [r["id"] for r in records]
        if len(listed) != len(set(listed)):
            problems.append("a job is listed twice")
        missing = set(ids) - set(listed)
        if missing:
            problems.append(f"accepted but not listed: {sorted(missing)}")
        unfinished = [r["id"] for r in records
                      if r["state"] not in ("completed", "cancelled", "failed")]
        if unfinished:
            problems.append(f"jobs left unfinished: {unfinished}")
        if self.counts["429_without_retry_after"]:
            problems.append(f"{self.counts['429_without_retry_after']} 429s without Retry-After")
        if self.max_rss > self.args.max_rss_mb * 1e6:
            problems.append(f"RSS reached {self.max_rss / 1e6:.0f} MB")
        self.server.send_signal(signal.SIGTERM)
        self.server.wait(timeout=30)
        panics = [p.name for p in self.scratch.glob("server-*.log") if b"panicked" in p.read_bytes()]
        if panics:
            problems.append(f"panics in {panics}")

        by_state = {s: sum(1 for v in states.values() if v == s) for s in set(states.values())}
        live = sorted(self.live_ms) or [float("nan")]
        print(f"soak: {ran_s:.0f} s, {self.args.sse} SSE clients, {self.restarts} kill -9 restarts")
        print(f"  submissions: {self.counts['sent']} sent, {len(ids)} accepted, "
              f"{self.counts['429']} answered 429 (all with Retry-After: "
              f"{self.counts['429_without_retry_after'] == 0}), {self.counts['other_4xx_5xx']} "
              f"other errors, {self.counts['unanswered']} cut by a kill")
        print(f"  accepted jobs ended: {by_state}; cancel requests: {self.counts['cancels']}")
        print(f"  SSE: {self.counts['sse_events']} events, {self.counts['sse_reconnects']} reconnects")
        print(f"  /health/live: {len(self.live_ms)} probes, median {live[len(live) // 2]:.1f} ms, "
              f"p99 {live[int(len(live) * 0.99)]:.1f} ms, max {live[-1]:.1f} ms")
        print(f"  server peak RSS: {self.max_rss / 1e6:.0f} MB (bound {self.args.max_rss_mb} MB)")
        if problems:
            print("FAILED:\n  " + "\n  ".join(problems[:20]))
            print(f"  (scratch kept: {self.scratch})")
            return 1
        print("soak passed")
        return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default=str(ROOT / "target/debug/server"))
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--sse", type=int, default=100)
    parser.add_argument("--max-rss-mb", type=float, default=1500)
    args = parser.parse_args()
    random.seed(os.environ.get("SOAK_SEED"))
    sys.exit(Soak(args).run())


if __name__ == "__main__":
    main()
