// One viewer with the official socket.io client, configured like the seed's load tester
// (websocket only, reconnection on, randomizationFactor 1) but with short delays so a test
// does not wait 10-20 s. Every connect (re)joins the game, as the seed's client does.
// Prints one JSON line per thing that happens; the Python test reads them.
//
//   node viewer.mjs URL GAME_ID
import { io } from "socket.io-client";

const [url, gameId] = process.argv.slice(2);
const say = (record) => process.stdout.write(JSON.stringify(record) + "\n");

const socket = io(url, {
  forceNew: true,
  transports: ["websocket"],
  reconnection: true,
  reconnectionAttempts: 10,
  reconnectionDelay: 200,
  reconnectionDelayMax: 500,
  randomizationFactor: 1,
});

socket.on("connect", () => {
  say({ type: "connect" });
  socket.emit("joinByGameId", { gameId }, (ack) => say({ type: "ack", ack }));
});
socket.on("disconnect", (reason) => say({ type: "disconnect", reason }));
socket.on("connect_error", (error) => say({ type: "connect_error", message: error.message }));
socket.onAny((name, data) => say({ type: "event", name, data }));
process.stdin.on("data", (line) => {
  // The test can make the client send anything: one JSON [event, payload] per line.
  const [event, payload] = JSON.parse(line.toString());
  socket.emit(event, payload, (ack) => say({ type: "ack", ack }));
});
process.stdin.on("end", () => { socket.close(); process.exit(0); });
