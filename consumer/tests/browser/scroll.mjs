// Drives the consumer's web page with more chat than one screen holds, for
// consumer/tests/app/page.rs: the controls bar stays at the top of the
// window however far the chat is scrolled.
//
//   argv[2]: JSON {page, last_id, chromium}
//   stdout:  READY              the page is live: publish the messages
//            SCROLLED <json>    the page's size, and where the controls bar
//                               is at each scroll position
//            ERROR <message>    and exit code 1
import { TIMEOUT, withChromium } from "./chromium.mjs";

const spec = JSON.parse(process.argv[2]);

await withChromium(spec.chromium, async (browser) => {
  const page = await browser.newPage({ viewport: { width: 800, height: 600 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(spec.page);
  await page.waitForSelector('#status[data-state="live"]', { timeout: TIMEOUT, state: "attached" });
  console.log("READY");

  await page.waitForSelector(`.line[data-id="${spec.last_id}"]`, { timeout: TIMEOUT });
  // Scrolls the window to `y` (or the bottom), lets a frame apply it, and
  // reads where the bar is and whether it is what the top of the window shows.
  const at = async (y) => {
    await page.evaluate((y) => {
      window.scrollTo(0, y ?? document.documentElement.scrollHeight);
      return new Promise((resolve) => requestAnimationFrame(() => resolve()));
    }, y);
    return page.evaluate(() => {
      const bar = document.getElementById("controls").getBoundingClientRect();
      const hit = document.elementFromPoint(5, 5);
      return {
        scrollY: window.scrollY,
        top: bar.top,
        bottom: bar.bottom,
        shownAtTop: hit !== null && hit.closest("#controls") !== null,
      };
    });
  };
  const scrolled = {
    innerHeight: await page.evaluate(() => window.innerHeight),
    pageHeight: await page.evaluate(() => document.documentElement.scrollHeight),
    positions: [await at(900), await at(null), await at(0)],
    errors,
  };
  console.log(`SCROLLED ${JSON.stringify(scrolled)}`);
});
