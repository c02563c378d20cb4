/* Integration Health Monitor dashboard. No framework, no CDN: plain DOM and SVG.
 *
 * Renders the page shell from the JSON API and polls it every data-poll-ms milliseconds.
 * Signed-in deployments: the token typed in the sign-in form is kept in sessionStorage (this
 * tab only) and sent as "Authorization: Bearer <token>". Text is always set with textContent,
 * never parsed as HTML.
 */
(function () {
  "use strict";

  var body = document.body;
  var page = body.dataset.page;
  var orgId = body.dataset.orgId;
  var pollMs = Math.max(500, Number(body.dataset.pollMs) || 5000);
  var TOKEN_KEY = "integration-health.token";
  var SVG_NS = "http://www.w3.org/2000/svg";
  var STATUS = {
    healthy: { word: "Healthy", icon: "\u2714" },
    degraded: { word: "Degraded", icon: "\u25B2" },
    unreachable: { word: "Unreachable", icon: "\u2716" },
    none: { word: "Not checked yet", icon: "\u2013" }
  };

  var content = document.getElementById("content");
  var loginSection = document.getElementById("login");
  var loginForm = document.getElementById("login-form");
  var loginReason = document.getElementById("login-reason");
  var tokenInput = document.getElementById("token");
  var signOut = document.getElementById("sign-out");
  var refreshState = document.getElementById("refresh-state");

  var timer = null;
  var stopped = false;

  // -- helpers ---------------------------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    appendAll(node, children);
    return node;
  }

  function svg(tag, attrs, children) {
    var node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    appendAll(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.setAttribute("class", value);
      else node.setAttribute(key, value === true ? "" : String(value));
    });
  }

  function appendAll(node, children) {
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
  }

  function statusOf(value) {
    return STATUS[value] || STATUS.none;
  }

  function statusKey(value) {
    return STATUS[value] ? value : "none";
  }

  function token() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY);
    } catch (e) {
      return null;
    }
  }

  function formatMs(ms) {
    if (ms === null || ms === undefined) return "\u2013";
    if (ms >= 10000) return (ms / 1000).toFixed(1) + " s";
    return ms.toLocaleString("en") + " ms";
  }

  function relative(iso) {
    if (!iso) return "\u2013";
    var seconds = (Date.parse(iso) - Date.now()) / 1000;
    var abs = Math.abs(seconds);
    var text;
    if (abs < 45) return seconds < 0 ? "just now" : "in a moment";
    if (abs < 90 * 60) text = Math.round(abs / 60) + " min";
    else if (abs < 36 * 3600) text = Math.round(abs / 3600) + " h";
    else text = Math.round(abs / 86400) + " d";
    return seconds < 0 ? text + " ago" : "in " + text;
  }

  function timeEl(iso) {
    if (!iso) return el("span", { text: "\u2013" });
    return el("time", {
      datetime: iso,
      title: new Date(iso).toLocaleString(),
      text: relative(iso)
    });
  }

  function badge(status, extraClass) {
    var s = statusOf(status);
    return el("span", { className: "status-badge status-" + statusKey(status) + (extraClass ? " " + extraClass : "") }, [
      el("span", { className: "status-icon", "aria-hidden": "true", text: s.icon }),
      " ",
      el("span", { className: "status-word", text: s.word })
    ]);
  }

  function replaceChildren(node, children) {
    while (node.firstChild) node.removeChild(node.firstChild);
    appendAll(node, children);
  }

  // -- the API ---------------------------------------------------------------------------

  function AuthRequired(message) {
    this.message = message;
  }

  function ApiFailure(status, message, retryAfter) {
    this.status = status;
    this.message = message;
    this.retryAfter = retryAfter;
  }

  function api(path, options) {
    options = options || {};
    var headers = { Accept: "application/json" };
    var t = token();
    if (t) headers.Authorization = "Bearer " + t;
    return fetch(path, {
      method: options.method || "GET",
      headers: headers,
      cache: "no-cache",
      credentials: "same-origin"
    }).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try {
          data = text ? JSON.parse(text) : null;
        } catch (e) {
          data = null;
        }
        var message = data && data.error ? data.error.message : "HTTP " + response.status;
        if (response.status === 401 || response.status === 403) throw new AuthRequired(message);
        if (!response.ok) throw new ApiFailure(response.status, message, response.headers.get("Retry-After"));
        return data;
      });
    });
  }

  // -- sign-in ---------------------------------------------------------------------------

  function showLogin(reason) {
    stopPolling();
    loginSection.hidden = false;
    content.hidden = true;
    loginReason.textContent = token() ? "The token was refused: " + reason : reason;
    signOut.hidden = !token();
    tokenInput.focus();
  }

  loginForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var value = tokenInput.value.trim();
    if (!value) return;
    try {
      window.sessionStorage.setItem(TOKEN_KEY, value);
    } catch (e) {
      loginReason.textContent = "This browser does not allow sessionStorage.";
      return;
    }
    tokenInput.value = "";
    loginSection.hidden = true;
    content.hidden = false;
    signOut.hidden = false;
    start();
  });

  signOut.addEventListener("click", function () {
    try {
      window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) {
      /* nothing stored */
    }
    signOut.hidden = true;
    showLogin("Signed out.");
  });

  signOut.hidden = !token();

  // -- polling ---------------------------------------------------------------------------

  function stopPolling() {
    stopped = true;
    if (timer) window.clearTimeout(timer);
    timer = null;
  }

  function schedule(fn) {
    if (stopped) return;
    if (timer) window.clearTimeout(timer);
    timer = window.setTimeout(fn, pollMs);
  }

  function noteRefresh(ok, message) {
    var now = new Date();
    refreshState.textContent = ok
      ? "Updated " + now.toLocaleTimeString() + "."
      : "Could not refresh (" + message + "); retrying.";
    refreshState.className = ok ? "" : "refresh-failed";
  }

  function handleFailure(error) {
    if (error instanceof AuthRequired) {
      showLogin(error.message);
      return false;
    }
    noteRefresh(false, error && error.message ? error.message : String(error));
    return true;
  }

  // -- the organisations page ------------------------------------------------------------

  function indexPage() {
    function refresh() {
      api("/api/orgs").then(function (data) {
        var orgs = data.organizations;
        if (orgs.length === 1) {
          window.location.replace("/orgs/" + encodeURIComponent(orgs[0].org_id));
          return;
        }
        content.setAttribute("aria-busy", "false");
        var list = el("ul", { className: "org-list" }, orgs.map(function (org) {
          var s = org.summary;
          return el("li", { className: "org status-" + statusKey(org.status) }, [
            el("a", { href: "/orgs/" + encodeURIComponent(org.org_id), text: org.name }),
            " ",
            badge(org.status),
            el("span", { className: "org-counts", text:
              " " + s.healthy + " healthy, " + s.degraded + " degraded, " + s.unreachable + " unreachable" +
              (s.not_checked ? ", " + s.not_checked + " not checked yet" : "") })
          ]);
        }));
        replaceChildren(content, [
          el("h1", { text: "Organizations" }),
          orgs.length ? list : el("p", { text: "You are not a member of any organization yet." })
        ]);
        noteRefresh(true);
        schedule(refresh);
      }, function (error) {
        if (handleFailure(error)) schedule(refresh);
      });
    }
    refresh();
  }

  // -- one organisation ------------------------------------------------------------------

  function orgPage() {
    var tiles = {}; // integration_id → tile parts
    var names = {};
    var historyFor = {}; // integration_id → checked_at of the drawn history
    var visible = {};
    var observer = null;
    var built = false;
    var lazy = false;
    var parts = {};

    var LAZY_ABOVE = 40; // larger organisations load trends only for tiles on screen

    if ("IntersectionObserver" in window) {
      observer = new IntersectionObserver(function (entries) {
        entries.forEach(function (entry) {
          var id = entry.target.dataset.integrationId;
          visible[id] = entry.isIntersecting;
          if (entry.isIntersecting) loadHistory(id);
        });
      }, { rootMargin: "200px" });
    }

    function build() {
      parts.title = el("h1", { id: "org-title", text: "Organization" });
      parts.overall = el("p", { className: "overall" });
      parts.summary = el("ul", { className: "summary", "aria-live": "polite" });
      parts.attention = el("div", { className: "attention" });
      parts.checkNow = el("button", { type: "button", id: "check-now", text: "Check all now" });
      parts.checkNowState = el("p", { id: "check-now-state", role: "status" });
      parts.paused = el("div", { id: "paused", role: "status" });
      parts.tiles = el("ul", { className: "tiles", id: "tiles" });
      parts.events = el("tbody");
      parts.eventsEmpty = el("p", { text: "No status changes yet." });
      parts.checkNow.addEventListener("click", checkNow);
      replaceChildren(content, [
        el("div", { className: "org-header" }, [parts.title, parts.overall]),
        el("section", { className: "summary-section", "aria-labelledby": "summary-title" }, [
          el("h2", { id: "summary-title", className: "visually-hidden", text: "Summary" }),
          parts.summary,
          parts.attention,
          el("div", { className: "actions" }, [parts.checkNow, parts.checkNowState])
        ]),
        parts.paused,
        el("section", { "aria-labelledby": "integrations-title" }, [
          el("h2", { id: "integrations-title", text: "Integrations" }),
          parts.tiles
        ]),
        el("section", { "aria-labelledby": "events-title" }, [
          el("h2", { id: "events-title", text: "Recent status changes" }),
          parts.eventsEmpty,
          el("table", { className: "events" }, [
            el("caption", { className: "visually-hidden", text: "Status changes, newest first" }),
            el("thead", {}, [el("tr", {}, [
              el("th", { scope: "col", text: "When" }),
              el("th", { scope: "col", text: "Integration" }),
              el("th", { scope: "col", text: "Change" }),
              el("th", { scope: "col", text: "Why" })
            ])]),
            parts.events
          ])
        ])
      ]);
      content.setAttribute("aria-busy", "false");
      built = true;
    }

    function makeTile(item) {
      var id = item.integration_id;
      var titleId = "title-" + id;
      var captionId = "trend-" + id;
      var t = {};
      t.li = el("li", { className: "tile", id: "integration-" + id, "data-integration-id": id });
      t.name = el("h3", { id: titleId });
      t.type = el("p", { className: "type" });
      t.badge = el("p", { className: "tile-status" });
      t.latency = el("dd");
      t.checked = el("dd");
      t.next = el("dd");
      t.failures = el("dd");
      t.failuresRow = el("div", {}, [el("dt", { text: "Failures in a row" }), t.failures]);
      t.error = el("span");
      t.advice = el("span");
      t.problem = el("div", { className: "problem" }, [
        el("p", { className: "error" }, [el("strong", { text: "What happened: " }), t.error]),
        el("p", { className: "advice" }, [el("strong", { text: "What to do: " }), t.advice])
      ]);
      t.chart = svg("svg", {
        className: "chart", viewBox: "0 0 320 96", role: "img", "aria-labelledby": captionId,
        preserveAspectRatio: "none"
      });
      t.caption = el("figcaption", { id: captionId, text: "Loading the trend\u2026" });
      t.table = el("tbody");
      t.li.appendChild(el("article", { "aria-labelledby": titleId }, [
        el("header", { className: "tile-header" }, [t.name, t.type]),
        t.badge,
        el("dl", { className: "facts" }, [
          el("div", {}, [el("dt", { text: "Latency" }), t.latency]),
          el("div", {}, [el("dt", { text: "Last checked" }), t.checked]),
          el("div", {}, [el("dt", { text: "Next check" }), t.next]),
          t.failuresRow
        ]),
        t.problem,
        el("figure", { className: "trend" }, [t.chart, t.caption]),
        el("details", {}, [
          el("summary", { text: "Recent results as a table" }),
          el("table", { className: "history" }, [
            el("thead", {}, [el("tr", {}, [
              el("th", { scope: "col", text: "Checked" }),
              el("th", { scope: "col", text: "Status" }),
              el("th", { scope: "col", text: "Latency" }),
              el("th", { scope: "col", text: "Error" })
            ])]),
            t.table
          ])
        ])
      ]));
      if (observer && lazy) observer.observe(t.li);
      else visible[id] = true;
      return t;
    }

    function updateTile(t, item) {
      var key = statusKey(item.status);
      t.li.className = "tile status-" + key;
      t.li.dataset.status = key;
      t.name.textContent = item.name;
      t.type.textContent = item.integration_type +
        (item.monitoring_mode !== "active" ? " \u00B7 " + item.monitoring_mode : "") +
        (item.enabled ? "" : " \u00B7 disabled");
      replaceChildren(t.badge, [badge(item.status)]);
      t.latency.textContent = formatMs(item.latency_ms);
      replaceChildren(t.checked, [timeEl(item.checked_at)]);
      replaceChildren(t.next, [timeEl(item.next_check_at)]);
      t.failures.textContent = String(item.consecutive_failures);
      t.failuresRow.hidden = !item.consecutive_failures;
      var hasProblem = Boolean(item.error || item.advice);
      t.problem.hidden = !hasProblem;
      t.error.textContent = item.error || (item.status === "degraded" ? "Slower than the threshold." : "");
      t.advice.textContent = item.advice || "";
    }

    function render(data) {
      if (!built) build();
      var overall = data.status;
      parts.title.textContent = data.name || "Organization";
      document.title = (overall ? statusOf(overall).icon + " " : "") + (data.name || "Organization") + " \u00B7 Integration health";
      replaceChildren(parts.overall, ["Overall: ", badge(overall)]);

      var s = data.summary;
      replaceChildren(parts.summary, [
        el("li", { className: "count status-healthy" }, [el("span", { className: "n", text: String(s.healthy) }), " healthy"]),
        el("li", { className: "count status-degraded" }, [el("span", { className: "n", text: String(s.degraded) }), " degraded"]),
        el("li", { className: "count status-unreachable" }, [el("span", { className: "n", text: String(s.unreachable) }), " unreachable"]),
        el("li", { className: "count status-none" }, [el("span", { className: "n", text: String(s.not_checked) }), " not checked yet"])
      ]);

      var troubled = data.integrations.filter(function (i) {
        return i.status === "unreachable" || i.status === "degraded";
      });
      replaceChildren(parts.attention, troubled.length ? [
        el("h3", { text: "Needs attention" }),
        el("ul", {}, troubled.map(function (i) {
          return el("li", {}, [
            el("a", { href: "#integration-" + i.integration_id, text: i.name }),
            " \u2013 " + statusOf(i.status).word.toLowerCase()
          ]);
        }))
      ] : []);

      replaceChildren(parts.paused, data.paused_types.map(function (p) {
        return el("p", { className: "paused" }, [
          el("strong", { text: "Active checks of " + p.integration_type + " are paused " }),
          "until ", timeEl(p.passive_until),
          ": " + p.reason + ". Statuses come from sync outcomes meanwhile."
        ]);
      }));

      var seen = {};
      lazy = data.integrations.length > LAZY_ABOVE;
      data.integrations.forEach(function (item, index) {
        var id = item.integration_id;
        seen[id] = true;
        names[id] = item.name;
        var t = tiles[id];
        if (!t) t = tiles[id] = makeTile(item);
        updateTile(t, item);
        if (parts.tiles.children[index] !== t.li) parts.tiles.insertBefore(t.li, parts.tiles.children[index] || null);
        t.checkedAt = item.checked_at;
        if (visible[id] && historyFor[id] !== item.checked_at) loadHistory(id);
      });
      Object.keys(tiles).forEach(function (id) {
        if (!seen[id]) {
          if (observer) observer.unobserve(tiles[id].li);
          tiles[id].li.remove();
          delete tiles[id];
        }
      });
      if (!data.integrations.length) {
        replaceChildren(parts.tiles, [el("li", { text: "This organization has no integrations yet." })]);
      }
    }

    function loadHistory(id) {
      var t = tiles[id];
      if (!t || t.loading || historyFor[id] === t.checkedAt) return;
      t.loading = true;
      var wanted = t.checkedAt;
      api("/api/orgs/" + encodeURIComponent(orgId) + "/integrations/" + encodeURIComponent(id) + "/health/history?limit=96")
        .then(function (data) {
          t.loading = false;
          historyFor[id] = wanted;
          drawHistory(t, data.history);
        }, function (error) {
          t.loading = false;
          handleFailure(error);
        });
    }

    function drawHistory(t, newestFirst) {
      var rows = newestFirst.slice().reverse();
      drawChart(t.chart, t.caption, rows);
      replaceChildren(t.table, newestFirst.slice(0, 20).map(function (row) {
        return el("tr", {}, [
          el("td", {}, [timeEl(row.checked_at)]),
          el("td", {}, [badge(row.status)]),
          el("td", { text: formatMs(row.latency_ms) }),
          el("td", { text: row.error || "" })
        ]);
      }));
    }

    function checkNow() {
      parts.checkNow.disabled = true;
      parts.checkNowState.textContent = "Checking every integration now\u2026";
      api("/api/orgs/" + encodeURIComponent(orgId) + "/health/checks", { method: "POST" }).then(function (data) {
        var s = data.summary;
        var held = data.held || [];
        parts.checkNowState.textContent = "Checked " + data.checked + ": " + s.healthy + " healthy, " +
          s.degraded + " degraded, " + s.unreachable + " unreachable." +
          (held.length ? " " + held.length + " not probed: the vendor asked us to wait (" +
            held.map(function (h) { return h.name + " until " + new Date(h.until).toLocaleString(); }).join(", ") +
            ")." : "");
        parts.checkNow.disabled = false;
        refresh();
      }, function (error) {
        parts.checkNow.disabled = false;
        if (error instanceof AuthRequired) return handleFailure(error);
        parts.checkNowState.textContent = error.message;
        return null;
      });
    }

    function renderEvents(data) {
      parts.eventsEmpty.hidden = data.events.length > 0;
      replaceChildren(parts.events, data.events.slice(0, 25).map(function (e) {
        return el("tr", {}, [
          el("td", {}, [timeEl(e.at)]),
          el("td", { text: names[e.integration_id] || e.integration_type }),
          el("td", {}, [
            e.from_status ? badge(e.from_status, "small") : el("span", { text: "first result" }),
            el("span", { "aria-hidden": "true", text: " \u2192 " }),
            el("span", { className: "visually-hidden", text: " to " }),
            badge(e.to_status, "small")
          ]),
          el("td", { text: e.error || "" })
        ]);
      }));
    }

    function refresh() {
      var base = "/api/orgs/" + encodeURIComponent(orgId);
      Promise.all([api(base + "/health"), api(base + "/events?limit=25")]).then(function (results) {
        render(results[0]);
        renderEvents(results[1]);
        noteRefresh(true);
        schedule(refresh);
      }, function (error) {
        if (error instanceof ApiFailure && error.status === 404) {
          stopPolling();
          replaceChildren(content, [
            el("h1", { text: "Organization not found" }),
            el("p", { text: "It does not exist, or you are not a member of it." }),
            el("p", {}, [el("a", { href: "/", text: "See your organizations" })])
          ]);
          content.setAttribute("aria-busy", "false");
          return;
        }
        if (handleFailure(error)) schedule(refresh);
      });
    }

    return refresh;
  }

  // -- the trend chart -------------------------------------------------------------------

  var SHAPES = {
    healthy: function (x, y) { return svg("circle", { cx: x, cy: y, r: 3.2 }); },
    degraded: function (x, y) {
      return svg("polygon", { points: [x, y - 4, x + 4, y + 3, x - 4, y + 3].join(" ") });
    },
    unreachable: function (x, y) { return svg("rect", { x: x - 3.2, y: y - 3.2, width: 6.4, height: 6.4 }); }
  };

  function median(values) {
    var sorted = values.slice().sort(function (a, b) { return a - b; });
    var mid = Math.floor(sorted.length / 2);
    return sorted.length % 2 ? sorted[mid] : Math.round((sorted[mid - 1] + sorted[mid]) / 2);
  }

  function drawChart(chart, caption, rows) {
    replaceChildren(chart, []);
    if (!rows.length) {
      caption.textContent = "No results yet: the trend appears after the first checks.";
      return;
    }
    var left = 40, right = 314, top = 8, bottom = 80;
    var latencies = rows.map(function (r) { return r.latency_ms; });
    var max = Math.max(10, Math.max.apply(null, latencies) * 1.1);
    var times = rows.map(function (r) { return Date.parse(r.checked_at); });
    var t0 = times[0], t1 = times[times.length - 1];
    function x(i) {
      if (t1 === t0) return rows.length === 1 ? (left + right) / 2 : left + (right - left) * i / (rows.length - 1);
      return left + (right - left) * (times[i] - t0) / (t1 - t0);
    }
    function y(ms) { return bottom - (bottom - top) * ms / max; }

    chart.appendChild(svg("line", { className: "axis", x1: left, y1: bottom, x2: right, y2: bottom }));
    chart.appendChild(svg("line", { className: "axis", x1: left, y1: top, x2: left, y2: bottom }));
    chart.appendChild(svg("text", { className: "tick", x: left - 4, y: top + 4, "text-anchor": "end" }, [formatMs(Math.round(max))]));
    chart.appendChild(svg("text", { className: "tick", x: left - 4, y: bottom, "text-anchor": "end" }, ["0"]));
    chart.appendChild(svg("text", { className: "tick", x: left, y: bottom + 13 }, [new Date(t0).toLocaleTimeString()]));
    if (rows.length > 1) {
      chart.appendChild(svg("text", { className: "tick", x: right, y: bottom + 13, "text-anchor": "end" }, [new Date(t1).toLocaleTimeString()]));
    }

    var changes = [];
    rows.forEach(function (row, i) {
      if (i > 0 && row.status !== rows[i - 1].status) {
        changes.push(row);
        chart.appendChild(svg("line", {
          className: "change change-" + statusKey(row.status), x1: x(i), x2: x(i), y1: top, y2: bottom
        }, [svg("title", {}, ["Changed to " + statusOf(row.status).word.toLowerCase() + " at " + new Date(row.checked_at).toLocaleString()])]));
      }
    });
    if (rows.length > 1) {
      chart.appendChild(svg("polyline", {
        className: "line",
        points: rows.map(function (r, i) { return x(i).toFixed(1) + "," + y(r.latency_ms).toFixed(1); }).join(" ")
      }));
    }
    rows.forEach(function (row, i) {
      var key = statusKey(row.status);
      var shape = (SHAPES[key] || SHAPES.healthy)(x(i), y(row.latency_ms));
      shape.setAttribute("class", "point point-" + key);
      shape.appendChild(svg("title", {}, [
        new Date(row.checked_at).toLocaleString() + ": " + statusOf(row.status).word.toLowerCase() + ", " + formatMs(row.latency_ms)
      ]));
      chart.appendChild(shape);
    });

    var newest = rows[rows.length - 1];
    var text = "Latency of the last " + rows.length + (rows.length === 1 ? " check" : " checks") +
      ": newest " + formatMs(newest.latency_ms) + ", median " + formatMs(median(latencies)) +
      ", highest " + formatMs(Math.max.apply(null, latencies)) + ".";
    if (changes.length) {
      var last = changes[changes.length - 1];
      text += " " + changes.length + (changes.length === 1 ? " status change" : " status changes") +
        ", the latest to " + statusOf(last.status).word.toLowerCase() + " " + relative(last.checked_at) + ".";
    } else {
      text += " No status change.";
    }
    caption.textContent = text;
  }

  // -- start -----------------------------------------------------------------------------

  var orgRefresh = null;

  function start() {
    stopped = false;
    if (page === "index") indexPage();
    else if (page === "org") {
      if (!orgRefresh) orgRefresh = orgPage();
      orgRefresh();
    } else {
      replaceChildren(content, [
        el("h1", { text: "Not found" }),
        el("p", {}, [el("a", { href: "/", text: "See your organizations" })])
      ]);
      content.setAttribute("aria-busy", "false");
    }
  }

  start();
})();
