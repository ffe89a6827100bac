// The broker's delivery ceiling for chatbus's benchmarks: a bare amqplib
// consumer that drains a queue, acking in batches, and does nothing else
// with the messages. testkit::ceiling runs it; by hand:
//
//   node consume.mjs <amqp-url> <queue> <count> <prefetch> <ack-every>
//
// Consumes <count> messages with at most <prefetch> unacked, acking every
// <ack-every> with one multiple-ack (and the rest at the end). Prints one
// JSON line: messages, seconds (first delivery to last ack), rate, and the
// CPU this process used.
import amqp from 'amqplib';

const [url, queue, countArg, prefetchArg, ackEveryArg] = process.argv.slice(2);
if (!ackEveryArg) {
  console.error('usage: consume.mjs <amqp-url> <queue> <count> <prefetch> <ack-every>');
  process.exit(2);
}
const count = Number(countArg);
const ackEvery = Number(ackEveryArg);
const conn = await amqp.connect(url.split(',')[0]);
const ch = await conn.createChannel();
await ch.prefetch(Number(prefetchArg));

let received = 0;
let t0 = null;
let cpu0 = null;
const done = new Promise((resolve) => {
  ch.consume(queue, (msg) => {
    if (msg === null) return;
    if (t0 === null) {
      t0 = process.hrtime.bigint();
      cpu0 = process.cpuUsage();
    }
    received += 1;
    if (received % ackEvery === 0 || received === count) {
      ch.ack(msg, true);
    }
    if (received === count) resolve();
  }, { noAck: false });
});
await done;
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = process.cpuUsage(cpu0);
await ch.close();
await conn.close();
console.log(JSON.stringify({
  messages: received,
  seconds,
  rate: received / seconds,
  cpu_seconds: (cpu.user + cpu.system) / 1e6,
  cpu_us_per_message: (cpu.user + cpu.system) / received,
}));
