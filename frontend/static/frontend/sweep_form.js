// The new-sweep form: add and remove swept-field rows, and show the number of experiments as the user
// types (product of each row's value count × seeds); the server checks the same limit on submit.
(function () {
  "use strict";
  const form = document.getElementById("experiment-form");
  const body = document.querySelector("#grid-rows tbody");
  const count = document.getElementById("sweep-count");
  const limit = Number(form.dataset.maxPoints);

  function valueCount(row) {
    const select = row.querySelector(".grid-field");
    if (!select.value) return null;
    const option = select.options[select.selectedIndex];
    const separator = option.dataset.list === "1" ? ";" : ",";
    const text = row.querySelector(".grid-values").value;
    const parts = text.split(separator).map(function (part) { return part.trim(); });
    return separator === ";" ? parts.length : parts.filter(Boolean).length;
  }

  function update() {
    let configurations = 1;
    body.querySelectorAll(".grid-row").forEach(function (row) {
      const values = valueCount(row);
      if (values !== null) configurations *= values;
    });
    const seeds = Math.max(0, parseInt(form.querySelector("#id_seeds").value, 10) || 0);
    const total = configurations * seeds;
    count.textContent = total + " experiment" + (total === 1 ? "" : "s") + " (" + configurations +
      " configuration" + (configurations === 1 ? "" : "s") + " × " + seeds + " seed" + (seeds === 1 ? "" : "s") + ")" +
      (total > limit ? ": above the limit of " + limit + ", the server will refuse it" : "");
    count.dataset.count = String(total);
    count.className = total > limit ? "error-message" : "";
  }

  function wire(row) {
    row.querySelector(".remove-grid-row").addEventListener("click", function () {
      if (body.querySelectorAll(".grid-row").length > 1) row.remove();
      else { row.querySelector(".grid-field").value = ""; row.querySelector(".grid-values").value = ""; }
      update();
    });
  }

  document.getElementById("add-grid-row").addEventListener("click", function () {
    const first = body.querySelector(".grid-row");
    const row = first.cloneNode(true);
    row.querySelector(".grid-field").value = "";
    row.querySelector(".grid-values").value = "";
    body.appendChild(row);
    wire(row);
    update();
  });
  body.querySelectorAll(".grid-row").forEach(wire);
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  update();
})();
