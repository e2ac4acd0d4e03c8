// Starts the real studio server (and, when asked, the fake Hub) for one test: its own config
// file, port, cache and weights folder, all under a temporary directory.
//
// The binaries are the ones `scripts/test.sh` builds (`cargo leptos build` for the server and the
// site under target/site, `cargo build --bin fake_hub`); SERVER_BIN / FAKE_HUB_BIN override them.

import { test } from "@playwright/test";
import { ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

export const REPO = path.resolve(__dirname, "../..");
export const TINY_WEIGHTS = path.join(REPO, "model/tests/fixtures/hallo2-tiny/pretrained_models");
const SERVER_BIN = process.env.SERVER_BIN ?? path.join(REPO, "target/debug/server");
const FAKE_HUB_BIN = process.env.FAKE_HUB_BIN ?? path.join(REPO, "target/debug/fake_hub");
const SITE_ROOT = process.env.LEPTOS_SITE_ROOT ?? path.join(REPO, "target/site");

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function waitFor(what: string, ms: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/** A temporary folder removed by `cleanup`. */
export function scratchDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "hallo2-e2e-"));
}

/** Copies the tiny official-format weights into `dir` (about 21 MB). */
export function copyTinyWeights(dir: string): string {
  const to = path.join(dir, "pretrained_models");
  fs.cpSync(TINY_WEIGHTS, to, { recursive: true });
  return to;
}

export interface FakeHub {
  endpoint: string;
  stop(): Promise<void>;
}

/** The fake Hub serving the real repository's tree (hub-layout.md) with the tiny weights in it,
 *  each transfer throttled to `bytesPerS`. */
export async function startFakeHub(bytesPerS: number): Promise<FakeHub> {
  const child = spawn(
    FAKE_HUB_BIN,
    [
      "--root", TINY_WEIGHTS,
      "--layout", path.join(REPO, "model/tests/fixtures/hub-layout.md"),
      "--repo", "fudan-generative-ai/hallo2",
      "--throttle-bytes-per-s", String(bytesPerS),
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const endpoint = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const m = out.match(/HF_ENDPOINT=(\S+)/);
      if (m) resolve(m[1]);
    });
    child.once("exit", (code) => reject(new Error(`fake_hub exited with ${code}`)));
  });
  return { endpoint, stop: () => stopChild(child) };
}

export interface StudioOptions {
  /** `[weights]` of the config: a local folder, or the fake Hub. */
  weights: { local: string } | { hub: string; cache: string };
  /** Extra environment (e.g. DISABLE_BACKEND). */
  env?: Record<string, string>;
  /** More TOML at the end of the config (e.g. a `[cluster]` table). */
  extraConfig?: string;
}

export interface Studio {
  url: string;
  dir: string;
  logs(): string;
  stop(): Promise<void>;
}

/** Starts the studio server and waits until it answers `/health/live` (the model loads after). */
export async function startStudio(dir: string, opts: StudioOptions): Promise<Studio> {
  const port = await freePort();
  const weights =
    "local" in opts.weights
      ? `source = "local"\npath = ${JSON.stringify(opts.weights.local)}\n`
      : `source = "hub"\nendpoint = ${JSON.stringify(opts.weights.hub)}\n` +
        `hf_cache = ${JSON.stringify(opts.weights.cache)}\nrevision = "main"\n`;
  const config = path.join(dir, "studio.toml");
  fs.writeFileSync(
    config,
    [
      `bind = "127.0.0.1:${port}"`,
      `load = "eager"`,
      `device = "cpu"`,
      `dtype = "f32"`,
      `inference = ${JSON.stringify(path.join(REPO, "configs/inference/long_tiny.yaml"))}`,
      `cache_dir = ${JSON.stringify(path.join(dir, "cache"))}`,
      `log_dir = ${JSON.stringify(path.join(dir, "logs"))}`,
      `data_dir = ${JSON.stringify(path.join(dir, "data"))}`,
      "",
      "[weights]",
      weights,
      "[warmup]",
      "enabled = true",
      "steps = 1",
      "",
      opts.extraConfig ?? "",
    ].join("\n"),
  );
  let output = "";
  const child = spawn(SERVER_BIN, ["--config", config], {
    cwd: REPO,
    env: {
      ...process.env,
      LEPTOS_SITE_ROOT: SITE_ROOT,
      LEPTOS_OUTPUT_NAME: "hallo2-studio",
      RUST_LOG: "info",
      ...opts.env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout!.on("data", (c: Buffer) => (output += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (output += c.toString()));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`${url}/health/live`, 30_000, async () => {
    if (child.exitCode !== null) throw new Error(`server exited: ${output}`);
    return (await fetch(`${url}/health/live`)).ok;
  });
  return { url, dir, logs: () => output, stop: () => stopChild(child) };
}

export interface Nats {
  url: string;
  stop(): Promise<void>;
}

/** A `nats-server -js` of the test's own (Debian's package; NATS_SERVER names another binary)
 *  on free loopback ports, its store under `dir`. */
export async function startNats(dir: string): Promise<Nats> {
  const binary =
    process.env.NATS_SERVER ??
    (["/usr/sbin/nats-server", "/usr/bin/nats-server"].find((p) => fs.existsSync(p)) ?? "nats-server");
  const [port, monitor] = [await freePort(), await freePort()];
  const child = spawn(
    binary,
    ["-js", "-a", "127.0.0.1", "-p", String(port), "-m", String(monitor), "-sd", path.join(dir, "jetstream")],
    { stdio: "ignore" },
  );
  await waitFor("nats-server", 30_000, async () => {
    if (child.exitCode !== null) throw new Error(`nats-server exited with ${child.exitCode}`);
    return (await fetch(`http://127.0.0.1:${monitor}/healthz?js-enabled-only=true`)).ok;
  });
  return { url: `nats://127.0.0.1:${port}`, stop: () => stopChild(child) };
}

/** The backend's status as the API reports it. */
export async function backendStatus(studio: Studio): Promise<any> {
  return (await fetch(`${studio.url}/api/backend`)).json();
}

/** What one test started, cleaned up after it; `problems` collects page errors, console errors
 * and 4xx/5xx responses (503 is /health/ready's answer while loading). */
export interface Session {
  dir: string;
  studio?: Studio;
  hub?: FakeHub;
  problems: string[];
}

/** Registers the per-test set-up and clean-up of a spec file. */
export function useSession(): Session {
  const s: Session = { dir: "", problems: [] };
  test.beforeEach(async ({ page }) => {
    s.dir = scratchDir();
    s.problems = [];
    page.on("pageerror", (e) => s.problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") s.problems.push(`console error: ${m.text()}`);
    });
    page.on("response", (r) => {
      if (r.status() >= 400 && r.status() !== 503) s.problems.push(`${r.status()} ${r.url()}`);
    });
  });
  test.afterEach(async ({}, testInfo) => {
    if (testInfo.status !== testInfo.expectedStatus && s.studio) {
      console.log(`--- server output ---\n${s.studio.logs()}`);
    }
    await s.studio?.stop();
    await s.hub?.stop();
    s.studio = undefined;
    s.hub = undefined;
    fs.rmSync(s.dir, { recursive: true, force: true });
  });
  return s;
}
