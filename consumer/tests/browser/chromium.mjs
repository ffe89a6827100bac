// What the browser scripts share: Debian's Chromium, launched headless by
// playwright-core, and the end of the stdio protocol (exit code 0, or an
// `ERROR <message>` line and exit code 1).
import { chromium } from "playwright-core";

export const TIMEOUT = 20_000;

// Runs `steps(browser)` in a headless Chromium at `executablePath`, then
// exits: 0 when the steps finish, 1 (after an ERROR line) when one fails.
export async function withChromium(executablePath, steps) {
  let browser;
  try {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
    await steps(browser);
    await browser.close();
    process.exit(0);
  } catch (e) {
    console.log(`ERROR ${String(e && e.stack ? e.stack : e).replace(/\n/g, " | ")}`);
    if (browser) await browser.close().catch(() => {});
    process.exit(1);
  }
}
