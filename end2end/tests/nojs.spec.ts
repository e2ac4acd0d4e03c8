// The studio with JavaScript disabled (or before the wasm has loaded on a slow link): every form
// posts to its server function and the server answers with a redirect. Submit astronaut.png and
// the LibriVox clip, land on the job's page, follow the job by reloading, download the MP4 and
// check it with ffprobe, delete it; cancel a running job; and retry a failed load.

import { expect, Page, test } from "@playwright/test";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { copyTinyWeights, REPO, startStudio, Studio, TINY_WEIGHTS, useSession } from "./harness";

const PORTRAIT = path.join(REPO, "model/tests/fixtures/face/astronaut.png");
const SPEECH = path.join(REPO, "model/tests/fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav");
const SPEECH_SECONDS = 2.99;
const READY_TIMEOUT = 150_000;
const JOB_TIMEOUT = 180_000;

test.use({ javaScriptEnabled: false });

const s = useSession();

/** Reloads the page (as its own refresh does) until `locator`'s text is `want`. */
async function reloadUntil(page: Page, url: string, selector: string, want: RegExp, timeout: number) {
  await expect
    .poll(
      async () => {
        try {
          await page.goto(url);
          return (await page.locator(selector).textContent()) ?? "";
        } catch {
          return ""; // the page's own refresh raced this navigation
        }
      },
      { timeout, intervals: [500, 1000] },
    )
    .toMatch(want);
}

async function readyPage(page: Page, studio: Studio) {
  await reloadUntil(page, studio.url, "#backend-title", /^Ready$/, READY_TIMEOUT);
}

/** Fills the form as a user would, without JavaScript, and submits it. */
async function submit(page: Page, steps: number): Promise<string> {
  await page.locator("#image-input").setInputFiles(PORTRAIT);
  await page.locator("#audio-input").setInputFiles(SPEECH);
  await page.locator('input[name="steps"]').fill(String(steps));
  await page.locator("#generate").click();
  await page.waitForURL(/\/jobs\/[0-9a-f-]{36}$/);
  return page.url().split("/").pop()!;
}

test("without JavaScript: submit, follow the job by reloading, download the MP4, delete it, cancel another", async ({ page }) => {
  const studio = (s.studio = await startStudio(s.dir, { weights: { local: TINY_WEIGHTS } }));
  await readyPage(page, studio);

  const id = await submit(page, 3);
  const jobUrl = page.url();
  // The job's page, rendered by the server; while the job runs it refreshes itself.
  await expect(page.locator("#job")).toBeVisible();
  const state = await page.locator("#job-state").textContent();
  if (!["completed", "failed", "cancelled"].includes(state ?? "")) {
    await expect(page.locator('meta[http-equiv="refresh"]')).toHaveCount(1);
  }
  await reloadUntil(page, jobUrl, "#job-state", /^(completed|failed)$/, JOB_TIMEOUT);
  await expect(page.locator("#job-state")).toHaveText("completed");
  await expect(page.locator('meta[http-equiv="refresh"]')).toHaveCount(0);

  const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#job-download").click()]);
  expect(download.suggestedFilename()).toBe(`hallo2_${id}.mp4`);
  const file = path.join(s.dir, "download.mp4");
  await download.saveAs(file);
  const out = spawnSync("ffprobe", ["-v", "error", "-print_format", "json", "-show_streams", file], { encoding: "utf8" });
  expect(out.status, out.stderr).toBe(0);
  const streams = JSON.parse(out.stdout).streams as any[];
  const v = streams.find((st) => st.codec_type === "video");
  expect(v.codec_name).toBe("h264");
  expect(v.pix_fmt).toBe("yuv420p");
  expect(Math.abs(Number(v.duration) - SPEECH_SECONDS)).toBeLessThanOrEqual(1 / 25 + 1e-6);
  expect(streams.some((st) => st.codec_type === "audio")).toBe(true);

  // Delete: the server sends the browser to the job list, without the job.
  await page.locator("button.job-delete").click();
  await page.waitForURL(/\/jobs$/);
  await expect(page.locator(`tr[data-job="${id}"]`)).toHaveCount(0);

  // Cancel a long job from its page: the form comes back to the page, which shows it ending.
  await page.goto(studio.url);
  const long = await submit(page, 200);
  await page.locator("#job-cancel").click();
  await page.waitForURL(new RegExp(`/jobs/${long}`));
  await reloadUntil(page, `${studio.url}/jobs/${long}`, "#job-state", /^cancelled$/, 60_000);
  expect(s.problems).toEqual([]);
});

test("without JavaScript: a failed load is retried from the page", async ({ page }) => {
  const weights = copyTinyWeights(s.dir);
  const vae = path.join(weights, "sd-vae-ft-mse/diffusion_pytorch_model.safetensors");
  const good = fs.readFileSync(vae);
  fs.writeFileSync(vae, good.subarray(0, good.length >> 1));
  const studio = (s.studio = await startStudio(s.dir, { weights: { local: weights } }));
  await reloadUntil(page, studio.url, "#backend-title", /^Failed$/, READY_TIMEOUT);
  await expect(page.locator("#backend-error")).toContainText("diffusion_pytorch_model.safetensors");

  fs.writeFileSync(vae, good);
  await page.locator("#backend-retry").click();
  // The server sends the browser back to the page it came from.
  await page.waitForURL(new RegExp(`^${studio.url}/?\\??$`));
  await readyPage(page, studio);
  expect(s.problems).toEqual([]);
});
