// The official Socket.IO client (socket.io-client, as the sibling services' frontends import
// it) and Node's own fetch, driven line by line by tests/api/socketio.rs.
//
// stdin, one JSON command a line:
//   {"op":"connect","url":"http://127.0.0.1:PORT","options":{...io() options...}}
//   {"op":"emit","event":"join","args":[{"token":"..."}]}
//   {"op":"fetch","id":1,"url":"http://...","init":{"method":"POST","headers":{...},"body":"..."}}
//   {"op":"close"}
// stdout, one JSON report a line:
//   {"type":"connect","transport":"websocket"}      {"type":"upgrade","transport":"websocket"}
//   {"type":"connect_error","message":"..."}        {"type":"disconnect","reason":"..."}
//   {"type":"event","event":"qr-code","args":[...]} {"type":"fetch","id":1,"status":200,"json":{...}}
//   {"type":"error","message":"..."} (a command this driver could not run)
"use strict";

const { io } = require("socket.io-client");
const readline = require("node:readline");

let socket = null;

function report(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

function connect(url, options) {
  socket = io(url, Object.assign({ reconnection: false }, options || {}));
  socket.io.on("open", () => {
    socket.io.engine.on("upgrade", (transport) => report({ type: "upgrade", transport: transport.name }));
  });
  socket.on("connect", () => report({ type: "connect", transport: socket.io.engine.transport.name }));
  socket.on("connect_error", (err) => report({ type: "connect_error", message: String(err && err.message) }));
  socket.on("disconnect", (reason) => report({ type: "disconnect", reason }));
  socket.onAny((event, ...args) => report({ type: "event", event, args }));
}

async function fetchJson(id, url, init) {
  try {
    const response = await fetch(url, init || {});
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch (_) {
      json = null;
    }
    report({ type: "fetch", id, status: response.status, json });
  } catch (err) {
    report({ type: "fetch", id, status: 0, json: null, error: String(err) });
  }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  let command;
  try {
    command = JSON.parse(line);
  } catch (err) {
    report({ type: "error", message: "not JSON: " + line });
    return;
  }
  switch (command.op) {
    case "connect":
      connect(command.url, command.options);
      break;
    case "emit":
      if (!socket) return report({ type: "error", message: "emit before connect" });
      socket.emit(command.event, ...(command.args || []));
      break;
    case "fetch":
      fetchJson(command.id, command.url, command.init);
      break;
    case "close":
      if (socket) socket.disconnect();
      process.exit(0);
      break;
    default:
      report({ type: "error", message: "unknown op " + command.op });
  }
});
// The test went away: so do we.
lines.on("close", () => process.exit(0));
