// The reference: the seed's own system, a Node socket.io v4 server instrumented with
// socket.io-prometheus-metrics, with the same events and publish route as pushscale.
//
//   node server.js PORT METRICS_PORT
//
// POST /publish {"gameId", "event", "data"} emits to room game:<gameId>. No Redis: a single
// process, as one pm2 worker of the seed was.
const http = require("http");
const { Server } = require("socket.io");
const ioMetrics = require("socket.io-prometheus-metrics");

const [port, metricsPort] = process.argv.slice(2).map(Number);

const httpServer = http.createServer((req, res) => {
  if (req.method === "POST" && req.url === "/publish") {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      const { gameId, event, data } = JSON.parse(body);
      io.to(`game:${gameId}`).emit(event, data);
      res.writeHead(202, { "content-type": "application/json" });
      res.end(JSON.stringify({ room: `game:${gameId}` }));
    });
    return;
  }
  res.writeHead(404);
  res.end();
});

const io = new Server(httpServer, { transports: ["websocket"], perMessageDeflate: false });
io.on("connection", (socket) => {
  socket.on("joinByGameId", (payload, ack) => {
    socket.join(`game:${payload.gameId}`);
    if (typeof ack === "function") ack({ ok: true });
  });
  socket.on("visibilityChange", () => {});
});

// socket.io-prometheus-metrics was written for socket.io v2, which exposed `io.nsps`.
io.nsps = Object.fromEntries(io._nsps);
ioMetrics.metrics(io, { port: metricsPort, checkForNewNamespaces: false, collectDefaultMetrics: true });

httpServer.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`));
