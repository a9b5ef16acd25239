// The new-experiment form: the task picker (each task's models, datasets and settings), presets,
// per-architecture defaults, and the live preview of the weight fraction left after each round.
// Validation stays on the server (trainer spec).
(function () {
  "use strict";
  const form = document.getElementById("experiment-form");
  if (!form) return;
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const field = function (name) { return form.elements[name]; };

  function setValue(name, value) {
    const element = field(name);
    if (!element) return;
    if (element instanceof RadioNodeList || (element.length !== undefined && element.tagName !== "SELECT")) {
      const wanted = new Set(Array.isArray(value) ? value : [value]);
      Array.from(element).forEach(function (box) { box.checked = wanted.has(box.value); });
    } else if (element.type === "checkbox") {
      element.checked = Boolean(value);
    } else {
      element.value = value === null || value === undefined ? "" : value;
    }
  }

  function applyValues(values) {
    Object.keys(values).forEach(function (name) { setValue(name, values[name]); });
    showTask();
    updatePreview();
  }

  // Show the picked task's models, datasets and settings; a choice of another task moves to the task's first.
  function showTask() {
    const task = data.tasks[field("task").value];
    if (!task) return;
    [["model", task.models], ["dataset", task.datasets]].forEach(function (pair) {
      const select = field(pair[0]);
      const allowed = new Set(pair[1]);
      Array.from(select.options).forEach(function (option) { option.hidden = !allowed.has(option.value); });
      if (!allowed.has(select.value)) {
        const first = Array.from(select.options).find(function (option) { return !option.hidden && !option.disabled; });
        if (first) {
          select.value = first.value;
          if (pair[0] === "model" && data.architecture_defaults[first.value]) {
            Object.entries(data.architecture_defaults[first.value]).forEach(function (entry) { setValue(entry[0], entry[1]); });
          }
        }
      }
    });
    form.querySelectorAll("[data-task]").forEach(function (element) {
      element.hidden = element.dataset.task !== field("task").value;
    });
  }

  field("task").addEventListener("change", function () {
    showTask();
    setValue("preset", "");
    updatePreview();
  });

  form.querySelectorAll("button[data-preset]").forEach(function (button) {
    button.addEventListener("click", function () {
      const values = data.presets[button.dataset.preset];
      if (!values) return;
      applyValues(values);
      setValue("preset", button.dataset.preset);
      form.querySelectorAll("button[data-preset]").forEach(function (other) { other.classList.remove("selected"); });
      button.classList.add("selected");
    });
  });

  field("model").addEventListener("change", function () {
    const defaults = data.architecture_defaults[field("model").value];
    if (defaults) applyValues(defaults);
    setValue("preset", "");
  });

  function parseLayerFractions(text) {
    const fractions = {};
    for (const item of text.split(/[\s,]+/).filter(Boolean)) {
      const parts = item.split("=");
      const value = Number(parts[1]);
      if (parts.length !== 2 || !parts[0] || !(value > 0 && value < 1)) return null;
      fractions[parts[0]] = value;
    }
    return fractions;
  }

  function updatePreview() {
    const body = document.querySelector("#remaining-preview tbody");
    const note = document.getElementById("preview-note");
    const sizes = (data.layer_sizes[field("model").value] || {})[field("dataset").value];
    const rounds = Number(field("pruning__rounds").value);
    const fraction = Number(field("pruning__fraction").value);
    const overrides = parseLayerFractions(field("pruning__layer_fractions").value || "");
    const chosen = (field("pruning__prunable_layers").value || "").split(/[\s,]+/).filter(Boolean);
    const problems = [];
    if (!sizes) problems.push("pick a model and an installed dataset");
    if (!(Number.isInteger(rounds) && rounds >= 1 && rounds <= 100)) problems.push("rounds must be a whole number from 1 to 100");
    if (!(fraction > 0 && fraction < 1)) problems.push("the fraction per round must be between 0 and 1");
    if (overrides === null) problems.push("layer fractions must look like fc3.weight=0.1");
    body.textContent = "";
    if (problems.length) { note.textContent = problems.join("; ") + "."; return; }
    const layers = (chosen.length ? chosen : Object.keys(sizes)).filter(function (name) { return name in sizes; });
    const total = layers.reduce(function (sum, name) { return sum + sizes[name]; }, 0);
    const oneShot = field("pruning__schedule").value === "one_shot";
    // Each layer keeps (1 - its fraction) of its survivors per round; under global scope the
    // per-layer split differs but the pool as a whole shrinks by the same factor.
    const steps = oneShot ? [0, rounds] : Array.from({ length: rounds + 1 }, function (_, r) { return r; });
    steps.forEach(function (exponent, index) {
      const kept = layers.reduce(function (sum, name) {
        const layerFraction = name in overrides ? overrides[name] : fraction;
        return sum + sizes[name] * Math.pow(1 - layerFraction, exponent);
      }, 0);
      const row = body.insertRow();
      row.insertCell().textContent = String(index);
      row.insertCell().textContent = (100 * kept / total).toPrecision(3) + "%";
      row.insertCell().textContent = Math.round(kept).toLocaleString();
    });
    note.textContent = (oneShot ? "One shot to the sparsity of " + rounds + " rounds; " : "") +
      "≈ weights left of " + total.toLocaleString() + " prunable weights.";
  }

  ["model", "dataset", "pruning__rounds", "pruning__fraction", "pruning__layer_fractions",
   "pruning__schedule", "pruning__prunable_layers", "pruning__scope"].forEach(function (name) {
    const element = field(name);
    if (element) { element.addEventListener("input", updatePreview); element.addEventListener("change", updatePreview); }
  });
  showTask();
  updatePreview();
})();
