// The studio's backend panel in a real browser, on the tiny official-format weights: the page is
// served before the model is loaded, every load stage moves live, reload keeps the state, a bad
// weight file fails with its name and Retry recovers, the backend can be disabled, and the
// page tells the state without JavaScript.

import { expect, Page, test } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  backendStatus,
  copyTinyWeights,
  startFakeHub,
  startStudio,
  useSession,
} from "./harness";

// Bytes per second per transfer: net.pth (9.7 MB) takes about 5 s, long enough to watch.
const THROTTLE = 2_000_000;
const READY_TIMEOUT = 150_000;

const s = useSession();

const title = (page: Page) => page.locator("#backend-title");
// A control inside the fieldset (Playwright reads `disabled` on form controls, not fieldsets).
const controls = (page: Page) => page.locator('#generate-controls input[name="pose_weight"]');
const stage = (page: Page, name: string) => page.locator(`li.stage[data-stage="${name}"]`);

/** Hydrated and subscribed to /api/events (the badge only exists after both). */
async function expectLive(page: Page) {
  await expect(page.locator("#stream-state")).toHaveText("live");
}

/** Bytes done of the download stage, from the stage's detail text ("3.1 MB / 11.3 MB · …"). */
async function downloadedMb(page: Page): Promise<number> {
  const text = (await stage(page, "download").locator(".stage-detail").textContent()) ?? "";
  const m = text.match(/^([\d.]+) (B|kB|MB)/);
  if (!m) return 0;
  const scale = { B: 1e-6, kB: 1e-3, MB: 1 }[m[2] as "B" | "kB" | "MB"];
  return parseFloat(m[1]) * scale;
}

test("(a) the page is up before the backend; download and component stages move live, then Ready", async ({ page }) => {
  const hub = s.hub = await startFakeHub(THROTTLE);
  const studio = s.studio = await startStudio(s.dir, { weights: { hub: hub.endpoint, cache: path.join(s.dir, "hf") } });

  await page.goto(studio.url);
  await expect(title(page)).toHaveText("Backend not ready");
  // Jobs can be queued while loading; they start when the model is ready.
  await expect(page.locator("#generate")).toHaveText("Queue (starts when the model is ready)");
  await expectLive(page);

  // The download stage runs and its bytes grow while we watch (per-file rows too).
  await expect(stage(page, "download")).toHaveAttribute("data-phase", "running");
  const first = await downloadedMb(page);
  await expect.poll(() => downloadedMb(page), { timeout: 20_000 }).toBeGreaterThan(first);
  await expect(stage(page, "download").locator("li.file").first()).toBeVisible();

  // Then the component stages: each goes running → done, in order, seen in the page.
  await expect(stage(page, "download")).toHaveAttribute("data-phase", "done", { timeout: 60_000 });
  // The vocal separator (the tiny weights' stand-in) is a stage of its own, before the UNets.
  await expect(stage(page, "vocal_separator")).toContainText("Vocal separator (Kim_Vocal_2)");
  await expect(stage(page, "vocal_separator")).toHaveAttribute("data-phase", "done", { timeout: 60_000 });
  await expect(stage(page, "vae")).toHaveAttribute("data-phase", /running|done/, { timeout: 60_000 });
  await expect(stage(page, "denoising_unet")).toHaveAttribute("data-phase", "done", { timeout: 60_000 });

  await expect(title(page)).toHaveText("Ready", { timeout: READY_TIMEOUT });
  await expect(page.locator("#backend-summary")).toContainText("loaded on cpu (f32)");
  await expect(controls(page)).toBeEnabled();
  await expect(page.locator("#generate")).toHaveText("Generate");
  const status = await backendStatus(studio);
  expect(status.state.state).toBe("ready");
  expect(s.problems).toEqual([]);
});

test("(b) reloading the page mid-load shows the same load, not a fresh one", async ({ page }) => {
  const hub = s.hub = await startFakeHub(THROTTLE);
  const studio = s.studio = await startStudio(s.dir, { weights: { hub: hub.endpoint, cache: path.join(s.dir, "hf") } });

  await page.goto(studio.url);
  await expectLive(page);
  await expect(stage(page, "download")).toHaveAttribute("data-phase", "running");
  await expect.poll(() => downloadedMb(page), { timeout: 20_000 }).toBeGreaterThan(1);
  const before = await downloadedMb(page);

  await page.reload();
  // Server-rendered from the current state: still downloading, at least as far as before.
  await expect(title(page)).toHaveText("Backend not ready");
  await expect(stage(page, "download")).toHaveAttribute("data-phase", /running|done/);
  expect(await downloadedMb(page)).toBeGreaterThanOrEqual(before);
  await expect(stage(page, "resolve")).toHaveAttribute("data-phase", "done");
  await expectLive(page);
  // The same load goes on to Ready; it was not restarted by the reload.
  await expect(title(page)).toHaveText("Ready", { timeout: READY_TIMEOUT });
  expect((await backendStatus(studio)).attempts).toBe(1);
  expect(s.problems).toEqual([]);
});

