// The seed endpoints with the browser's plain WebSocket: send text, show what comes back.
import { $, el } from "./common.js";

const base = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;

for (const panel of document.querySelectorAll(".seed")) {
  const { path, mode } = panel.dataset;
  const log = $(".log", panel);
  const input = $("input", panel);
  let socket = null;

  const line = (kind, text) => {
    log.append(el("li", { class: kind }, text));
    log.scrollTop = log.scrollHeight;
  };

  function open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(base + path);
      ws.addEventListener("open", () => (line("sys", `connected to ${path}`), resolve(ws)));
      ws.addEventListener("message", (event) => line("in", `← ${event.data}`));
      ws.addEventListener("close", (event) => {
        line("sys", `closed (${event.code})`);
        if (socket === ws) socket = null;
      });
      ws.addEventListener("error", () => reject(new Error(`cannot connect to ${path}`)));
    });
  }

  $("form", panel).addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      if (!socket || mode === "once") socket = await open();
      socket.send(input.value);
      line("out", `→ ${input.value}`);
    } catch (err) {
      line("sys", err.message);
    }
  });
}

// Show the live-connection pill as idle: this page does not use the SDK.
$("#conn").lastElementChild.textContent = "raw WebSocket";
