// A small live plot on a canvas: lag behind the input (s, left axis) and share of speech dubbed per target language
// over the last minute (%, right axis).

const WINDOW_S = 300;
export const LAG_COLOR = "#3461c1";
export const RATIO_COLORS = ["#1d7f4e", "#b3261e", "#a86400", "#7b3fb5", "#0f7c8c"];

export class History {
  constructor(limit = 900) {
    this.limit = limit;
    this.points = [];
  }

  // ratios: {language: share dubbed over the last minute (0..1) or null}
  add(lag, ratios) {
    this.points.push({ t: Date.now() / 1000, lag, ratios });
    if (this.points.length > this.limit) this.points.shift();
  }
}

export function drawPlot(canvas, history) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  const pad = { left: 34, right: 38, top: 10, bottom: 20 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  const now = Date.now() / 1000;
  const points = history.points.filter((p) => now - p.t <= WINDOW_S);
  const lags = points.map((p) => p.lag).filter((v) => typeof v === "number");
  const lagMax = Math.max(1, Math.ceil(Math.max(0, ...lags) * 1.2));
  const x = (t) => pad.left + w * (1 - (now - t) / WINDOW_S);
  const yLag = (v) => pad.top + h * (1 - v / lagMax);
  const yRatio = (v) => pad.top + h * (1 - v);

  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#e2e5eb";
  ctx.fillStyle = "#6b7385";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.top + (h * i) / 4;
    ctx.beginPath();
    ctx.moveTo(pad.left, y);
    ctx.lineTo(pad.left + w, y);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(((lagMax * (4 - i)) / 4).toFixed(1), pad.left - 4, y + 4);
    ctx.textAlign = "left";
    ctx.fillText(`${(100 * (4 - i)) / 4}%`, pad.left + w + 4, y + 4);
  }
  ctx.textAlign = "center";
  for (let m = 0; m <= 5; m += 1) ctx.fillText(m ? `-${m} min` : "now", x(now - m * 60), height - 5);

  line(ctx, points, (p) => p.lag, x, yLag, LAG_COLOR);
  const languages = [...new Set(points.flatMap((p) => Object.keys(p.ratios || {})))];
  languages.forEach((language, i) => {
    const color = RATIO_COLORS[i % RATIO_COLORS.length];
    line(ctx, points, (p) => (p.ratios || {})[language], x, yRatio, color);
    ctx.fillStyle = color;
    ctx.textAlign = "left";
    ctx.fillText(language, pad.left + 6 + i * 26, pad.top + 12);
  });
  if (!points.length) {
    ctx.textAlign = "center";
    ctx.fillText("waiting for figures", pad.left + w / 2, pad.top + h / 2);
  }
}

function line(ctx, points, value, x, y, color) {
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  let drawing = false;
  for (const p of points) {
    const v = value(p);
    if (typeof v !== "number") {
      drawing = false;
      continue;
    }
    if (drawing) ctx.lineTo(x(p.t), y(v));
    else ctx.moveTo(x(p.t), y(v));
    drawing = true;
  }
  ctx.stroke();
}
