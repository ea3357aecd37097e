// Sorting and filtering of the flags list, in the page: no build step, nothing loaded.
(function () {
  var table = document.getElementById("flags");
  var filter = document.getElementById("status-filter");
  var shown = document.getElementById("shown");
  if (!table) { return; }
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  function users(r) {
    var v = (r.dataset.users || "").split(",").map(Number).filter(function (x) { return !isNaN(x); });
    return v.length ? Math.min.apply(null, v) : -1;
  }
  var keys = {
    key: function (r) { return r.dataset.key; },
    rank: function (r) { return Number(r.dataset.rank); },
    users: users,
    age: function (r) { return Number(r.dataset.age); },
    pass: function (r) { return Number(r.dataset.pass); }
  };
  var buttons = table.querySelectorAll("th button[data-sort]");
  buttons.forEach(function (b) {
    b.addEventListener("click", function () {
      var k = keys[b.dataset.sort];
      var dir = b.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      buttons.forEach(function (o) { o.removeAttribute("aria-sort"); });
      b.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      rows.sort(function (x, y) {
        var a = k(x), c = k(y);
        return (a < c ? -1 : a > c ? 1 : 0) * dir;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  function apply() {
    var want = filter.value, n = 0;
    rows.forEach(function (r) {
      var show = !want || r.dataset.status === want;
      r.hidden = !show;
      if (show) { n++; }
    });
    shown.textContent = n + " of " + rows.length + " flags";
  }
  if (filter) {
    filter.addEventListener("change", apply);
    apply();
  }
})();
