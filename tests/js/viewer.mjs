// One viewer with an official socket.io client, configured like the seed's load tester
// (reconnection on, randomizationFactor 1) but with short delays so a test does not wait
// 10-20 s. Every connect (re)joins the game, as the seed's client does.
// Prints one JSON line per thing that happens; the Python test reads them.
//
//   node viewer.mjs URL GAME_ID [KIND]
//
// KIND picks the client and its transports, as the viewers in the field have them:
//   v4            socket.io-client 4.x, default options: polling first, then upgrade
//   v4-websocket  4.x, websocket only (the seed's load tester; the default KIND)
//   v4-polling    4.x, long-polling only (networks that block websockets)
//   v2            socket.io-client 2.x (engine.io protocol 3), default transports
//   v2-websocket  2.x, websocket only
//
// Records: {type: "open", transport, pingInterval, pingTimeout} (an engine.io session opened, its
// heartbeat in ms from the handshake), {type: "connect", transport},
// {type: "upgrade", transport}, {type: "ack", ack},
// {type: "disconnect", reason}, {type: "connect_error", message}, {type: "event", name, data}.
import { createInterface } from "node:readline";
import { io as ioV4 } from "socket.io-client";
import ioV2 from "socket.io-client-v2";
import { wire } from "./wire.mjs";

const [url, gameId, kind = "v4-websocket"] = process.argv.slice(2);
const say = (record) => process.stdout.write(JSON.stringify(record) + "\n");

const reconnecting = {
  reconnection: true,
  reconnectionAttempts: 10,
  reconnectionDelay: 200,
  reconnectionDelayMax: 500,
  randomizationFactor: 1,
};
const clients = {
  v4: () => ioV4(url, { forceNew: true, ...reconnecting }),
  "v4-websocket": () => ioV4(url, { forceNew: true, transports: ["websocket"], ...reconnecting }),
  "v4-polling": () => ioV4(url, { forceNew: true, transports: ["polling"], ...reconnecting }),
  // The spelling the seed's 2.x viewers used; 2.x also takes `forceNew`.
  v2: () => ioV2(url, { "force new connection": true, ...reconnecting }),
  "v2-websocket": () =>
    ioV2(url, { "force new connection": true, transports: ["websocket"], ...reconnecting }),
};
if (!(kind in clients)) {
  process.stderr.write(`unknown client kind ${kind}; one of ${Object.keys(clients)}\n`);
  process.exit(2);
}
const socket = clients[kind]();
wire(socket, gameId, say);

// The test can make the client send anything: one JSON [event, payload] per line.
const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const [event, payload] = JSON.parse(line);
  socket.emit(event, payload, (ack) => say({ type: "ack", ack }));
});
lines.on("close", () => {
  socket.close();
  // Not an immediate exit: over polling the goodbye (DISCONNECT, then engine.io's close) rides
  // on POSTs still in flight, and cutting them off would leave the server a broken transport
  // instead. Node exits by itself once they are done; the timer only bounds a straggler.
  setTimeout(() => process.exit(0), 1000).unref();
});
