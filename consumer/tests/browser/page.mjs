// Drives the consumer's web page and overlay in headless Chromium, for
// consumer/tests/app/page.rs. It talks to the Rust test over stdio:
//
//   argv[2]: JSON {page, overlay, id, chromium}
//   stdout:  READY              both pages are live: publish the message
//            SEEN <json>        what the page shows for it: publish the delete
//            MODERATED <json>   what the pages show after the delete
//            ERROR <message>    and exit code 1
//   stdin:   one line after SEEN, when the delete is published
import { createInterface } from "node:readline";
import { TIMEOUT, withChromium } from "./chromium.mjs";

const spec = JSON.parse(process.argv[2]);
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

// The [r, g, b, a] of a PNG's pixel, decoded by the browser itself on a
// blank page (no CSP there).
async function pixel(browser, png, x, y) {
  const blank = await browser.newPage();
  try {
    return await blank.evaluate(async ({ data, x, y }) => {
      const img = new Image();
      img.src = `data:image/png;base64,${data}`;
      await img.decode();
      const canvas = document.createElement("canvas");
      canvas.width = img.width;
      canvas.height = img.height;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0);
      return Array.from(ctx.getImageData(x, y, 1, 1).data);
    }, { data: png.toString("base64"), x, y });
  } finally {
    await blank.close();
  }
}

await withChromium(spec.chromium, async (browser) => {
  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  const page = await context.newPage();
  const overlay = await context.newPage();
  // What OBS does: whatever the overlay leaves transparent shows what is
  // behind it. Here that is pure green, so a screenshot tells. The page
  // gets the same green backdrop (each page needs its own CDP session), so
  // its screenshot tells whether it covers it.
  for (const p of [page, overlay]) {
    const cdp = await context.newCDPSession(p);
    await cdp.send("Emulation.setDefaultBackgroundColorOverride", {
      color: { r: 0, g: 255, b: 0, a: 1 },
    });
  }
  const errors = [];
  for (const p of [page, overlay]) {
    p.on("pageerror", (e) => errors.push(String(e)));
  }
  await page.goto(spec.page);
  await overlay.goto(spec.overlay);
  for (const p of [page, overlay]) {
    await p.waitForSelector('#status[data-state="live"]', { timeout: TIMEOUT, state: "attached" });
  }
  console.log("READY");

  const line = `.line[data-id="${spec.id}"]`;
  await page.waitForSelector(line, { timeout: TIMEOUT });
  await overlay.waitForSelector(line, { timeout: TIMEOUT, state: "attached" });
  const seen = await page.$eval(line, (el) => ({
    text: el.querySelector(".text").textContent,
    name: el.querySelector(".name").textContent,
    color: getComputedStyle(el.querySelector(".name")).color,
    emotes: Array.from(el.querySelectorAll("img.emote")).map((i) => ({
      src: i.getAttribute("src"),
      alt: i.alt,
    })),
    badges: Array.from(el.querySelectorAll(".badge")).map((b) => b.dataset.badge),
    platform: el.querySelector(".platform").dataset.platform,
    channel: el.dataset.channel,
  }));
  seen.channelTag = await page.$eval(line, (el) => el.querySelector(".channel")?.textContent);
  const ytLine = `.line[data-id="${spec.youtube_id}"]`;
  const scLine = `.line[data-id="${spec.super_chat_id}"]`;
  await page.waitForSelector(ytLine, { timeout: TIMEOUT });
  await page.waitForSelector(scLine, { timeout: TIMEOUT });
  const describe = (el) => ({
    platform: el.dataset.platform,
    kind: el.dataset.kind,
    mark: el.querySelector(".platform").textContent,
    name: el.querySelector(".name").textContent,
    text: el.querySelector(".text").textContent,
    avatar: el.querySelector("img.avatar")?.getAttribute("src") ?? null,
    badges: Array.from(el.querySelectorAll(".badge")).map((b) => b.dataset.badge),
    paid: el.querySelector(".paid")?.textContent ?? null,
    highlighted: el.classList.contains("paid"),
  });
  seen.youtube = await page.$eval(ytLine, describe);
  seen.superChat = await page.$eval(scLine, describe);
  seen.order = await page.$$eval(".line[data-id]", (els) =>
    els.filter((e) => !e.classList.contains("system")).map((e) => e.dataset.id));
  seen.overlayBackground = await overlay.evaluate(
    () => getComputedStyle(document.body).backgroundColor,
  );
  seen.overlayControlsHidden = await overlay.$eval(
    "#controls",
    (el) => getComputedStyle(el).display === "none",
  );
  seen.composerHidden = await page.$eval("#composer", (el) => el.hidden);
  seen.modButtons = await page.$$eval(".mod-actions", (els) => els.length);
  seen.pageBackground = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  // The rendered overlay, away from the chat (which sits at the bottom),
  // and the page at the same spot (below its few lines), both over the
  // green backdrop, read back from screenshots.
  const spot = { x: 20, y: 300 };
  seen.overlayPixel = await pixel(browser, await overlay.screenshot(), spot.x, spot.y);
  seen.pagePixel = await pixel(browser, await page.screenshot(), spot.x, spot.y);
  console.log(`SEEN ${JSON.stringify(seen)}`);

  await nextLine();
  await page.waitForSelector(`${line}[data-moderation="deleted"]`, { timeout: TIMEOUT });
  await overlay.waitForSelector(line, { timeout: TIMEOUT, state: "detached" });
  const moderated = await page.$eval(line, (el) => ({
    note: el.querySelector(".mod-note").textContent,
    textVisible: getComputedStyle(el.querySelector(".text")).display !== "none",
  }));
  moderated.errors = errors;
  console.log(`MODERATED ${JSON.stringify(moderated)}`);
});
