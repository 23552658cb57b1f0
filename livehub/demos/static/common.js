// What every demo page shares: who the user is, the connection, and small DOM helpers.
// User data only ever reaches the page through textContent (see el()), never innerHTML.
import { Centrifuge, UnauthorizedError } from "./vendor/centrifuge.js";

export const $ = (selector, root = document) => root.querySelector(selector);

/** el("li", {class: "msg"}, "text", child): strings become text nodes, never HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== undefined && c !== null && c !== false));
  return node;
}

const NAME = /^[A-Za-z0-9_-]{1,24}$/;

/** The user of this window: ?user=..., else the last name used here, else a new guest name. */
export function currentUser(fallback) {
  const fromUrl = new URLSearchParams(location.search).get("user");
  if (fromUrl && NAME.test(fromUrl)) return fromUrl;
  const saved = localStorage.getItem("livehub.user");
  if (saved && NAME.test(saved)) return saved;
  const name = fallback || `guest-${Math.floor(1000 + Math.random() * 9000)}`;
  localStorage.setItem("livehub.user", name);
  return name;
}

/** Switch user: remembered for the next visit, and put in the URL so a reload keeps it. */
export function switchUser(name) {
  if (!NAME.test(name)) throw new Error("letters, digits, - and _ only (at most 24)");
  localStorage.setItem("livehub.user", name);
  const url = new URL(location.href);
  url.searchParams.set("user", name);
  location.assign(url);
}

export const validName = (name) => NAME.test(name);

/** The client endpoint of the server that served this page. */
export const endpoint = () => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/connection/websocket`;

/**
 * The transports the SDK tries, in order: WebSocket, then HTTP-streaming and SSE where WebSocket is
 * unavailable (served when the config enables them, as examples/demo.toml does; their commands go to
 * /emulation).
 */
export const transports = () => [
  { transport: "websocket", endpoint: endpoint() },
  { transport: "http_stream", endpoint: `${location.origin}/connection/http_stream` },
  { transport: "sse", endpoint: `${location.origin}/connection/sse` },
];

/**
 * A connected Centrifuge client for `user` (anonymous when user is null). The JWT comes from
 * the demo route /demos/token; the SDK asks again when it expires.
 */
export function connect(user) {
  const options = { name: "livehub-demo", emulationEndpoint: `${location.origin}/emulation` };
  if (user) {
    options.getToken = async () => {
      const reply = await fetch(`/demos/token?user=${encodeURIComponent(user)}`);
      if (!reply.ok) {
        // a refusal (bad name, no key configured): say why, and the SDK stops trying;
        // a network error throws in fetch() above, and the SDK tries again later
        const detail = (await reply.json().catch(() => ({}))).detail;
        toast(`cannot connect: ${typeof detail === "string" ? detail : `token route answered ${reply.status}`}`, "error");
        throw new UnauthorizedError("no token");
      }
      return (await reply.json()).token;
    };
  }
  const client = new Centrifuge(transports(), options);
  showState(client);
  client.connect();
  window.livehub = { client, user }; // for poking at from the console
  return client;
}

function showState(client) {
  const pill = $("#conn");
  const set = (state, text) => {
    pill.dataset.state = state;
    pill.lastElementChild.textContent = text;
  };
  client.on("connecting", () => set("connecting", "connecting…"));
  client.on("connected", () => set("connected", "live"));
  client.on("disconnected", (ctx) => set("disconnected", ctx.code === 3503 ? "disconnected by server" : "offline"));
  client.on("error", (ctx) => console.warn("livehub:", ctx.error));
}

export function toast(message, kind = "") {
  const box = $("#toasts");
  const node = el("div", { class: `toast ${kind}` }, message);
  box.append(node);
  setTimeout(() => node.remove(), 4000);
}

/** A stable colour for a name (avatars). */
export function colour(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
  return `hsl(${h} 55% 52%)`;
}

export function avatar(name, small = false) {
  return el("span", { class: small ? "avatar sm" : "avatar", style: `background:${colour(name)}` }, (name || "?")[0]);
}

export const clock = (seconds, withSeconds = true) =>
  new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: withSeconds ? "2-digit" : undefined });

export const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// On a phone the navigation scrolls sideways: keep the current page's link in view.
function showCurrentPage() {
  const current = document.querySelector(".nav a[aria-current=page]");
  if (!current) return;
  const nav = current.parentElement;
  nav.scrollLeft = current.offsetLeft - nav.offsetLeft - (nav.clientWidth - current.clientWidth) / 2;
}
showCurrentPage();
addEventListener("resize", showCurrentPage);

export function flash(node) {
  node.classList.remove("flash");
  void node.offsetWidth; // restart the animation
  node.classList.add("flash");
}
