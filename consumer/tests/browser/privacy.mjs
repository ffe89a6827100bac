// Drives the page and the overlay for consumer/tests/app/page.rs's "forget
// on request" test: messages of two users (and a reply quoting one) are
// shown, a purge of one user arrives as a `privacy` frame, then a channel's
// purge as a `privacy` event. Over stdio:
//
//   argv[2]: JSON {page, overlay, shown: [ids], reply_id, chromium}
//   stdout:  READY              both pages are live: publish the messages
//            SEEN <json>        every message shows: publish the user purge
//            PURGED <json>      what both show after it: publish the
//                               channel's privacy event
//            ANNOUNCED <json>   what both show after that
//            ERROR <message>    and exit code 1
//   stdin:   one line after SEEN and one after PURGED, naming the ids
//            that must go: {"gone": [ids]}
import { createInterface } from "node:readline";
import { TIMEOUT, withChromium } from "./chromium.mjs";

const spec = JSON.parse(process.argv[2]);
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

// The ids of the chat lines shown, in order (system lines left out).
const shownIds = (p) => p.$$eval(".line[data-id]", (els) =>
  els.filter((e) => !e.classList.contains("system")).map((e) => e.dataset.id));

// Waits until none of `ids` is on `p` (polled by the browser).
const gone = (p, ids) => p.waitForFunction(
  (ids) => ids.every((id) => !document.querySelector(`.line[data-id="${CSS.escape(id)}"]`)),
  ids,
  { timeout: TIMEOUT, polling: 50 },
);

await withChromium(spec.chromium, async (browser) => {
  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  const page = await context.newPage();
  const overlay = await context.newPage();
  const errors = [];
  for (const p of [page, overlay]) p.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(spec.page);
  await overlay.goto(spec.overlay);
  for (const p of [page, overlay]) {
    await p.waitForSelector('#status[data-state="live"]', { timeout: TIMEOUT, state: "attached" });
  }
  console.log("READY");

  for (const p of [page, overlay]) {
    for (const id of spec.shown) {
      await p.waitForSelector(`.line[data-id="${id}"]`, { timeout: TIMEOUT, state: "attached" });
    }
  }
  const replyQuote = (p) => p.$eval(`.line[data-id="${spec.reply_id}"]`, (el) => ({
    quote: el.querySelector(".reply")?.textContent ?? null,
    text: el.querySelector(".text").textContent,
  }));
  console.log(`SEEN ${JSON.stringify({
    page: await shownIds(page),
    overlay: await shownIds(overlay),
    reply: await replyQuote(page),
  })}`);

  let step = JSON.parse(await nextLine());
  for (const p of [page, overlay]) await gone(p, step.gone);
  console.log(`PURGED ${JSON.stringify({
    page: await shownIds(page),
    overlay: await shownIds(overlay),
    reply: await replyQuote(page),
    overlayReply: await replyQuote(overlay),
  })}`);

  step = JSON.parse(await nextLine());
  for (const p of [page, overlay]) await gone(p, step.gone);
  const announced = {
    page: await shownIds(page),
    overlay: await shownIds(overlay),
    pageNotes: await page.$$eval('.line.system[data-kind="privacy"]', (els) =>
      els.map((e) => e.textContent)),
    overlayNotes: await overlay.$$eval('.line[data-kind="privacy"]', (els) => els.length),
    errors,
  };
  console.log(`ANNOUNCED ${JSON.stringify(announced)}`);
});
