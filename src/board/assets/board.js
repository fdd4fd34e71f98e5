// One queue's board. The snapshot comes from /live/queues/{id} (names already masked by the
// server when BOARD_NAMES=initials); /live/events says when to fetch it again: `live` (on
// every (re)connect: resync), `change` (the projector committed this queue), `stale` (the
// server's database listener is down). No polling: timers below only redraw clocks and the
// staff panel's last-minute figures.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const queueId = decodeURIComponent(location.pathname.replace(/^\/board\//, "").replace(/\/+$/, ""));
  const ANNOUNCE_MS = 8000;

  let offset = 0;          // server clock minus ours (ms)
  let view = null;         // the last snapshot
  let seen = null;         // called patients already shown (null until the first render)
  const announced = new Map(); // key -> until (ms, our clock)
  let fetching = false;
  let again = false;
  let renders = 0;

  function setConn(state, text) {
    document.body.dataset.conn = state;
    $("conn").textContent = text;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function waited(since) {
    const minutes = Math.max(0, Math.floor((Date.now() + offset - Date.parse(since)) / 60000));
    if (minutes < 1) return "< 1 min";
    if (minutes < 60) return minutes + " min";
    return Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0") + " min";
  }

  function render() {
    $("missing").hidden = view !== null;
    if (view === null) return;
    document.title = view.queueName + " · waiting room";
    $("queue-name").textContent = view.queueName;

    const now = Date.now();
    const keys = new Set();
    const called = view.called.map((p) => {
      const key = [p.consultingRoom, p.calledAt, p.name].join("|");
      keys.add(key);
      if (seen !== null && !seen.has(key)) {
        announced.set(key, now + ANNOUNCE_MS);
        setTimeout(render, ANNOUNCE_MS + 50);
      }
      const li = el("li", "called-item");
      li.dataset.key = key;
      if ((announced.get(key) || 0) > now) li.classList.add("announce");
      li.append(el("span", "room", p.consultingRoom || "—"), el("span", "name", p.name),
                el("span", "meta", p.priority + " · " + p.consultationType));
      return li;
    });
    for (const [key, until] of announced) if (until <= now || !keys.has(key)) announced.delete(key);
    seen = keys;
    $("called").replaceChildren(...called);
    $("called-empty").hidden = called.length > 0;

    const rows = view.waiting.map((p) => {
      const tr = el("tr");
      const prio = el("span", "prio prio-" + p.priority.toLowerCase(), p.priority);
      const cell = el("td", "prio-cell");
      cell.append(prio);
      const w = el("td", "waited", waited(p.checkedInAt));
      w.dataset.since = p.checkedInAt;
      tr.append(el("td", "pos", p.position === null ? "" : String(p.position)),
                el("td", "name", p.name), cell, w);
      return tr;
    });
    $("waiting").tBodies[0].replaceChildren(...rows);
    $("waiting").hidden = rows.length === 0;
    $("waiting-empty").hidden = rows.length > 0;
    $("waiting-count").textContent = "(" + rows.length + ")";
    renders += 1;
    document.body.dataset.renders = String(renders);
    document.body.dataset.renderedAt = String(Date.now());
  }

  // Fetches are coalesced: a change during a fetch triggers one more, never a queue of them.
  async function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    try {
      do {
        again = false;
        const r = await fetch("/live/queues/" + encodeURIComponent(queueId), { cache: "no-store" });
        if (r.status === 404) {
          view = null;
        } else if (r.ok) {
          view = await r.json();
          offset = Date.parse(view.serverTime) - Date.now();
        } else {
          setConn("stale", "reconnecting…");
          break;
        }
        render();
      } while (again);
    } catch (e) {
      setConn("stale", "reconnecting…");
    } finally {
      fetching = false;
    }
  }

  function ms(v) {
    return v === null || v === undefined ? "–" : (v < 10 ? v.toFixed(1) : Math.round(v)) + "";
  }

  let staffTimer = null;
  async function staff() {
    staffTimer = null;
    try {
      // /live/staff, not /api: a wall screen holds no API token.
      const r = await fetch("/live/staff", { cache: "no-store" });
      if (!r.ok) return;
      const s = await r.json();
      const o = s.lag;
      $("lag").textContent = o.count > 0
        ? ms(o.p50Ms) + " / " + ms(o.p95Ms) + " / " + ms(o.p99Ms) + " ms"
        : "no events";
      $("outbox").textContent = s.outbox.count + (s.outbox.failed > 0 ? " (" + s.outbox.failed + " failed)" : "");
      const behind = s.projection.eventsBehind;
      const parked = s.projection.parkedStreams;
      const p = $("projection");
      p.textContent = s.projection.status + (behind > 0 ? ", " + behind + " behind" : "") +
        (parked > 0 ? ", " + parked + " parked" : "");
      p.classList.toggle("bad", s.projection.status !== "healthy");
    } catch (e) {
      // The API is unreachable: the connection mark already says so.
    }
  }
  function staffSoon() {
    if (staffTimer === null) staffTimer = setTimeout(staff, 1000);
  }

  function clock() {
    const d = new Date(Date.now() + offset);
    $("clock").textContent = String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
    for (const td of document.querySelectorAll("td.waited")) td.textContent = waited(td.dataset.since);
  }

  let backoff = 1000;
  function connect() {
    const es = new EventSource("/live/events?queue=" + encodeURIComponent(queueId));
    es.addEventListener("live", () => { backoff = 1000; setConn("live", "live"); refresh(); staffSoon(); });
    es.addEventListener("stale", () => { setConn("stale", "reconnecting…"); refresh(); });
    es.addEventListener("change", () => { refresh(); staffSoon(); });
    es.onerror = () => {
      setConn("stale", "reconnecting…");
      // EventSource retries by itself unless the server answered with an error.
      if (es.readyState === EventSource.CLOSED) {
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 10000);
      }
    };
  }

  clock();
  setInterval(clock, 10000);
  setInterval(staff, 15000);
  connect();
})();
