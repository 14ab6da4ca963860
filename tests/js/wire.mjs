// What a viewer reports, the same in Node (viewer.mjs) and in the browser (viewer.html), for
// socket.io-client 4.x and 2.x alike: every engine.io session opened (with its heartbeat from
// the handshake) and its upgrade, each connect (which joins the game, as the seed's client
// does), disconnects, connect errors and every event. `say` takes one record.
export function wire(socket, gameId, say) {
  const manager = socket.io;
  // Each (re)connection opens a new engine.io socket; its upgrade is what proves a client that
  // started on polling ended on websocket. Both versions' managers emit "open" per engine,
  // before the socket's "connect", so a fast upgrade is not missed.
  manager.on("open", () => {
    const engine = manager.engine;
    // engine.io-client 6 keeps the handshake's heartbeat in private fields, 3.x in public ones.
    const pingInterval = engine._pingInterval ?? engine.pingInterval;
    const pingTimeout = engine._pingTimeout ?? engine.pingTimeout;
    say({ type: "open", transport: engine.transport.name, pingInterval, pingTimeout });
    engine.on("upgrade", (transport) => say({ type: "upgrade", transport: transport.name }));
  });
  socket.on("connect", () => {
    say({ type: "connect", transport: manager.engine.transport.name });
    socket.emit("joinByGameId", { gameId }, (ack) => say({ type: "ack", ack }));
  });
  socket.on("disconnect", (reason) => say({ type: "disconnect", reason }));
  // 4.x passes an Error; 2.x passes engine.io-client's error, an Error or a bare string.
  socket.on("connect_error", (error) =>
    say({ type: "connect_error", message: error?.message ?? String(error) }),
  );
  if (typeof socket.onAny === "function") {
    socket.onAny((name, data) => say({ type: "event", name, data }));
  } else {
    // 2.x has no onAny: every incoming event goes through `onevent`.
    const onevent = socket.onevent;
    socket.onevent = function (packet) {
      const [name, data] = packet.data ?? [];
      say({ type: "event", name, data });
      onevent.call(this, packet);
    };
  }
}
