// The live page: state snapshot first, then live events over a websocket; reconnects with
// exponential backoff and re-reads the snapshot, so nothing missed stays missing. When the run
// ends, the result page's content replaces this one without a reload.
(function () {
  "use strict";
  const page = document.getElementById("experiment-page");
  if (!page) return;
  const metricChart = document.getElementById("live-metric");
  const lossChart = document.getElementById("live-loss");
  const connectionLabel = document.getElementById("live-connection");
  const DONE = new Set(["finished", "diverged", "cancelled", "failed"]);
  const NOT_FOUND = 4404;
  // the task's metric: val_<key> of eval events, shown in percent when it is a fraction (accuracy)
  let metric = { key: "accuracy", percent: true };
  let lastSeq = -1;
  let awaitingSnapshot = true;
  let attempt = 0;
  let socket = null;
  let leaving = false;

  function setConnection(text) { connectionLabel.textContent = text; }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + page.dataset.socketPath);
    awaitingSnapshot = true;
    setConnection("connecting…");
    window.lotteryLiveSocket = socket; // for the browser test, which drops it on purpose
    socket.onopen = function () {
      attempt = 0;
      page.dataset.connections = String(Number(page.dataset.connections || 0) + 1);
      setConnection("live");
    };
    socket.onmessage = function (message) { handle(JSON.parse(message.data)); };
    socket.onclose = function (event) {
      if (leaving) return;
      if (event.code === NOT_FOUND) { setConnection("no such experiment"); return; }
      const delay = Math.min(15000, 500 * Math.pow(2, attempt)) * (0.8 + 0.4 * Math.random());
      attempt += 1;
      setConnection("connection lost; retrying in " + (delay / 1000).toFixed(1) + " s");
      setTimeout(connect, delay);
    };
  }

  function handle(message) {
    if (message.type === "snapshot") {
      applySnapshot(message);
    } else if (message.type === "events") {
      if (awaitingSnapshot || message.seq <= lastSeq) return; // the snapshot covers it
      if (message.seq !== lastSeq + 1) { // a message was lost: ask for the whole state again
        awaitingSnapshot = true;
        socket.send(JSON.stringify({ type: "snapshot_request" }));
        return;
      }
      lastSeq = message.seq;
      applyEvents(message.events);
      showPieces(message.pieces);
      showProgress(message.progress);
    }
  }

  function applySnapshot(state) {
    lastSeq = state.seq;
    awaitingSnapshot = false;
    if (state.metric) metric = state.metric;
    LotteryCharts.draw(metricChart, state.figures.metric);
    LotteryCharts.draw(lossChart, state.figures.loss);
    showPieces(state.pieces);
    showProgress(state.progress);
  }

  // The "Pieces" table: which worker trains which piece of the experiment (rows from the server's state).
  function showPieces(pieces) {
    const section = document.getElementById("pieces");
    if (!section || !pieces) return;
    section.hidden = pieces.length === 0;
    const body = section.querySelector("tbody");
    body.replaceChildren.apply(body, pieces.map(function (piece) {
      const row = document.createElement("tr");
      const status = document.createElement("span");
      status.className = "status status-" + piece.status;
      status.title = piece.message || "";
      status.textContent = piece.status;
      [piece.phase + " " + piece.index, piece.trains, status, piece.worker || "–",
       piece.started_at ? piece.started_at.slice(11, 19) : "–",
       piece.finished_at ? piece.finished_at.slice(11, 19) : "–"].forEach(function (content) {
        const cell = document.createElement("td");
        if (typeof content === "string") cell.textContent = content; else cell.appendChild(content);
        row.appendChild(cell);
      });
      return row;
    }));
  }

  function traceIndex(chart, key) {
    return (chart.data || []).findIndex(function (trace) { return trace.meta === key; });
  }

  function extend(chart, points) {
    // points: key -> {x: [], y: []}; one extendTraces call per chart and message
    const indices = [], xs = [], ys = [];
    Object.keys(points).forEach(function (key) {
      const index = traceIndex(chart, key);
      if (index < 0) return;
      if (chart.data[index].x.length === 0) Plotly.restyle(chart, { showlegend: true }, [index]);
      indices.push(index); xs.push(points[key].x); ys.push(points[key].y);
    });
    if (indices.length) Plotly.extendTraces(chart, { x: xs, y: ys }, indices);
  }

  function applyEvents(events) {
    const metricPoints = {}, lossPoints = {};
    function add(points, key, x, y) {
      (points[key] = points[key] || { x: [], y: [] }).x.push(x);
      points[key].y.push(y);
    }
    events.forEach(function (event) {
      const key = event.network + ":" + (event.replicate || 0) + ":" + event.round;
      const value = event["val_" + metric.key];
      if (event.type === "eval" && value !== null && value !== undefined) {
        add(metricPoints, key, event.iteration, metric.percent ? 100 * value : value);
      }
      if (event.type === "metrics" && event.train_loss !== null) add(lossPoints, key, event.iteration, event.train_loss);
    });
    extend(metricChart, metricPoints);
    extend(lossChart, lossPoints);
  }

  function describe(progress) {
    if (progress.status === "queued") return "queued: waiting for the worker…";
    if (progress.round === null || progress.round === undefined) return progress.status;
    const parts = [];
    const network = progress.network === "ticket" ? "ticket" : progress.network.replace("_", " ") + " control";
    const replicate = progress.replicate ? ", replicate " + progress.replicate : "";
    parts.push("round " + progress.round + " of " + progress.rounds_total + " (" + network + replicate + ")");
    parts.push("iteration " + progress.iteration + " / " + progress.iterations_per_round);
    if (progress.remaining_fraction !== null) parts.push((100 * progress.remaining_fraction).toPrecision(3) + "% of weights");
    parts.push("training " + Math.min(progress.trainings_done + 1, progress.trainings_total) + " of " + progress.trainings_total);
    return parts.join(" · ");
  }

  function showProgress(progress) {
    const percent = Math.round(100 * (progress.overall_fraction || 0));
    const bar = document.getElementById("progress-bar");
    bar.setAttribute("aria-valuenow", String(percent));
    document.getElementById("progress-fill").style.width = percent + "%";
    document.getElementById("progress-label").textContent = describe(progress);
    const status = document.getElementById("live-status");
    status.textContent = progress.status;
    status.className = "status status-" + progress.status;
    const messageElement = document.getElementById("live-message");
    messageElement.hidden = !progress.message;
    messageElement.textContent = progress.message || "";
    if (DONE.has(progress.status)) showResults();
  }

  async function showResults() {
    if (leaving) return;
    leaving = true;
    socket.close();
    setConnection("run ended; loading the results…");
    for (let tries = 0; tries < 5; tries++) {
      try {
        const response = await fetch(page.dataset.resultUrl);
        if (response.ok) {
          const content = document.getElementById("content");
          content.innerHTML = await response.text();
          LotteryCharts.renderAll(content);
          return;
        }
      } catch (error) { /* retried below */ }
      await new Promise(function (resolve) { setTimeout(resolve, 1000 * (tries + 1)); });
    }
    setConnection("the run ended; reload the page to see its results");
  }

  const initial = JSON.parse(document.getElementById("live-state").textContent);
  applySnapshot(initial);
  awaitingSnapshot = true; // the websocket's own snapshot comes first
  if (!leaving) connect();
})();
