// The fastest Node anchor: the same socket.io 4.8 server as server.js, on uWebSockets.js
// (`io.attachApp`), as socket.io's docs describe for speed. uWebSockets.js comes from npm's
// @trufflesuite/uws-js-unofficial 20.30 (an unofficial build: upstream does not publish to the
// registry), installed without its optional add-ons (bench/node/.npmrc: omit=optional).
// Rooms broadcast through uWS's own pub/sub, which attachApp wires in.
//
//   node server_uws.js PORT
//
// POST /publish {"gameId", "event", "data"} emits to room game:<gameId>. No metrics: the
// bench reads memory and CPU from /proc.
const { App } = require("@trufflesuite/uws-js-unofficial");
const { Server } = require("socket.io");

const [port] = process.argv.slice(2).map(Number);

const app = App();
const io = new Server({ transports: ["websocket"], perMessageDeflate: false });
io.attachApp(app);

app.post("/publish", (res) => {
  const chunks = [];
  res.onAborted(() => {
    res.aborted = true;
  });
  res.onData((chunk, isLast) => {
    chunks.push(Buffer.from(chunk.slice(0)));
    if (!isLast || res.aborted) return;
    const { gameId, event, data } = JSON.parse(Buffer.concat(chunks).toString());
    io.to(`game:${gameId}`).emit(event, data);
    res.cork(() => {
      res
        .writeStatus("202 Accepted")
        .writeHeader("content-type", "application/json")
        .end(JSON.stringify({ room: `game:${gameId}` }));
    });
  });
});

io.on("connection", (socket) => {
  socket.on("joinByGameId", (payload, ack) => {
    socket.join(`game:${payload.gameId}`);
    if (typeof ack === "function") ack({ ok: true });
  });
  socket.on("visibilityChange", () => {});
});

app.listen("127.0.0.1", port, (token) => {
  if (!token) {
    console.error(`cannot listen on ${port}`);
    process.exit(1);
  }
  console.log(`listening on ${port}`);
});
