// Live pages: an element with data-live is refetched when the server says the state
// changed (server-sent events from /console/events). The fragment is the server's own
// rendering, escaped there; no data is turned into markup here.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource) { return; }
  var source = new EventSource("/console/events");
  var busy = false;
  var again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(live.getAttribute("data-live"), { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        // A login that expired is answered with the login page: go there, do not embed it.
        if (response.redirected && new URL(response.url).pathname === "/console/login") {
          window.location.assign("/console/login");
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null) {
          live.innerHTML = html;
          live.setAttribute("data-updated", String(Date.now()));
        }
      })
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }
  source.addEventListener("change", refresh);
})();
