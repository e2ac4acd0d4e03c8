// The studio as a cluster in a real browser: a web node (no model) and two workers sharing a
// nats-server. The page on the web node shows each worker loading (the workers' stage events,
// through the web node), then ready; a job submitted there runs on a worker with live progress
// and plays.

import { expect, test } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { Nats, REPO, startNats, startStudio, Studio, TINY_WEIGHTS, useSession } from "./harness";

const PORTRAIT = path.join(REPO, "model/tests/fixtures/face/astronaut.png");
const SPEECH = path.join(REPO, "model/tests/fixtures/speech/sense_and_sensibility_01_austen_64kb-0880.wav");
const READY_TIMEOUT = 150_000;

const s = useSession();

test("the web node shows two workers loading, then ready; a job there runs on a worker and plays", async ({ page }) => {
  let nats: Nats | undefined;
  const workers: Studio[] = [];
  try {
    nats = await startNats(s.dir);
    const cluster = (role: string, name: string) =>
      `[cluster]\nnats = ${JSON.stringify(nats!.url)}\nrole = "${role}"\nname = "${name}"\nworker_ttl_s = 3.0\n`;
    const folder = (name: string) => {
      const dir = path.join(s.dir, name);
      fs.mkdirSync(dir, { recursive: true });
      return dir;
    };
    const web = s.studio = await startStudio(folder("web"), {
      weights: { local: TINY_WEIGHTS },
      extraConfig: cluster("web", "web"),
    });
    await page.goto(web.url);
    await expect(page.locator("#backend-title")).toHaveText("Backend not ready");
    // Every state each worker's row shows, as the page changes.
    await page.evaluate(() => {
      const w = window as any;
      w.workerStates = {};
      const record = () => {
        document.querySelectorAll("li.worker").forEach((li) => {
          const name = li.getAttribute("data-worker")!;
          (w.workerStates[name] ??= []).push(li.getAttribute("data-state"));
        });
      };
      new MutationObserver(record).observe(document.body, { childList: true, subtree: true, attributes: true });
    });

    for (const name of ["w1", "w2"]) {
      workers.push(
        await startStudio(folder(name), { weights: { local: TINY_WEIGHTS }, extraConfig: cluster("worker", name) }),
      );
    }
    await expect(page.locator("#workers li.worker")).toHaveCount(2, { timeout: READY_TIMEOUT });
    for (const name of ["w1", "w2"]) {
      await expect(page.locator(`li.worker[data-worker="${name}"]`)).toHaveAttribute("data-state", "ready", {
        timeout: READY_TIMEOUT,
      });
      await expect(page.locator(`li.worker[data-worker="${name}"] .worker-stages`)).toHaveText(/^(\d+)\/\1 stages$/);
    }
    await expect(page.locator("#backend-title")).toHaveText("Ready");
    const seen = await page.evaluate(() => (window as any).workerStates);
    for (const name of ["w1", "w2"]) {
      expect(seen[name], `${name}'s row: ${JSON.stringify(seen[name])}`).toEqual(
        expect.arrayContaining(["loading"]),
      );
    }

    // A job submitted on the web node: live progress from its worker, then the video plays.
    await page.locator("#image-input").setInputFiles(PORTRAIT);
    await expect(page.locator("#preflight-overlay rect.face-box")).toHaveCount(1);
    await page.locator("#audio-input").setInputFiles(SPEECH);
    await expect(page.locator("#audio-duration")).toContainText("3.0 s of speech");
    await page.locator('input[name="steps"]').fill("3");
    await page.locator("#generate").click();
    await page.waitForURL(/\/jobs\/[0-9a-f-]{36}$/);
    await expect(page.locator("#job-state")).toHaveText("generating", { timeout: 60_000 });
    await expect(page.locator("#job-steps")).toContainText(/clip \d+\/\d+ · step \d\/3/);
    await expect(page.locator("#job-frame")).toBeVisible({ timeout: 60_000 });
    await expect(page.locator("li.worker .worker-job").first()).toBeVisible();
    await expect(page.locator("#job-state")).toHaveText("completed", { timeout: 180_000 });
    const video = page.locator("#job-video");
    await expect(video).toBeVisible();
    await expect
      .poll(() => video.evaluate((v: HTMLVideoElement) => v.readyState), { timeout: 30_000 })
      .toBeGreaterThanOrEqual(1);
    await video.evaluate((v: HTMLVideoElement) => {
      v.muted = true;
      return v.play();
    });
    await expect
      .poll(() => video.evaluate((v: HTMLVideoElement) => v.currentTime), { timeout: 30_000 })
      .toBeGreaterThan(0);
  } finally {
    for (const w of workers) await w.stop();
    await nats?.stop();
  }
});
