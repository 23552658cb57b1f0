// Streaming ticker: many updates a second, coalesced to the latest tick per symbol and drawn
// once per animation frame; a snapshot RPC fills the table at once for a new viewer.
import { $, connect, el } from "./common.js";

const client = connect(null);
const latest = new Map(); // symbol -> newest tick, written by publications, read by frames
const rows = new Map(); // symbol -> {row, price, change, spark, count, history, shown}
let received = 0;
let coalesced = 0;
let frames = 0;

function row(symbol) {
  let r = rows.get(symbol);
  if (r) return r;
  const cells = {
    price: el("td", { class: "num price" }, "—"),
    change: el("td", { class: "num" }, ""),
    spark: el("canvas", { class: "spark", width: 120, height: 26 }),
    count: el("td", { class: "num hide-sm muted" }, "0"),
  };
  const tr = el("tr", { dataset: { symbol } }, el("td", { class: "sym" }, symbol), cells.price, cells.change, el("td", { class: "hide-sm" }, cells.spark), cells.count);
  r = { tr, ...cells, history: [], updates: 0, shown: null };
  rows.set(symbol, r);
  const sorted = [...rows.keys()].sort();
  const next = rows.get(sorted[sorted.indexOf(symbol) + 1]);
  next ? next.tr.before(tr) : $("#rows").append(tr);
  return r;
}

function take(tick) {
  const current = latest.get(tick.symbol);
  if (current && current.seq >= tick.seq) return; // the snapshot may be older than a live tick
  latest.set(tick.symbol, tick);
}

function draw() {
  if ($("#slow").checked) {
    const until = performance.now() + 180; // a busy main thread, as on an old phone
    while (performance.now() < until);
  }
  let newest = 0;
  for (const [symbol, tick] of latest) {
    const r = row(symbol);
    if (r.shown === tick) continue;
    const up = r.shown ? tick.price >= r.shown.price : true;
    r.shown = tick;
    r.price.textContent = tick.price.toFixed(2);
    r.change.textContent = `${tick.change >= 0 ? "+" : ""}${tick.change.toFixed(2)}%`;
    r.change.className = `num ${tick.change >= 0 ? "up" : "down"}`;
    r.tr.className = up ? "tick-up" : "tick-down";
    r.history.push(tick.price);
    if (r.history.length > 120) r.history.shift();
    r.count.textContent = String(r.updates);
    sparkline(r.spark, r.history, tick.change >= 0 ? "#18794e" : "#cd2b31");
    newest = Math.max(newest, tick.time);
  }
  if (newest) $("#age").textContent = String(Math.max(0, Math.round(Date.now() - newest * 1000)));
  frames++;
  requestAnimationFrame(draw);
}

function sparkline(canvas, values, color) {
  if (!canvas.offsetParent) return; // hidden on small screens
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const min = Math.min(...values);
  const span = Math.max(...values) - min || 1;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = (i / Math.max(1, values.length - 1)) * (width - 2) + 1;
    const y = height - 2 - ((v - min) / span) * (height - 4);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.stroke();
}

const sub = client.newSubscription("ticker:prices");
sub.on("subscribed", async () => {
  const { data } = await client.rpc("ticker.snapshot", {});
  data.ticks.forEach(take);
});
sub.on("publication", (ctx) => {
  received++;
  coalesced++;
  const r = rows.get(ctx.data.symbol);
  if (r) r.updates++;
  take(ctx.data);
});
sub.subscribe();

let lastFrames = 0;
setInterval(() => {
  $("#rate").textContent = String(received);
  $("#fps").textContent = String(frames - lastFrames);
  $("#coalesced").textContent = frames > lastFrames ? (coalesced / (frames - lastFrames)).toFixed(1) : String(coalesced);
  received = 0;
  coalesced = 0;
  lastFrames = frames;
}, 1000);

requestAnimationFrame(draw);
