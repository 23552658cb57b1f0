// Notifications: the server subscribes this connection to the user's personal channel "#<user>"
// (client.subscribe_to_user_personal_channel), so they arrive as client-level publications.
import { $, clock, connect, currentUser, el, toast } from "./common.js";

const user = currentUser("alice");
const channel = `#${user}`;
const client = connect(user);
const seen = new Set();
const readKey = `livehub.read.${user}`;
let read = JSON.parse(localStorage.getItem(readKey) || '{"epoch":"","offset":0}');
let epoch = "";

$("#me").textContent = user;
$("#channel").textContent = channel;
$("#to").value = user;
$("#users").replaceChildren(
  ...["alice", "bob", "carol"].map((name) =>
    el("a", { class: "chip", href: `?user=${name}`, "aria-current": name === user ? "true" : false }, name),
  ),
);

function isUnread(offset) {
  return read.epoch !== epoch || offset > read.offset;
}

function updateBadge() {
  const unread = [...$("#inbox").querySelectorAll(".note.unread")].length;
  const badge = $("#badge");
  badge.hidden = unread === 0;
  badge.textContent = unread > 99 ? "99+" : String(unread);
  document.title = `${unread ? `(${unread}) ` : ""}Notifications · livehub`;
}

function add(note, offset, live) {
  if (seen.has(offset)) return;
  seen.add(offset);
  $("#inbox .empty")?.remove();
  const item = el(
    "li",
    { class: `note ${note.level || "info"}${isUnread(offset) ? " unread" : ""}`, dataset: { offset } },
    el("span", { class: "kind" }),
    el("div", {}, el("div", { class: "title" }, String(note.title ?? "")), el("div", { class: "text" }, String(note.text ?? ""))),
    el("span", { class: "when" }, note.time ? clock(note.time) : ""),
  );
  // newest first
  let before = $("#inbox").firstElementChild;
  while (before && Number(before.dataset.offset) > offset) before = before.nextElementSibling;
  before ? before.before(item) : $("#inbox").append(item);
  updateBadge();
  if (live) toast(`🔔 ${note.title}`);
}

client.on("subscribed", async (ctx) => {
  if (ctx.channel !== channel) return;
  epoch = ctx.streamPosition?.epoch || "";
  try {
    const { publications } = await client.history(channel, { limit: 20, reverse: true });
    for (const pub of publications) add(pub.data, pub.offset, false);
  } catch (err) {
    toast(`history: ${err.message}`, "error");
  }
});
client.on("publication", (ctx) => {
  if (ctx.channel === channel) add(ctx.data, ctx.offset, true);
});

$("#read").addEventListener("click", () => {
  const top = Math.max(0, ...seen);
  read = { epoch, offset: top };
  localStorage.setItem(readKey, JSON.stringify(read));
  for (const node of $("#inbox").querySelectorAll(".unread")) node.classList.remove("unread");
  updateBadge();
});

// Sending is a plain HTTP call: any backend code can notify a user the same way.
$("#send").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = Object.fromEntries(new FormData(event.target));
  const reply = await fetch("/demos/notify", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!reply.ok) return toast(`not sent: ${reply.status}`, "error");
  const sent = await reply.json();
  $("#sent").textContent = `sent to ${sent.channel}: ${sent.delivered_to} window(s) connected`;
});

function curl() {
  const body = JSON.stringify({ to: $("#to").value || "alice", title: "Hello", text: "from curl" });
  $("#curl").textContent = `curl -X POST ${location.origin}/demos/notify \\\n  -H 'content-type: application/json' \\\n  -d '${body}'`;
}
$("#to").addEventListener("input", curl);
curl();
