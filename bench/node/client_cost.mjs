// What the official socket.io-client costs as a load generator: CPU per new connection and
// memory per held connection, with the seed's options. For docs/benchmarks.md's note on why
// bench/seed.py drives pushkit.sioclient instead.
//
//   node bench/node/client_cost.mjs ws://127.0.0.1:3000 [count=8000] [rate=1000]
//
// Opens `count` sockets at `rate` a second, each emitting joinByGameId once connected; prints
// one JSON line once all are connected (or after 60 s): connected, errors, CPU seconds spent,
// CPU ms per connection, RSS growth per connection in KB.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { io } = require("socket.io-client");

const [url, count = 8000, rate = 1000] = [process.argv[2], Number(process.argv[3] ?? 8000),
  Number(process.argv[4] ?? 1000)];
if (!url) {
  console.error("usage: node client_cost.mjs URL [count] [rate]");
  process.exit(2);
}
// The seed's connectionOptions.
const options = {
  forceNew: true, timeout: 5000, transports: ["websocket"], reconnection: true,
  reconnectionAttempts: 10, reconnectionDelay: 10000, reconnectionDelayMax: 20000,
  randomizationFactor: 1,
};
const rss0 = process.memoryUsage().rss;
const cpu0 = process.cpuUsage();
let connected = 0;
let errors = 0;
const sockets = [];

function report() {
  const cpu = process.cpuUsage(cpu0);
  const seconds = (cpu.user + cpu.system) / 1e6;
  console.log(JSON.stringify({
    connected, errors, cpuSeconds: seconds,
    cpuMsPerConnection: (1000 * seconds) / Math.max(connected, 1),
    rssKbPerConnection: (process.memoryUsage().rss - rss0) / 1024 / Math.max(connected, 1),
  }));
  process.exit(errors ? 1 : 0);
}

setTimeout(report, 60000);
for (let i = 0; i < count; i++) {
  setTimeout(() => {
    const socket = io(url, options);
    socket.on("connect", () => {
      socket.emit("joinByGameId", { gameId: "sampleGameId" });
      connected += 1;
      if (connected === count) setTimeout(report, 1000);
    });
    socket.on("connect_error", () => { errors += 1; });
    sockets.push(socket);
  }, (i * 1000) / rate);
}
