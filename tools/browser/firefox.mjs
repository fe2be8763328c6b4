// Drives Debian's Firefox ESR for the Python tests and benchmarks (tests/firefox.py): puppeteer-core
// over WebDriver BiDi, with Firefox's fake camera and microphone and no permission prompt. One JSON
// command per line on stdin, one JSON reply per line on stdout ({"id", "ok", "value"|"error"}).
// Every page gets its own browser context (no shared permissions, storage or cache).
//
//   node tools/browser/firefox.mjs [--executable /usr/bin/firefox-esr]
//
// Commands: open {url?, init?} -> page id; eval {page, fn, arg?} (fn: a function's source);
// wait {page, fn, wait_ms} (polls fn until truthy); click/focus {page, selector}; type {page, text};
// press {page, key}; problems {page} (script errors and CSP reports seen); close {page}; quit.
import readline from "node:readline";
import puppeteer from "puppeteer-core";

const args = process.argv.slice(2);
const executablePath = args.includes("--executable") ? args[args.indexOf("--executable") + 1] : "/usr/bin/firefox-esr";

const browser = await puppeteer.launch({
  browser: "firefox",
  protocol: "webDriverBiDi",
  executablePath,
  headless: true,
  extraPrefsFirefox: {
    "media.navigator.streams.fake": true,
    "media.navigator.permission.disabled": true,
    "media.autoplay.default": 0, // allowed: the join page plays the remote stream
    // closed network here: no update, telemetry or remote-settings traffic
    "app.update.enabled": false,
    "datareporting.policy.dataSubmissionEnabled": false,
    "toolkit.telemetry.enabled": false,
    "network.captive-portal-service.enabled": false,
    "network.connectivity-service.enabled": false,
  },
});

const pages = new Map();
let nextPage = 1;

// A call of the function whose source is given, as an expression: evaluated in the page by the
// browser's remote agent (not by the page's scripts, so the page's Content-Security-Policy allows it).
function call(source, arg) {
  return `(${source})(${JSON.stringify(arg ?? null)})`;
}

async function run(cmd) {
  switch (cmd.cmd) {
    case "open": {
      const context = await browser.createBrowserContext();
      const page = await context.newPage();
      const problems = [];
      page.on("pageerror", (e) => problems.push(`pageerror: ${e.message || e}`));
      page.on("console", (m) => {
        const text = m.text();
        if (/Content[- ]Security[- ]Policy|Refused to/i.test(text)) problems.push(text);
      });
      if (cmd.init) await page.evaluateOnNewDocument(cmd.init);
      const id = nextPage++;
      pages.set(id, { context, page, problems });
      if (cmd.url) await page.goto(cmd.url, { waitUntil: "load", timeout: 30000 });
      return id;
    }
    case "eval": {
      const { page } = pages.get(cmd.page);
      return await page.evaluate(call(cmd.fn, cmd.arg));
    }
    case "wait": {
      const { page } = pages.get(cmd.page);
      const deadline = Date.now() + (cmd.wait_ms ?? 20000);
      for (;;) {
        let value = null;
        try {
          value = await page.evaluate(call(cmd.fn, cmd.arg));
        } catch (e) {
          // a navigation in between: try again
        }
        if (value) return value;
        if (Date.now() > deadline) throw new Error(`timed out after ${cmd.wait_ms ?? 20000} ms waiting for ${cmd.fn}`);
        await new Promise((r) => setTimeout(r, cmd.every ?? 25));
      }
    }
    case "click":
      await pages.get(cmd.page).page.click(cmd.selector);
      return true;
    case "focus":
      await pages.get(cmd.page).page.focus(cmd.selector);
      return true;
    case "type":
      await pages.get(cmd.page).page.keyboard.type(cmd.text);
      return true;
    case "press":
      await pages.get(cmd.page).page.keyboard.press(cmd.key);
      return true;
    case "problems":
      return pages.get(cmd.page).problems;
    case "close": {
      const entry = pages.get(cmd.page);
      if (entry) {
        pages.delete(cmd.page);
        await entry.context.close();
      }
      return true;
    }
    case "version":
      return await browser.version();
    default:
      throw new Error(`unknown command ${cmd.cmd}`);
  }
}

const input = readline.createInterface({ input: process.stdin });
process.stdout.write(JSON.stringify({ id: 0, ok: true, value: await browser.version() }) + "\n");
for await (const line of input) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  if (cmd.cmd === "quit") break;
  try {
    const value = await run(cmd);
    process.stdout.write(JSON.stringify({ id: cmd.id, ok: true, value: value ?? null }) + "\n");
  } catch (e) {
    process.stdout.write(JSON.stringify({ id: cmd.id, ok: false, error: String(e && e.message ? e.message : e) }) + "\n");
  }
}
await browser.close();
process.exit(0);
