// node_ws: the Node.js anchor of livehub's benchmark, written on the `ws` package the way its
// README broadcasts ("for each client of wss.clients: client.send(data)"), per-message deflate
// off. It speaks the benchmark's plain anchor protocol:
//   /sub  a subscriber: joins the broadcast set on connect, whatever it sends is ignored
//   /pub  a publisher: each text message it sends goes, unchanged, to every subscriber
//   /ws   echo: replies "Message text was: <text>" (the RPC round-trip anchor)
// Usage: node bench/servers/node_ws.js PORT     (listens on 127.0.0.1 only)
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 18765);
const subscribers = new Set();
const httpServer = http.createServer((req, res) => { res.writeHead(404).end(); });
const wss = new WebSocketServer({ server: httpServer, perMessageDeflate: false });

wss.on('connection', (socket, request) => {
  socket.on('error', () => {});
  const path = new URL(request.url, 'http://localhost').pathname;
  if (path === '/sub') {
    subscribers.add(socket);
    socket.on('close', () => subscribers.delete(socket));
  } else if (path === '/pub') {
    socket.on('message', (message) => {
      for (const sub of subscribers) sub.send(message, { binary: false });
    });
  } else if (path === '/ws') {
    socket.on('message', (message) => socket.send('Message text was: ' + message.toString()));
  } else {
    socket.close(1008, 'unknown path');
  }
});

httpServer.listen(port, '127.0.0.1', () => console.log(`node_ws on 127.0.0.1:${port}`));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
