// Live chat on the official SDK: one subscription per room, history on entering, presence,
// join/leave, and recovery after a reconnect (the SDK asks for what it missed by itself).
import { $, avatar, clock, connect, currentUser, el, switchUser, toast, validName } from "./common.js";

const ROOMS = ["lobby", "python", "random"];
const user = currentUser();
const client = connect(user);
const params = new URLSearchParams(location.search);
let room = /^[a-z0-9-]{1,32}$/.test(params.get("room") || "") ? params.get("room") : "lobby";
let sub = null;

const list = $("#messages");
const shown = new Set(); // offsets already on screen: history and live publications overlap
const online = new Map(); // client id -> user
let epoch = "";

$("#nick").value = user;
$("#nick-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("#nick").value.trim();
  if (name === user) return;
  if (!validName(name)) return toast("Nicknames: letters, digits, - and _", "error");
  switchUser(name);
});

function message(data, offset) {
  const who = data.user || "server";
  const item = el(
    "li",
    { class: data.user === user ? "msg mine" : "msg", dataset: { offset } },
    avatar(who),
    el(
      "div",
      { class: "body" },
      el("div", { class: "meta" }, el("span", { class: "who" }, who), el("span", { class: "when" }, clock(data.time || Date.now() / 1000, false))),
      el("div", { class: "text" }, String(data.text ?? JSON.stringify(data))),
    ),
  );
  return item;
}

/** Show a publication in offset order, once, whether it came live or from history. */
function show(data, offset) {
  if (offset) {
    if (shown.has(offset)) return;
    shown.add(offset);
  }
  const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  const item = message(data, offset || Number.MAX_SAFE_INTEGER);
  let after = list.lastElementChild;
  while (after && Number(after.dataset.offset) > Number(item.dataset.offset)) after = after.previousElementSibling;
  after ? after.after(item) : list.prepend(item);
  if (stick) list.scrollTop = list.scrollHeight;
}

function notice(text) {
  const last = list.lastElementChild;
  list.append(el("li", { class: "msg system", dataset: { offset: last ? last.dataset.offset : 0 } }, text));
  list.scrollTop = list.scrollHeight;
}

function renderOnline() {
  const users = [...new Set(online.values())].sort();
  $("#online-count").textContent = users.length;
  $("#online").replaceChildren(
    ...users.map((name) => el("li", {}, avatar(name, true), el("span", {}, name === user ? `${name} (you)` : name))),
  );
}

function renderRooms() {
  const names = ROOMS.includes(room) ? ROOMS : [...ROOMS, room];
  $("#rooms").replaceChildren(
    ...names.map((name) =>
      el("a", { href: `?room=${name}`, "aria-current": name === room ? "true" : false, onclick: (e) => (e.preventDefault(), enter(name)) }, `# ${name}`),
    ),
  );
}

async function loadHistory() {
  const { publications } = await sub.history({ limit: 50, reverse: true });
  for (const pub of publications.reverse()) show(pub.data, pub.offset);
  if (!list.children.length) list.append(el("li", { class: "msg system empty-room" }, "No messages yet: say hello!"));
}

async function loadPresence() {
  const { clients } = await sub.presence();
  online.clear();
  for (const [id, info] of Object.entries(clients)) online.set(id, info.user);
  renderOnline();
}

function enter(name) {
  if (sub) client.removeSubscription(sub); // unsubscribes: we leave the old room's presence
  room = name;
  const url = new URL(location.href);
  url.searchParams.set("room", room);
  history.replaceState(null, "", url);
  list.replaceChildren();
  shown.clear();
  online.clear();
  renderOnline();
  renderRooms();
  $("#room-title").textContent = `#${room}`;
  $("#text").placeholder = `Message #${room} as ${user}`;

  sub = client.newSubscription(`chat.${room}`, { joinLeave: true });
  sub.on("subscribed", async (ctx) => {
    const position = ctx.streamPosition || {};
    if (position.epoch && position.epoch !== epoch) {
      if (epoch) list.replaceChildren(), shown.clear(); // the server's history was reset
      epoch = position.epoch;
    }
    $("#room-meta").textContent = ctx.wasRecovering
      ? ctx.recovered ? "reconnected: missed messages recovered" : "reconnected"
      : "";
    try {
      if (!(ctx.wasRecovering && ctx.recovered)) await loadHistory();
      await loadPresence();
    } catch (err) {
      toast(`room: ${err.message}`, "error");
    }
  });
  sub.on("publication", (ctx) => {
    list.querySelector(".empty-room")?.remove();
    show(ctx.data, ctx.offset);
  });
  sub.on("join", ({ info }) => {
    const isNew = ![...online.values()].includes(info.user);
    online.set(info.client, info.user);
    renderOnline();
    if (isNew && info.user !== user) notice(`${info.user} joined`);
  });
  sub.on("leave", ({ info }) => {
    online.delete(info.client);
    renderOnline();
    if (![...online.values()].includes(info.user)) notice(`${info.user} left`);
  });
  sub.on("error", (ctx) => toast(`chat: ${ctx.error.message}`, "error"));
  sub.subscribe();
}

$("#composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("#text");
  const text = input.value.trim();
  if (!text) return;
  try {
    await sub.publish({ text }); // the server adds who and when (see livehub/demos/chat.py)
    input.value = "";
  } catch (err) {
    toast(`not sent: ${err.message}`, "error");
  }
});

$("#room-form").addEventListener("submit", (event) => {
  event.preventDefault();
  enter($("#new-room").value.trim().toLowerCase());
  $("#new-room").value = "";
});

enter(room);
