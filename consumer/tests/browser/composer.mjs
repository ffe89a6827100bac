// Drives the consumer's web page with a command token, in headless
// Chromium, for consumer/tests/app/page.rs: the composer sends one text to
// every channel on screen and shows each receipt; a message's timeout and
// delete buttons send their commands and show their receipts on the line.
//
//   argv[2]: JSON {page, overlay, text, id, chromium}
//   stdout:  READY <json>       the page is live with its composer
//            RECEIPTS <json>    the receipts shown after sending: publish
//                               the message `id`
//            MODERATED <json>   the receipts on its line after a timeout,
//                               then a delete
//            ERROR <message>    and exit code 1
//   stdin:   one line after RECEIPTS, when the message is published
import { createInterface } from "node:readline";
import { TIMEOUT, withChromium } from "./chromium.mjs";

const spec = JSON.parse(process.argv[2]);
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

await withChromium(spec.chromium, async (browser) => {
  const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
  const page = await context.newPage();
  const overlay = await context.newPage();
  const errors = [];
  for (const p of [page, overlay]) p.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(spec.page);
  await overlay.goto(spec.overlay);
  for (const p of [page, overlay]) {
    await p.waitForSelector('#status[data-state="live"]', { timeout: TIMEOUT, state: "attached" });
  }
  await page.waitForSelector("#composer", { timeout: TIMEOUT });
  const ready = await page.evaluate(() => ({
    hash: location.hash,
    stored: sessionStorage.getItem("chatbus.command_token") !== null,
    targets: Array.from(document.querySelectorAll("#compose-target option")).map((o) => o.value),
    composerShown: !document.getElementById("composer").hidden,
  }));
  console.log(`READY ${JSON.stringify(ready)}`);

  await page.selectOption("#compose-target", "*");
  await page.fill("#compose-text", spec.text);
  await page.click('#composer button[type="submit"]');
  await page.waitForFunction(() => {
    const items = document.querySelectorAll("#receipts li.receipt");
    return items.length === 2
      && Array.from(items).every((i) => i.dataset.status !== "sending");
  }, null, { timeout: TIMEOUT });
  const receipts = await page.$$eval("#receipts li.receipt", (items) => items.map((i) => ({
    platform: i.dataset.platform,
    channel: i.dataset.channel,
    status: i.dataset.status,
    shown: i.textContent,
  })));
  const textLeft = await page.inputValue("#compose-text");
  console.log(`RECEIPTS ${JSON.stringify({ receipts, textLeft })}`);

  await nextLine();
  const line = `.line[data-id="${spec.id}"]`;
  await page.waitForSelector(line, { timeout: TIMEOUT });
  await overlay.waitForSelector(line, { timeout: TIMEOUT, state: "attached" });
  const overlayButtons = await overlay.$$eval(".mod-actions", (els) => els.length);
  const done = (kind) => page.waitForSelector(
    `${line} .receipt[data-kind="${kind}"]:not([data-status="sending"])`,
    { timeout: TIMEOUT },
  );
  const shown = () => page.$eval(`${line} .receipt`, (r) => ({
    status: r.dataset.status,
    text: r.textContent,
  }));
  await page.hover(line);
  await page.click(`${line} .mod-timeout`);
  await done("timeout");
  const timeout = await shown();
  await page.click(`${line} .mod-delete`);
  await done("delete");
  const deleted = await shown();
  console.log(`MODERATED ${JSON.stringify({ timeout, deleted, overlayButtons, errors })}`);
});
