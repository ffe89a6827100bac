// Drives the page's "Opt out of chat logging" form for
// consumer/tests/app/page.rs: a refused login shows the server's reason, a
// good one shows a code, the instructions and a countdown; asking too
// often shows the 429's reason. Over stdio:
//
//   argv[2]: JSON {page, overlay, login, bad_login, chromium}
//   stdout:  CODE <json>       what the form shows for `login`: type the
//                              code in chat as that login
//            LIMITED <json>    what it showed a minute later (expired), and
//                              once the address asked too often
//            ERROR <message>   and exit code 1
//   stdin:   one line after CODE, when the opt-out took effect
import { createInterface } from "node:readline";
import { TIMEOUT, withChromium } from "./chromium.mjs";

const spec = JSON.parse(process.argv[2]);
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

const submit = '#optout-form button[type="submit"]';

// Submits the form and waits until the request is answered (the button is
// enabled again and a result or an error shows).
async function ask(page, platform, login) {
  await page.selectOption("#optout-platform", platform);
  await page.fill("#optout-login", login);
  await page.click(submit);
  await page.waitForFunction(() => {
    const button = document.querySelector('#optout-form button[type="submit"]');
    return !button.disabled
      && (!document.getElementById("optout-result").hidden
        || !document.getElementById("optout-error").hidden);
  }, null, { timeout: TIMEOUT });
  return page.evaluate(() => {
    const result = document.getElementById("optout-result");
    const error = document.getElementById("optout-error");
    const countdown = document.getElementById("optout-countdown");
    return {
      resultShown: !result.hidden,
      code: document.getElementById("optout-code").textContent,
      message: document.getElementById("optout-message").textContent,
      countdown: countdown.textContent,
      left: Number(countdown.dataset.left),
      errorShown: !error.hidden,
      error: error.textContent,
      errorStatus: error.dataset.status ?? null,
    };
  });
}

await withChromium(spec.chromium, async (browser) => {
  const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
  const page = await context.newPage();
  const overlay = await context.newPage();
  const errors = [];
  for (const p of [page, overlay]) p.on("pageerror", (e) => errors.push(String(e)));
  // The page's clock is the test's: the code's expiry without waiting.
  await page.clock.install();
  await page.goto(spec.page);
  await overlay.goto(spec.overlay);
  for (const p of [page, overlay]) {
    await p.waitForSelector('#status[data-state="live"]', { timeout: TIMEOUT, state: "attached" });
  }
  const overlayShowsIt = await overlay.$eval("#optout", (el) => el.checkVisibility());
  const closed = await page.$eval("#optout", (el) => !el.open);
  const platforms = await page.$$eval("#optout-platform option", (os) => os.map((o) => o.value));

  await page.click("#optout summary");
  await page.waitForSelector("#optout-login", { timeout: TIMEOUT });
  const refused = await ask(page, "twitch", spec.bad_login);
  const issued = await ask(page, "twitch", spec.login);
  // The countdown runs: wait for it to go down a second.
  await page.waitForFunction(
    (left) => Number(document.getElementById("optout-countdown").dataset.left) < left,
    issued.left,
    { timeout: TIMEOUT },
  );
  const ticked = await page.$eval("#optout-countdown", (el) => el.textContent);
  console.log(`CODE ${JSON.stringify({
    overlayShowsIt, closed, platforms, refused, issued, ticked, errors,
  })}`);

  await nextLine();
  // A minute later, the page says the code has expired.
  await page.clock.fastForward(61_000);
  await page.waitForSelector('#optout-result[data-state="expired"]', { timeout: TIMEOUT });
  const expired = await page.$eval("#optout-countdown", (el) => el.textContent);
  // Ask until refused: the server allows a few codes per address.
  const answers = [];
  for (let i = 0; i < 10; i += 1) {
    const answer = await ask(page, "youtube", spec.login);
    answers.push(answer);
    if (answer.errorShown) break;
  }
  console.log(`LIMITED ${JSON.stringify({ expired, answers, errors })}`);
});
