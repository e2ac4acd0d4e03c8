// Generating in a real browser on the tiny profile with real inputs (astronaut.png and a
// LibriVox recording, copied into the repository): upload with previews and the face overlay,
// watch per-step progress and the ETA, play the result, download it and check it with ffprobe;
// cancel a running job; queue a job while the backend loads and see it start when ready.

import { expect, Page, test } from "@playwright/test";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { REPO, startFakeHub, startStudio, TINY_WEIGHTS, useSession } from "./harness";

const PORTRAIT = path.join(REPO, "model/tests/fixtures/face/astronaut.png");
const SPEECH = path.join(REPO, "model/tests/fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav");
const NO_FACE = path.join(REPO, "model/tests/fixtures/face/coffee.png");
const SPEECH_SECONDS = 2.99;
const READY_TIMEOUT = 150_000;

const s = useSession();

/** Picks the inputs, checks the previews and the overlay, sets the steps and submits. */
async function fillAndSubmit(page: Page, steps: number): Promise<string> {
  await page.locator("#image-input").setInputFiles(PORTRAIT);
  await expect(page.locator("#image-preview")).toBeVisible();
  // The pre-flight overlay: the face box and the 468-point mesh over the preview, Hallo2's
  // face and lip regions and its three soft masks.
  await expect(page.locator("#preflight-overlay rect.face-box")).toHaveCount(1);
  await expect(page.locator("#preflight-overlay circle.mesh")).toHaveCount(468);
  await expect(page.locator("#preflight-overlay rect.face-region")).toHaveCount(1);
  await expect(page.locator("#preflight-overlay rect.lip-region")).toHaveCount(1);
  await expect(page.locator("#preflight-overlay .soft-masks rect")).toHaveCount(3);
  await page.locator("#audio-input").setInputFiles(SPEECH);
  await expect(page.locator("#audio-duration")).toContainText(/3\.0 s of speech → \d+ frames of video/);
  await expect(page.locator("#waveform path.wave")).toBeVisible();
  await expect(page.locator("#audio-format")).toHaveText(/^pcm_s16le · 16 kHz · mono · peak -?\d+\.\d dBFS$/);
  // A fresh server has no finished job to measure a run time from yet.
  await expect(page.locator("#run-estimate")).toContainText("after the first finished job");
  await page.locator('input[name="steps"]').fill(String(steps));
  // Vocal separation is on in this studio, so the box is offered, checked.
  await expect(page.locator("#separate-vocals")).toBeEnabled();
  await expect(page.locator("#separate-vocals")).toBeChecked();
  // The job's page shows the job at once, never "No such job" while its first event travels.
  await page.evaluate(() => {
    const w = window as any;
    w.sawMissingJob = false;
    new MutationObserver(() => {
      if (document.body.textContent?.includes("No such job")) w.sawMissingJob = true;
    }).observe(document.body, { childList: true, subtree: true, characterData: true });
  });
  await page.locator("#generate").click();
  await page.waitForURL(/\/jobs\/[0-9a-f-]{36}$/);
  await expect(page.locator("#job-state")).toBeVisible();
  expect(await page.evaluate(() => (window as any).sawMissingJob)).toBe(false);
  return page.url().split("/").pop()!;
}

/** Sets a range input as a user letting go of it would (input, then change). */
async function slide(page: Page, name: string, value: number) {
  await page.locator(`input[name="${name}"]`).evaluate((el: HTMLInputElement, v) => {
    el.value = String(v);
    el.dispatchEvent(new Event("input", { bubbles: true }));
    el.dispatchEvent(new Event("change", { bubbles: true }));
  }, value);
}

const regionWidth = (page: Page) =>
  page.locator("#preflight-overlay rect.face-region").evaluate((r) => Number(r.getAttribute("width")));

function ffprobe(file: string): any {
  const out = spawnSync("ffprobe", ["-v", "error", "-print_format", "json", "-show_streams", file], {
    encoding: "utf8",
  });
  expect(out.status, out.stderr).toBe(0);
  return JSON.parse(out.stdout);
}

