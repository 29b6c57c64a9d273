// Ranked feature table: built from the embedded JSON; sort by a column, search, download TSV.
(function () {
  "use strict";
  var dataEl = document.getElementById("feature-data");
  var table = document.getElementById("feature-table");
  if (!dataEl || !table) { return; }
  var spec = JSON.parse(dataEl.textContent);
  var cols = spec.columns, rows = spec.rows;
  var sortCol = 0, sortDir = 1;  // ascending rank: best first
  var search = document.getElementById("feature-search");
  var count = document.getElementById("feature-count");
  var featureCol = cols.findIndex(function (c) { return c.key === "feature"; });
  var denovoCol = cols.findIndex(function (c) { return c.key === "is_denovo"; });

  function fmt(v, type) {
    if (v === null || v === undefined) { return ""; }
    if (type === "flag") { return v ? "yes" : ""; }
    if (typeof v === "number" && !Number.isInteger(v)) {
      // Four significant digits; tiny importances in exponent form so they stay distinguishable.
      return Math.abs(v) < 1e-3 ? v.toExponential(3) : String(Number(v.toPrecision(4)));
    }
    return String(v);
  }

  var thead = document.createElement("thead"), hr = document.createElement("tr");
  cols.forEach(function (c, i) {
    var th = document.createElement("th");
    th.textContent = c.title;
    th.dataset.col = i;
    th.addEventListener("click", function () { sortBy(i); });
    hr.appendChild(th);
  });
  thead.appendChild(hr);
  table.appendChild(thead);
  var tbody = document.createElement("tbody");
  table.appendChild(tbody);

  // One <tr> per feature, built once; sorting reorders and searching hides them.
  var trs = rows.map(function (r, idx) {
    var tr = document.createElement("tr");
    r.forEach(function (v, i) {
      var td = document.createElement("td");
      var type = cols[i].type;
      if (type !== "text") { td.className = "num"; }
      td.textContent = fmt(v, type);
      if (i === featureCol && denovoCol >= 0 && r[denovoCol]) {
        var badge = document.createElement("span");
        badge.className = "denovo";
        badge.textContent = "DENOVO";
        td.appendChild(badge);
      }
      tr.appendChild(td);
    });
    tr.dataset.key = String(r[featureCol]).toLowerCase();
    tr.dataset.row = idx;
    return tr;
  });

  function compare(a, b) {
    var x = rows[a][sortCol], y = rows[b][sortCol];
    if (x === y) { return rows[a][0] - rows[b][0]; }
    if (x === null) { return 1; }   // missing values last in either direction
    if (y === null) { return -1; }
    return (x < y ? -1 : 1) * sortDir;
  }

  function render() {
    var order = rows.map(function (_, i) { return i; }).sort(compare);
    var frag = document.createDocumentFragment();
    order.forEach(function (i) { frag.appendChild(trs[i]); });
    tbody.appendChild(frag);
    Array.prototype.forEach.call(hr.children, function (th, i) {
      th.className = i === sortCol ? (sortDir > 0 ? "sorted-asc" : "sorted-desc") : "";
    });
  }

  function sortBy(i) {
    if (sortCol === i) {
      sortDir = -sortDir;
    } else {
      // First click: ranks and names ascending, scores (frequency, importance) largest first.
      sortCol = i;
      sortDir = cols[i].type === "num" && cols[i].key.indexOf("rank") < 0 ? -1 : 1;
    }
    render();
  }

  function filter() {
    var q = search.value.trim().toLowerCase(), shown = 0;
    trs.forEach(function (tr) {
      var hit = q === "" || tr.dataset.key.indexOf(q) >= 0;
      tr.style.display = hit ? "" : "none";
      if (hit) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " features";
  }

  function download() {
    var lines = [cols.map(function (c) { return c.key; }).join("\t")];
    Array.prototype.forEach.call(tbody.children, function (tr) {
      if (tr.style.display === "none") { return; }
      var r = rows[Number(tr.dataset.row)];
      lines.push(r.map(function (v, i) {
        if (v === null) { return cols[i].key === "pfer_bound" ? "inf" : ""; }
        return cols[i].type === "flag" ? (v ? "true" : "false") : String(v);
      }).join("\t"));
    });
    var blob = new Blob([lines.join("\n") + "\n"], { type: "text/tab-separated-values" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = spec.filename || "findings.tsv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 0);
  }

  search.addEventListener("input", filter);
  document.getElementById("feature-download").addEventListener("click", download);
  render();
  filter();
}());
