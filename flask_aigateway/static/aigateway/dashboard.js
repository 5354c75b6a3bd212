/* flask-aigateway dashboard behaviour. No data is ever turned into code: chart specs come from
   the page's <script type="application/json" id="aigw-charts"> block, confirmation texts and
   copy targets from data-* attributes. */
(function () {
  "use strict";

  var PALETTE = ["#6ea8fe", "#3ecf8e", "#f5b84b", "#f16b6b", "#b18cfe", "#4dd0e1",
                 "#ff8fab", "#9ccc65", "#ffb74d", "#90a4ae"];
  var GRID = "rgba(255, 255, 255, 0.07)";
  var TEXT = "#aab3c7";

  function color(index) {
    return PALETTE[((index % PALETTE.length) + PALETTE.length) % PALETTE.length];
  }

  function alpha(hex, opacity) {
    var value = parseInt(hex.slice(1), 16);
    return "rgba(" + ((value >> 16) & 255) + ", " + ((value >> 8) & 255) + ", " +
      (value & 255) + ", " + opacity + ")";
  }

  function money(value) {
    var abs = Math.abs(value);
    var digits = abs === 0 ? 2 : abs >= 1 ? 2 : abs >= 0.01 ? 4 : 6;
    return "$" + Number(value).toLocaleString("en-US", {
      minimumFractionDigits: digits, maximumFractionDigits: digits
    });
  }

  function moneyTick(value) {
    var rounded = Number(Number(value).toPrecision(3));
    return "$" + rounded.toLocaleString("en-US", { maximumFractionDigits: 6 });
  }

  function count(value) {
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: 1 });
  }

  function empty(canvas, message) {
    var note = document.createElement("div");
    note.className = "chart-empty";
    note.textContent = message;
    canvas.replaceWith(note);
  }

  function hasData(spec) {
    if (!spec.labels || spec.labels.length === 0) return false;
    return spec.datasets.some(function (set) {
      return set.data.some(function (v) { return v !== 0; });
    });
  }

  function datasets(spec) {
    return spec.datasets.map(function (set, i) {
      var base = color(set.color === undefined ? i : set.color);
      if (spec.kind === "doughnut") {
        return {
          label: set.label, data: set.data,
          backgroundColor: spec.labels.map(function (_, j) {
            return color(spec.colors ? spec.colors[j] : j);
          }),
          borderColor: "#151a24", borderWidth: 2
        };
      }
      /* A dataset may draw as a line on a bar chart and use the right-hand axis ("y1"):
         spec.right describes that axis (two measures, two units, one chart). */
      var extra = set.axis === "right" ? { yAxisID: "y1", money: !!spec.right.money } : {};
      if (set.type) extra.type = set.type;
      if ((set.type || spec.kind) === "line") {
        return Object.assign({
          label: set.label, data: set.data, borderColor: base, backgroundColor: alpha(base, 0.18),
          fill: !!set.fill, tension: 0.3, borderWidth: 2, order: 0,
          pointRadius: set.data.length > 14 ? 0 : 2, pointHoverRadius: 4, pointHitRadius: 8
        }, extra);
      }
      return Object.assign({
        label: set.label, data: set.data, backgroundColor: alpha(base, 0.85),
        hoverBackgroundColor: base, borderRadius: 3, maxBarThickness: 26, order: 1
      }, extra);
    });
  }

  function scales(spec) {
    var tickFormat = spec.money ? moneyTick : count;
    var axes = spec.axes || {};
    var stacked = !!spec.stacked;
    var category = {
      stacked: stacked,
      grid: { display: false },
      border: { color: GRID },
      ticks: { color: TEXT, autoSkip: true, maxRotation: 0 },
      title: { display: !!axes[spec.horizontal ? "y" : "x"], text: axes[spec.horizontal ? "y" : "x"], color: TEXT }
    };
    if (!spec.horizontal) {
      category.ticks.callback = function (value) {
        var label = String(this.getLabelForValue(value));
        return /^\d{4}-\d{2}-\d{2}$/.test(label) ? label.slice(5) : label;
      };
    } else {
      category.ticks.callback = function (value) {
        var label = String(this.getLabelForValue(value));
        return label.length > 22 ? label.slice(0, 21) + "…" : label;
      };
    }
    var linear = {
      stacked: stacked,
      beginAtZero: true,
      grid: { color: GRID },
      border: { display: false },
      ticks: { color: TEXT, maxRotation: 0, callback: function (value) { return tickFormat(value); } },
      title: { display: !!axes[spec.horizontal ? "x" : "y"], text: axes[spec.horizontal ? "x" : "y"], color: TEXT }
    };
    if (spec.horizontal) return { x: linear, y: category };
    var result = { x: category, y: linear };
    if (spec.right) {
      var rightFormat = spec.right.money ? moneyTick : count;
      result.y1 = {
        position: "right",
        beginAtZero: true,
        grid: { drawOnChartArea: false },
        border: { display: false },
        ticks: { color: TEXT, maxRotation: 0, callback: function (value) { return rightFormat(value); } },
        title: { display: !!spec.right.title, text: spec.right.title, color: TEXT }
      };
    }
    return result;
  }

  function build(canvas, spec) {
    if (!hasData(spec)) {
      empty(canvas, "No data in this period yet.");
      return;
    }
    var valueFormat = spec.money ? money : count;
    var options = {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      indexAxis: spec.horizontal ? "y" : "x",
      plugins: {
        legend: { display: true, position: "bottom", labels: { color: TEXT, boxWidth: 12, boxHeight: 12 } },
        tooltip: {
          callbacks: {
            label: function (ctx) {
              var value = ctx.parsed && typeof ctx.parsed === "object"
                ? (spec.horizontal ? ctx.parsed.x : ctx.parsed.y) : ctx.parsed;
              var format = ctx.dataset.yAxisID === "y1" ? (ctx.dataset.money ? money : count) : valueFormat;
              return " " + (ctx.dataset.label || ctx.label) + ": " + format(value);
            }
          }
        }
      }
    };
    if (spec.kind === "doughnut") {
      options.plugins.legend.position = "right";
      options.cutout = "60%";
      options.plugins.tooltip.callbacks.label = function (ctx) {
        return " " + ctx.label + ": " + valueFormat(ctx.parsed);
      };
    } else {
      options.scales = scales(spec);
    }
    canvas.chart = new window.Chart(canvas, {
      type: spec.kind,
      data: { labels: spec.labels, datasets: datasets(spec) },
      options: options
    });
    canvas.setAttribute("data-rendered", "true");
  }

  function charts() {
    var block = document.getElementById("aigw-charts");
    if (!block) return;
    var specs = JSON.parse(block.textContent);
    var canvases = document.querySelectorAll("canvas[data-chart]");
    if (!window.Chart) {
      canvases.forEach(function (canvas) { empty(canvas, "Charts could not load."); });
      return;
    }
    window.Chart.defaults.color = TEXT;
    window.Chart.defaults.borderColor = GRID;
    window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    canvases.forEach(function (canvas) {
      var spec = specs[canvas.getAttribute("data-chart")];
      if (spec) build(canvas, spec);
    });
  }

  function confirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  function copyButtons() {
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var target = document.getElementById(button.getAttribute("data-copy"));
        if (!target || !navigator.clipboard) return;
        navigator.clipboard.writeText(target.textContent.trim()).then(function () {
          button.textContent = "Copied";
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    charts();
    confirmations();
    copyButtons();
    document.documentElement.setAttribute("data-ready", "true");
  });
})();