test("upload, see the face overlay, generate with live progress and ETA, play and download the MP4", async ({ page }) => {
  const studio = s.studio = await startStudio(s.dir, { weights: { local: TINY_WEIGHTS } });
  await page.goto(studio.url);
  await expect(page.locator("#backend-title")).toHaveText("Ready", { timeout: READY_TIMEOUT });

  // A portrait without a face is refused next to its field before anything is submitted.
  const before = s.problems.length;
  await page.locator("#image-input").setInputFiles(NO_FACE);
  await expect(page.locator('.field-error[data-field="image_file"]')).toContainText("face");
  await expect(page.locator("#preflight-overlay")).toHaveCount(0);
  // The browser reports the 422 as a failed resource: expected here, and only that.
  expect(s.problems.slice(before).every((p) => p.includes("422"))).toBe(true);
  s.problems.splice(before);

  // The face expand ratio redraws Hallo2's face region; the layers can be switched off.
  await page.locator("#image-input").setInputFiles(PORTRAIT);
  await expect(page.locator('.field-error[data-field="image_file"]')).toHaveCount(0);
  await expect(page.locator("#overlay-layers")).toContainText("face ×1.20");
  const narrow = await regionWidth(page);
  await slide(page, "face_expand_ratio", 1.8);
  await expect(page.locator("#overlay-layers")).toContainText("face ×1.80");
  expect(await regionWidth(page)).toBeGreaterThan(narrow);
  await page.locator("#layer-mesh").uncheck();
  await expect(page.locator("#preflight-overlay g.detection")).toBeHidden();
  await page.locator("#layer-mesh").check();
  await slide(page, "face_expand_ratio", 1.2);
  await expect(page.locator("#overlay-layers")).toContainText("face ×1.20");

  // A click on the waveform moves the player there, and the playhead follows.
  await page.locator("#audio-input").setInputFiles(SPEECH);
  const wave = page.locator("#waveform");
  const box = (await wave.boundingBox())!;
  await wave.click({ position: { x: box.width * 0.75, y: box.height / 2 } });
  const player = page.locator("#audio-preview");
  await expect
    .poll(() => player.evaluate((a: HTMLAudioElement) => a.currentTime))
    .toBeCloseTo(0.75 * SPEECH_SECONDS, 1);
  await expect
    .poll(async () => Number(await wave.locator("line.playhead").getAttribute("x1")))
    .toBeCloseTo(0.75 * 600, -1);

  const id = await fillAndSubmit(page, 6);
  // Per-step progress and an ETA while it generates.
  await expect(page.locator("#job-state")).toHaveText("generating", { timeout: 60_000 });
  await expect(page.locator("#job-steps")).toContainText(/clip \d+\/19 · step \d\/6/);
  await expect(page.locator("#job-eta")).toContainText("left");
  // The last finished frame appears once the first clip is done.
  await expect(page.locator("#job-frame")).toBeVisible({ timeout: 60_000 });
  const first = Number(await page.locator("#job-progress").getAttribute("value"));
  await expect
    .poll(async () => Number(await page.locator("#job-progress").getAttribute("value")), { timeout: 60_000 })
    .toBeGreaterThan(first);

  await expect(page.locator("#job-state")).toHaveText("completed", { timeout: 180_000 });
  await expect(page.locator("#job-seed")).toHaveText("42");
  // Separated first, as the official pipeline does (the box was left checked).
  await expect(page.locator("#job-vocals")).toHaveText(/^separated \(Kim_Vocal_2\.onnx \(MD5 [0-9a-f]{32}\)\)$/);

  // It plays in the page.
  const video = page.locator("#job-video");
  await expect(video).toBeVisible();
  await expect.poll(() => video.evaluate((v: HTMLVideoElement) => v.readyState), { timeout: 30_000 }).toBeGreaterThanOrEqual(1);
  const duration = await video.evaluate((v: HTMLVideoElement) => v.duration);
  expect(Math.abs(duration - SPEECH_SECONDS)).toBeLessThan(0.1);
  await video.evaluate((v: HTMLVideoElement) => {
    v.muted = true;
    return v.play();
  });
  await expect.poll(() => video.evaluate((v: HTMLVideoElement) => v.currentTime)).toBeGreaterThan(0);

  // It downloads as hallo2_<id>.mp4, H.264 yuv420p at 25 fps with an audio track, as long as
  // the speech (within one frame).
  const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#job-download").click()]);
  expect(download.suggestedFilename()).toBe(`hallo2_${id}.mp4`);
  const file = path.join(s.dir, "download.mp4");
  await download.saveAs(file);
  const streams = ffprobe(file).streams as any[];
  const v = streams.find((s) => s.codec_type === "video");
  expect(v.codec_name).toBe("h264");
  expect(v.pix_fmt).toBe("yuv420p");
  expect(v.r_frame_rate).toBe("25/1");
  expect(Math.abs(Number(v.duration) - SPEECH_SECONDS)).toBeLessThanOrEqual(1 / 25 + 1e-6);
  expect(streams.some((s) => s.codec_type === "audio")).toBe(true);

  // The history lists it with its thumbnail.
  await page.goto(`${studio.url}/jobs`);
  await expect(page.locator(`tr[data-job="${id}"]`)).toHaveAttribute("data-state", "completed");
  await expect(page.locator(`tr[data-job="${id}"] img.thumb`)).toBeVisible();
  expect(s.problems).toEqual([]);
});

test("a running job is cancelled from its page", async ({ page }) => {
  const studio = s.studio = await startStudio(s.dir, { weights: { local: TINY_WEIGHTS } });
  await page.goto(studio.url);
  await expect(page.locator("#backend-title")).toHaveText("Ready", { timeout: READY_TIMEOUT });
  await fillAndSubmit(page, 200);
  await expect(page.locator("#job-state")).toHaveText("generating", { timeout: 60_000 });
  await page.locator("#job-cancel").click();
  await expect(page.locator("#job-state")).toHaveText("cancelled", { timeout: 20_000 });
  await expect(page.locator("#job-video")).toHaveCount(0);
  expect(s.problems).toEqual([]);
});

test("a job submitted while the backend loads waits for the model and starts when ready", async ({ page }) => {
  // 1 MB/s: net.pth alone takes about 10 s, longer than filling in the form.
  const hub = s.hub = await startFakeHub(1_000_000);
  const studio = s.studio = await startStudio(s.dir, { weights: { hub: hub.endpoint, cache: path.join(s.dir, "hf") } });
  await page.goto(studio.url);
  await expect(page.locator("#backend-title")).toHaveText("Backend not ready");
  await fillAndSubmit(page, 3);
  await expect(page.locator("#job-state")).toHaveText("waiting_for_model");
  await expect(page.locator("#backend-title")).toHaveText("Ready", { timeout: READY_TIMEOUT });
  await expect(page.locator("#job-state")).toHaveText("completed", { timeout: 180_000 });
  expect(s.problems).toEqual([]);
});
