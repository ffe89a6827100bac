// Drives the consumer's web page, in headless Chromium, through a reconnect
// whose cursor the server's history no longer reaches (as when its store
// was replaced), for consumer/tests/app/page.rs. Its WebSocket goes through
// playwright's WebSocket route, which passes every frame on, but for the
// `since` of a resubscription once the connection was cut: that becomes
// the largest cursor a page may send, beyond any store's head.
//
//   argv[2]: JSON {page, first_id, second_id, chromium}
//   stdout:  READY              the page is live: publish the first message
//            RESUMED <json>     the page was refused and subscribed again:
//                               publish the second message
//            SHOWN <json>       what the page shows then
//            ERROR <message>    and exit code 1
import { TIMEOUT, withChromium } from "./chromium.mjs";

const spec = JSON.parse(process.argv[2]);
const BEYOND_ANY_HEAD = 9007199254740991; // 2^53 - 1

await withChromium(spec.chromium, async (browser) => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  const subscribes = [];
  const refusals = [];
  const routes = [];
  let cut = false;
  await page.routeWebSocket((url) => url.pathname === "/ws", (ws) => {
    const server = ws.connectToServer();
    routes.push(ws);
    ws.onMessage((message) => {
      const frame = JSON.parse(String(message));
      if (frame.type === "subscribe") {
        if (cut && frame.since !== undefined) frame.since = BEYOND_ANY_HEAD;
        subscribes.push(frame);
      }
      server.send(JSON.stringify(frame));
    });
    server.onMessage((message) => {
      const frame = JSON.parse(String(message));
      if (frame.type === "error") refusals.push(frame.code);
      ws.send(String(message));
    });
  });

  const live = '#status[data-state="live"]';
  await page.goto(spec.page);
  await page.waitForSelector(live, { timeout: TIMEOUT, state: "attached" });
  console.log("READY");
  await page.waitForSelector(`.line[data-id="${spec.first_id}"]`, { timeout: TIMEOUT });

  // Cut the connection: the page reconnects and asks for what came after
  // its last cursor, which the route turns into a cursor beyond the head.
  cut = true;
  await routes.at(-1).close({ code: 1012, reason: "restarting" });
  const resumedBy = Date.now() + TIMEOUT;
  while (!(refusals.length > 0 && subscribes.length >= 3)) {
    if (Date.now() > resumedBy) {
      const status = await page.$eval("#status", (el) => `${el.dataset.state}: ${el.textContent}`);
      throw new Error(
        `no resubscription after the refusal: ${JSON.stringify({ subscribes, refusals, status })}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await page.waitForSelector(live, { timeout: TIMEOUT, state: "attached" });
  console.log(`RESUMED ${JSON.stringify({ subscribes, refusals })}`);

  await page.waitForSelector(`.line[data-id="${spec.second_id}"]`, { timeout: TIMEOUT });
  const shown = {
    order: await page.$$eval(".line[data-id]", (els) =>
      els.filter((e) => !e.classList.contains("system")).map((e) => e.dataset.id)),
    status: await page.$eval("#status", (el) => el.dataset.state),
    errors,
  };
  console.log(`SHOWN ${JSON.stringify(shown)}`);
});
