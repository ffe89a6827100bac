// Drives the page and the overlay for consumer/tests/app/page.rs's stream
// status test: a channel live with viewers before the pages open, then an
// offline event while they are open. Over stdio:
//
//   argv[2]: JSON {page, overlay, channel, chromium}
//   stdout:  LIVE <json>      what both show on opening: publish offline
//            OFFLINE <json>   what both show after it
//            ERROR <message>  and exit code 1
//   stdin:   one line after LIVE, when the offline event is published
import { createInterface } from "node:readline";
import { TIMEOUT, withChromium } from "./chromium.mjs";

const spec = JSON.parse(process.argv[2]);
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

const entry = `#streams li[data-channel="${spec.channel}"]`;
const read = (p) => p.$eval(entry, (el) => ({
  live: el.dataset.live,
  text: el.textContent,
  visible: getComputedStyle(el).display !== "none",
}));

await withChromium(spec.chromium, async (browser) => {
  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  const page = await context.newPage();
  const overlay = await context.newPage();
  const errors = [];
  for (const p of [page, overlay]) p.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(spec.page);
  await overlay.goto(spec.overlay);
  for (const p of [page, overlay]) {
    await p.waitForSelector(`${entry}[data-live="true"]`, { timeout: TIMEOUT });
  }
  console.log(`LIVE ${JSON.stringify({ page: await read(page), overlay: await read(overlay), errors })}`);
  await nextLine();
  for (const p of [page, overlay]) {
    await p.waitForSelector(`${entry}[data-live="false"]`, { timeout: TIMEOUT });
  }
  const wentOffline = await page.$$eval(".line.system", (els) =>
    els.map((e) => e.textContent).filter((t) => t.includes("went offline")).length);
  console.log(`OFFLINE ${JSON.stringify({
    page: await read(page), overlay: await read(overlay), wentOffline, errors,
  })}`);
});
