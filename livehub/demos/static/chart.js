// A small time-series line chart on <canvas>: enough for a live dashboard, no library needed.
export class LineChart {
  /** series: [{key, color}]; span: seconds shown, ending now. */
  constructor(canvas, series, { span = 60 } = {}) {
    this.canvas = canvas;
    this.series = series;
    this.span = span;
    this.points = []; // [time, {key: value}], oldest first
    this.pending = false;
    new ResizeObserver(() => this.redraw()).observe(canvas);
  }

  push(time, values) {
    const last = this.points.at(-1);
    if (last && time <= last[0]) {
      // history and live data may overlap: keep time order, drop duplicates
      if (this.points.some(([t]) => t === time)) return;
      this.points.push([time, values]);
      this.points.sort((a, b) => a[0] - b[0]);
    } else {
      this.points.push([time, values]);
    }
    const oldest = time - this.span * 2;
    while (this.points.length && this.points[0][0] < oldest) this.points.shift();
    this.redraw();
  }

  redraw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const { canvas } = this;
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    const ctx = canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    ctx.clearRect(0, 0, width, height);

    const left = 44;
    const right = 8;
    const top = 8;
    const bottom = 20;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const now = Math.max(Date.now() / 1000, this.points.at(-1)?.[0] || 0);
    const start = now - this.span;
    const visible = this.points.filter(([t]) => t >= start - 2);
    let max = 0;
    for (const [, values] of visible) for (const { key } of this.series) max = Math.max(max, values[key] || 0);
    const step = niceCeil(Math.max(max, 4) / 4);
    max = step * 4;
    const x = (t) => left + ((t - start) / this.span) * plotW;
    const y = (v) => top + plotH - (v / max) * plotH;

    // grid and labels
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#8a93a6";
    ctx.strokeStyle = "#eceef3";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const value = step * i;
      const yy = Math.round(y(value)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, yy);
      ctx.lineTo(width - right, yy);
      ctx.stroke();
      ctx.fillText(short(value), left - 8, yy);
    }
    ctx.textBaseline = "alphabetic";
    for (let s = 0; s <= this.span; s += this.span / 4) {
      ctx.textAlign = s === 0 ? "right" : s === this.span ? "left" : "center";
      ctx.fillText(s === 0 ? "now" : `-${s}s`, x(now - s), height - 4);
    }

    // series
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top - 2, plotW + 2, plotH + 4);
    ctx.clip();
    this.series.forEach(({ key, color }, index) => {
      const pts = visible.filter(([, v]) => typeof v[key] === "number").map(([t, v]) => [x(t), y(v[key])]);
      if (!pts.length) return;
      ctx.beginPath();
      pts.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.stroke();
      if (index === 0) {
        ctx.lineTo(pts.at(-1)[0], top + plotH);
        ctx.lineTo(pts[0][0], top + plotH);
        ctx.closePath();
        const gradient = ctx.createLinearGradient(0, top, 0, top + plotH);
        gradient.addColorStop(0, `${color}33`);
        gradient.addColorStop(1, `${color}00`);
        ctx.fillStyle = gradient;
        ctx.fill();
      }
      const [lx, ly] = pts.at(-1);
      ctx.beginPath();
      ctx.arc(lx, ly, 3, 0, Math.PI * 2);
      ctx.fillStyle = color;
      ctx.fill();
    });
    ctx.restore();
  }
}

function niceCeil(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value - 1e-9) return step * power;
  return 10 * power;
}

function short(value) {
  if (value >= 1000) return `${+(value / 1000).toFixed(1)}k`;
  return `${+value.toFixed(value < 10 ? 1 : 0)}`;
}