test("(c) a truncated weight file fails naming it; fixing it and pressing Retry gets to Ready", async ({ page }) => {
  const weights = copyTinyWeights(s.dir);
  const vae = path.join(weights, "sd-vae-ft-mse/diffusion_pytorch_model.safetensors");
  const good = fs.readFileSync(vae);
  fs.writeFileSync(vae, good.subarray(0, good.length >> 1));
  const studio = s.studio = await startStudio(s.dir, { weights: { local: weights } });

  await page.goto(studio.url);
  await expect(title(page)).toHaveText("Failed", { timeout: READY_TIMEOUT });
  await expect(page.locator("#backend-error")).toContainText("diffusion_pytorch_model.safetensors");
  await expect(page.locator("#backend-hint")).not.toBeEmpty();
  await expectLive(page);

  fs.writeFileSync(vae, good);
  await page.locator("#backend-retry").click();
  await expect(title(page)).toHaveText("Ready", { timeout: READY_TIMEOUT });
  expect((await backendStatus(studio)).attempts).toBe(2);
  expect(s.problems).toEqual([]);
});

test("(c) a missing weight file fails naming it; restoring it and Retry gets to Ready", async ({ page }) => {
  const weights = copyTinyWeights(s.dir);
  const net = path.join(weights, "hallo2/net.pth");
  const aside = path.join(s.dir, "net.pth.aside");
  fs.renameSync(net, aside);
  const studio = s.studio = await startStudio(s.dir, { weights: { local: weights } });

  await page.goto(studio.url);
  await expect(title(page)).toHaveText("Failed", { timeout: READY_TIMEOUT });
  await expect(page.locator("#backend-error")).toContainText("net.pth");
  await expect(stage(page, "resolve")).toHaveAttribute("data-phase", "failed");
  await expectLive(page);

  fs.renameSync(aside, net);
  await page.locator("#backend-retry").click();
  await expect(title(page)).toHaveText("Ready", { timeout: READY_TIMEOUT });
  expect(s.problems).toEqual([]);
});

test("(d) DISABLE_BACKEND=true shows Backend disabled and loads nothing", async ({ page }) => {
  const studio = s.studio = await startStudio(s.dir, {
    weights: { local: copyTinyWeights(s.dir) },
    env: { DISABLE_BACKEND: "true" },
  });
  await page.goto(studio.url);
  await expect(title(page)).toHaveText("Backend disabled");
  await expectLive(page);
  await expect(controls(page)).toBeDisabled();
  const status = await backendStatus(studio);
  expect(status.state.state).toBe("disabled");
  expect(status.attempts).toBe(0);
  expect(studio.logs()).not.toContain("Loading Hallo2 model...");
  expect(s.problems).toEqual([]);
});

test("(e) without JavaScript the server-rendered page shows the current state", async ({ browser }) => {
  const hub = s.hub = await startFakeHub(THROTTLE);
  const studio = s.studio = await startStudio(s.dir, { weights: { hub: hub.endpoint, cache: path.join(s.dir, "hf") } });
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();

  await page.goto(studio.url);
  await expect(title(page)).toHaveText("Backend not ready");
  await expect(page.locator("#backend-status")).toHaveAttribute("data-state", "loading");
  await expect(stage(page, "download")).toHaveAttribute("data-phase", "running");
  await expect(page.locator("#stream-state")).toHaveCount(0); // nothing live without JS

  // Each navigation renders the state of that moment; after the load, Ready.
  await expect
    .poll(async () => {
      await page.reload();
      return title(page).textContent();
    }, { timeout: READY_TIMEOUT, intervals: [1000] })
    .toBe("Ready");
  await page.goto(`${studio.url}/status`);
  await expect(page.locator('.wf-row[data-stage="warmup"]')).toHaveAttribute("data-phase", "done");
  await context.close();
});
