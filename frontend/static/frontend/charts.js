// Draws the figures the server built (plotly JSON) and loads mask heatmaps per round.
// No chart is designed here: figures come from frontend/charts/.
window.LotteryCharts = (function () {
  "use strict";
  const config = { responsive: true, displaylogo: false };

  function draw(target, figure) {
    return Plotly.react(target, figure.data, figure.layout, config);
  }

  function renderAll(root) {
    root.querySelectorAll('script[type="application/json"][data-figure-for]').forEach(function (element) {
      const target = document.getElementById(element.dataset.figureFor);
      if (target) draw(target, JSON.parse(element.textContent));
    });
    root.querySelectorAll("[data-mask-viewer]").forEach(setUpMaskViewer);
    // The Analyses section of a result page, the checks of the Reproductions page.
    const polled = root.matches && root.matches(POLLED) ? [root] : root.querySelectorAll(POLLED);
    polled.forEach(pollSection);
  }

  // While a run of a polled section (an analysis, a reproduction check) is queued or running, ask
  // the section's state every 2 s; when one ends (or a new one appears), reload the section from the
  // server, whose charts are drawn like the others. Its runs carry data-run-id and data-status.
  const POLL_MILLISECONDS = 2000;
  const POLLED = "[data-analyses-poll], [data-poll]";

  function pollSection(section) {
    async function tick() {
      if (!document.body.contains(section)) return; // replaced meanwhile: its successor polls
      let state;
      try {
        const response = await fetch(section.dataset.stateUrl);
        state = await response.json();
      } catch (error) {
        setTimeout(tick, POLL_MILLISECONDS);
        return;
      }
      let changed = false;
      for (const run of state.runs) {
        const element = section.querySelector('[data-run-id="' + run.id + '"]');
        if (!element) { changed = true; continue; }
        if (element.dataset.status !== run.status) {
          if (run.done) changed = true;
          element.dataset.status = run.status;
          const badge = element.querySelector(".run-status");
          if (badge) {
            badge.textContent = run.status;
            badge.className = "status status-" + run.status + " run-status";
          }
        }
        const text = element.querySelector(".run-progress-text");
        if (text && run.progress_text) text.textContent = run.progress_text;
        const fill = element.querySelector(".run-progress-fill");
        if (fill) fill.style.width = (100 * (run.progress_fraction || 0)).toFixed(1) + "%";
      }
      if (changed) {
        const response = await fetch(section.dataset.fragmentUrl);
        if (response.ok) {
          const holder = document.createElement("div");
          holder.innerHTML = await response.text();
          const fresh = holder.firstElementChild;
          section.replaceWith(fresh);
          renderAll(fresh);
          return;
        }
      }
      if (state.active || changed) setTimeout(tick, POLL_MILLISECONDS);
    }
    setTimeout(tick, POLL_MILLISECONDS);
  }

  function setUpMaskViewer(viewer) {
    const rounds = viewer.dataset.rounds.split(",").map(Number);
    const slider = viewer.querySelector("#mask-round");
    const label = viewer.querySelector("#mask-round-label");
    const networkSelect = viewer.querySelector("#mask-network");
    const status = viewer.querySelector("#mask-status");
    const container = document.getElementById("mask-figures");
    let latestRequest = 0;
    let debounce = null;

    async function load() {
      const round = rounds[Number(slider.value)];
      const network = networkSelect ? networkSelect.value : "ticket";
      label.textContent = round;
      const request = ++latestRequest;
      status.textContent = "loading…";
      let response;
      try {
        response = await fetch(viewer.dataset.urlBase + round + "/?network=" + encodeURIComponent(network));
      } catch (error) {
        status.textContent = "could not load the masks: " + error;
        return;
      }
      if (request !== latestRequest) return; // the slider moved on meanwhile
      const body = await response.json();
      if (!response.ok) {
        status.textContent = body.error || "could not load the masks";
        return;
      }
      const wanted = new Set(body.map(function (item) { return item.id; }));
      Array.from(container.children).forEach(function (child) {
        if (!wanted.has(child.id)) { Plotly.purge(child); child.remove(); }
      });
      for (const item of body) {
        let target = document.getElementById(item.id);
        if (!target) {
          target = document.createElement("div");
          target.id = item.id;
          target.className = "chart mask-chart";
          container.appendChild(target);
        }
        await draw(target, item.figure);
      }
      status.textContent = "";
      container.dataset.loadedRound = String(round);
    }

    slider.addEventListener("input", function () {
      label.textContent = rounds[Number(slider.value)];
      clearTimeout(debounce);
      debounce = setTimeout(load, 150);
    });
    if (networkSelect) networkSelect.addEventListener("change", load);
    load();
  }

  return { renderAll: renderAll, draw: draw, config: config };
})();
