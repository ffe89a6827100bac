// The broker's ceiling for chatbus's benchmarks: a bare amqplib publisher,
// built on nothing chatbus or lapin share, so its rate is what the broker
// takes from a plain client. testkit::ceiling runs it; by hand:
//
//   node publish.mjs <amqp-url[,url...]> <exchange> <payloads.jsonl> <count> <in-flight>
//
// payloads.jsonl holds pre-built messages, one JSON object a line:
// {"rk": "<routing key>", "body": "<the event JSON>", "kind": "...",
//  "platform": "...", "channel": "..."}. They are published in turn until
// <count> are confirmed, each with its own message id and the properties
// chatbus publishes with (persistent, JSON, type, timestamp, app id,
// platform/channel/kind/schema_version headers), keeping at most
// <in-flight> unconfirmed. Prints one JSON line: messages, seconds, rate,
// and the CPU (user + system) this process used while publishing.
import amqp from 'amqplib';
import { readFileSync } from 'node:fs';

const [urls, exchange, file, countArg, inFlightArg] = process.argv.slice(2);
if (!inFlightArg) {
  console.error('usage: publish.mjs <amqp-url> <exchange> <payloads.jsonl> <count> <in-flight>');
  process.exit(2);
}
const count = Number(countArg);
const maxInFlight = Number(inFlightArg);
const payloads = readFileSync(file, 'utf8')
  .split('\n')
  .filter((l) => l.length > 0)
  .map((l) => {
    const p = JSON.parse(l);
    return { ...p, content: Buffer.from(p.body, 'utf8') };
  });
if (payloads.length === 0) {
  console.error('no payloads');
  process.exit(2);
}

const conn = await amqp.connect(urls.split(',')[0]);
const ch = await conn.createConfirmChannel();

let sent = 0;
let confirmed = 0;
let failed = null;
let wake = null;
const woken = () => new Promise((resolve) => { wake = resolve; });
const poke = () => { if (wake) { const w = wake; wake = null; w(); } };
const onConfirm = (err) => {
  if (err) failed = failed ?? new Error('broker nacked a message');
  confirmed += 1;
  poke();
};
ch.on('drain', poke);

const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
while (sent < count) {
  if (failed) break;
  if (sent - confirmed >= maxInFlight) {
    await woken();
    continue;
  }
  const p = payloads[sent % payloads.length];
  const ok = ch.publish(exchange, p.rk, p.content, {
    persistent: true,
    contentType: 'application/json',
    messageId: `ceiling-${sent}`,
    type: p.kind,
    timestamp: Math.floor(Date.now() / 1000),
    appId: 'chatbus-ceiling',
    headers: { platform: p.platform, channel: p.channel, kind: p.kind, schema_version: 1 },
  }, onConfirm);
  sent += 1;
  if (!ok) await woken();
}
while (confirmed < sent && !failed) await woken();
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = process.cpuUsage(cpu0);
await ch.close();
await conn.close();
if (failed) {
  console.error(failed.message);
  process.exit(1);
}
console.log(JSON.stringify({
  messages: confirmed,
  seconds,
  rate: confirmed / seconds,
  cpu_seconds: (cpu.user + cpu.system) / 1e6,
  cpu_us_per_message: (cpu.user + cpu.system) / confirmed,
}));
