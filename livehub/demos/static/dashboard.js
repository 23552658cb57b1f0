// Live dashboard: two channels written by server tasks, drawn on plain canvas charts.
import { LineChart } from "./chart.js";
import { $, clock, connect, flash, plural } from "./common.js";

const client = connect(null); // read-only page: anonymous is enough

const charts = {
  throughput: new LineChart($("#c-throughput"), [
    { key: "deliveries_per_s", color: "#6e56cf" },
    { key: "publications_per_s", color: "#12a594" },
  ]),
  connections: new LineChart($("#c-connections"), [
    { key: "connections", color: "#6e56cf" },
    { key: "subscriptions", color: "#f5a524" },
  ]),
  orders: new LineChart($("#c-orders"), [{ key: "orders_per_min", color: "#12a594" }]),
  latency: new LineChart($("#c-latency"), [
    { key: "latency_ms", color: "#cd2b31" },
    { key: "cpu_percent", color: "#6e56cf" },
  ]),
};

function tile(id, value) {
  const node = $(id);
  const text = typeof value === "number" ? value.toLocaleString(undefined, { maximumFractionDigits: 1 }) : String(value);
  if (node.textContent !== text) {
    node.textContent = text;
    flash(node.closest(".tile"));
  }
}

function onMetrics(m, live) {
  charts.throughput.push(m.time, m);
  charts.connections.push(m.time, m);
  if (!live) return;
  tile("#t-connections", m.connections);
  tile("#t-users", plural(m.users, "user"));
  tile("#t-deliveries", m.deliveries_per_s);
  tile("#t-publications", m.publications_per_s);
  tile("#t-channels", plural(m.channels, "channel"));
  $("#updated").textContent = clock(m.time);
}

function onSensors(s, live) {
  charts.orders.push(s.time, s);
  charts.latency.push(s.time, s);
  if (!live) return;
  tile("#t-orders", s.orders_per_min);
  tile("#t-latency", s.latency_ms);
  tile("#t-cpu", s.cpu_percent);
}

/** Subscribe, back-fill from history once subscribed, then draw every publication. */
function follow(channel, handle) {
  const sub = client.newSubscription(channel);
  sub.on("subscribed", async () => {
    const { publications } = await sub.history({ limit: 120, reverse: true });
    publications.reverse().forEach((pub, i) => handle(pub.data, i === publications.length - 1));
  });
  sub.on("publication", (ctx) => handle(ctx.data, true));
  sub.subscribe();
}

follow("dashboard.metrics", onMetrics);
follow("dashboard.sensors", onSensors);
