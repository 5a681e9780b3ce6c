// Drives the real ComfyUI frontend in headless Debian Chromium (playwright-core, no browser download):
// load a workflow, queue, wait, read the memory strip, click a thumbnail to pin it, re-queue, export
// the workflow. Prints one JSON line with what it saw; tests/integration/browser/test_frontend.py checks it
// against the server's /history.
//   node drive.mjs <server url> <api workflow.json> <strip node id> <out dir>
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const [url, wfPath, target, out] = process.argv.slice(2);
const wf = JSON.parse(fs.readFileSync(wfPath, "utf8"));
const t0 = Date.now();
const times = {};
const mark = (k) => { times[k] = (Date.now() - t0) / 1000; console.error(`[drive] ${k} ${times[k]}s`); };
const profile = fs.mkdtempSync(path.join(out, "profile-"));
// A persistent context on a fresh, empty profile dir = Chromium's --user-data-dir (Playwright passes it).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium", headless: true, viewport: { width: 1600, height: 1000 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = { times, console_errors: [] };
try {
  const page = browser.pages()[0] ?? await browser.newPage();
  page.on("pageerror", (e) => result.console_errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") result.console_errors.push(m.text()); });
  await page.goto(url);
  // Ready = the Vue app is up and our extensions are registered; then let the start-up graph or the
  // first-run template dialog settle (Escape closes a dialog), so our load is not replaced.
  await page.waitForFunction(() => {
    const app = window.comfyAPI?.app?.app;
    return app?.vueAppReady === true && app.extensions?.some((e) => e.name === "OneStory.MemoryStrip");
  }, null, { timeout: 120000 });
  await page.waitForTimeout(2500);
  await page.keyboard.press("Escape");
  mark("frontend_ready");
  result.extensions = await page.evaluate(() => window.comfyAPI.app.app.extensions.map((e) => e.name).filter((n) => n.startsWith("OneStory")));

  // Load the workflow, pin seeds ("fixed"), listen for prompt completion.
  await page.evaluate(async (wf) => {
    const { app } = window.comfyAPI.app, { api } = window.comfyAPI.api;
    window.__done = [];
    api.addEventListener("execution_success", (e) => window.__done.push({ id: e.detail.prompt_id, ok: true }));
    api.addEventListener("execution_error", (e) => window.__done.push({ id: e.detail.prompt_id, ok: false, e: e.detail }));
    await app.loadApiJson(wf, "onestory_browser_test.json");
    for (const n of app.graph.nodes) for (const w of n.widgets ?? []) if (w.name === "control_after_generate") w.value = "fixed";
  }, wf);
  await page.waitForTimeout(1000);
  const loaded = await page.evaluate((n) => window.comfyAPI.app.app.graph.nodes.length === n, Object.keys(wf).length);
  if (!loaded) throw new Error("the workflow was replaced after loading");
  await page.keyboard.press("Escape");
  mark("workflow_loaded");

  const queue = async (label) => {
    const before = await page.evaluate(() => window.__done.length);
    await page.evaluate(() => window.comfyAPI.app.app.queuePrompt(0, 1));
    await page.waitForFunction((n) => window.__done.length > n, before, { timeout: 300000 });
    const done = await page.evaluate((n) => window.__done[n], before);
    mark(label);
    if (!done.ok) throw new Error(`prompt failed: ${JSON.stringify(done.e)}`);
    return done.id;
  };
  const center = (id) => page.evaluate((id) => {
    const { app } = window.comfyAPI.app, node = app.graph.getNodeById(Number(id));
    app.canvas.ds.scale = 1.2;
    app.canvas.centerOnNode(node);
    app.canvas.setDirty(true, true);
  }, id);
  const stripSel = `.onestory-strip`;
  const readStrip = (id) => page.evaluate((id) => {
    const node = window.comfyAPI.app.app.graph.getNodeById(Number(id));
    const w = node.widgets.find((x) => x.name === "onestory_strip");
    if (!w) return null;
    return { loaded: w.element.dataset.loaded, cells: [...w.element.querySelectorAll(".os-cell")].map((c) => ({
      ...c.dataset, bar: c.querySelector(".os-bar")?.style.width ?? null,
      tier: c.querySelector(".os-tag.r")?.textContent ?? null, ring: getComputedStyle(c).borderTopColor,
      bg: c.querySelector(".os-img").style.backgroundImage })), head: w.element.querySelector(".os-head")?.textContent };
  }, id);

  result.prompt1 = await queue("run1_done");
  await page.waitForFunction((id) => {
    const n = window.comfyAPI.app.app.graph.getNodeById(Number(id));
    return n.widgets?.find((w) => w.name === "onestory_strip")?.element.dataset.loaded === "1";
  }, target, { timeout: 30000 });
  result.strip1 = await readStrip(target);
  await center(target);
  await page.waitForTimeout(500);
  await page.screenshot({ path: path.join(out, "strip_after_run1.png") });

  // Click the last memory frame's thumbnail (a real mouse click on the DOM element).
  const cells = page.locator(`${stripSel} .os-cell`).filter({ has: page.locator(".os-img") });
  const targetCells = await page.evaluate((id) => {
    const node = window.comfyAPI.app.app.graph.getNodeById(Number(id));
    const w = node.widgets.find((x) => x.name === "onestory_strip");
    const all = [...document.querySelectorAll(".onestory-strip")];
    return { stripIndex: all.indexOf(w.element), count: w.element.querySelectorAll(".os-cell").length };
  }, target);
  const cell = page.locator(stripSel).nth(targetCells.stripIndex).locator(".os-cell").last();
  result.clicked = await cell.evaluate((c) => ({ ...c.dataset }));
  await cell.click();
  mark("clicked");
  result.widget_after_click = await page.evaluate((id) => window.comfyAPI.app.app.graph.getNodeById(Number(id))
    .widgets.find((w) => w.name === "memory_overrides").value, target);
  result.cell_after_click = await cell.evaluate((c) => ({ ...c.dataset, cls: c.className }));
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(out, "strip_pinned.png") });
  await cells.count();

  // Timeline tab before re-queue: the pinned shot and later ones must show "stale".
  const opened = await page.evaluate(() => {
    const st = window.comfyAPI.app.app.extensionManager?.sidebarTab;
    if (typeof st?.toggleSidebarTab !== "function") return false;
    st.toggleSidebarTab("onestory-timeline");
    return true;
  });
  result.timeline_opened = opened;
  if (opened) {
    await page.waitForSelector(".onestory-timeline .os-shot", { timeout: 10000 });
    await page.waitForTimeout(1200);
    result.timeline_before_requeue = await page.$$eval(".onestory-timeline .os-shot",
      (rows) => rows.map((r) => ({ node: r.dataset.nodeId, status: r.dataset.status, text: r.textContent })));
    await page.screenshot({ path: path.join(out, "timeline_stale.png") });
  }

  result.prompt2 = await queue("run2_done");
  await page.waitForTimeout(1200);
  result.strip2 = await readStrip(target);
  if (opened) {
    result.timeline_after_requeue = await page.$$eval(".onestory-timeline .os-shot",
      (rows) => rows.map((r) => ({ node: r.dataset.nodeId, status: r.dataset.status })));
    // Click a shot in the timeline: the canvas centres on it and selects it.
    await page.locator(".onestory-timeline .os-shot").first().click();
    result.selected_after_timeline_click = await page.evaluate(() =>
      Object.keys(window.comfyAPI.app.app.canvas.selected_nodes ?? {}));
  }
  await center(target);
  await page.waitForTimeout(500);
  await page.screenshot({ path: path.join(out, "after_requeue.png") });

  // The workflow as the frontend saves it (what "Save" / "Export" writes).
  const saved = await page.evaluate(async () => (await window.comfyAPI.app.app.graphToPrompt()).workflow);
  fs.writeFileSync(path.join(out, "saved_workflow.json"), JSON.stringify(saved, null, 1));
  result.saved_workflow = path.join(out, "saved_workflow.json");
} catch (e) {
  await browser.pages()[0]?.screenshot({ path: path.join(out, "failure.png") }).catch(() => {});
  throw e;
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
mark("total");
console.log(JSON.stringify(result));
