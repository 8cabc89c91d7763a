// Drives Debian's Chromium (headless) for the dashboard tests in
// tests/all/browser.rs: reads one JSON step per line on stdin, answers one
// JSON line per step on stdout ({"ok":true,"value":...} or
// {"ok":false,"error":"..."}). One page stays open across steps, so a test
// can change Redis or the plugins between steps and see the page follow.
//
// Steps: {"goto": url} · {"click": css, "text"?: t} · {"fill": css, "value": v}
// · {"wait_text": css, "text": t} · {"wait_gone": css, "text"?: t}
// · {"text": css} · {"count": css, "text"?: t} · {"screenshot": path}
// · {"dialogs": true} (alert/confirm/prompt dialogs opened so far)
// · {"errors": true} (script errors and CSP violations so far).
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const TIMEOUT = Number(process.env.STEP_TIMEOUT_MS || 10000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
page.setDefaultTimeout(TIMEOUT);
const dialogs = [];
const errors = [];
page.on("dialog", async (d) => { dialogs.push(`${d.type()}: ${d.message()}`); await d.dismiss(); });
page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
// Console errors but the browser's own note of each non-2xx answer (the
// 401 before the token is typed in): CSP violations show here.
page.on("console", (m) => {
  if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(`console: ${m.text()}`);
});

const locate = (css, text) => {
  const l = page.locator(css);
  return text === undefined ? l : l.filter({ hasText: text });
};

async function run(step) {
  if (step.goto) { await page.goto(step.goto); return null; }
  if (step.click) { await locate(step.click, step.text).first().click(); return null; }
  if (step.fill) { await page.locator(step.fill).first().fill(step.value); return null; }
  if (step.wait_text) { await locate(step.wait_text, step.text).first().waitFor(); return null; }
  if (step.wait_gone) { await locate(step.wait_gone, step.text).first().waitFor({ state: "detached" }); return null; }
  if (step.text) { return await page.locator(step.text).first().innerText(); }
  if (step.count) { return await locate(step.count, step.text).count(); }
  if (step.screenshot) { await page.screenshot({ path: step.screenshot, fullPage: true }); return null; }
  if (step.dialogs) return dialogs;
  if (step.errors) return errors;
  throw new Error(`unknown step ${JSON.stringify(step)}`);
}

const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  try {
    out({ ok: true, value: await run(JSON.parse(line)) });
  } catch (e) {
    out({ ok: false, error: String(e && e.message || e) });
  }
}
await browser.close();
