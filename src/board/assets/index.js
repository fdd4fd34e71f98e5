// The queue picker: the read model's queues, refetched when the projector reports a change.
"use strict";
(function () {
  const conn = document.getElementById("conn");
  const list = document.getElementById("queues");
  let fetching = false;
  let again = false;

  function setConn(state, text) {
    document.body.dataset.conn = state;
    conn.textContent = text;
  }

  function item(q) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "/board/" + encodeURIComponent(q.queueId);
    const name = document.createElement("span");
    name.className = "qname";
    name.textContent = q.queueName;
    const counts = document.createElement("span");
    counts.className = "qcounts";
    counts.textContent = q.waitingCount + " waiting · " + q.calledCount + " called · " + q.queueId;
    a.append(name, counts);
    li.append(a);
    return li;
  }

  async function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    try {
      do {
        again = false;
        const r = await fetch("/live/queues", { cache: "no-store" });
        if (!r.ok) { setConn("stale", "reconnecting…"); break; }
        const queues = await r.json();
        list.replaceChildren(...queues.map(item));
        document.getElementById("empty").hidden = queues.length > 0;
      } while (again);
    } catch (e) {
      setConn("stale", "reconnecting…");
    } finally {
      fetching = false;
    }
  }

  let backoff = 1000;
  function connect() {
    const es = new EventSource("/live/events");
    es.addEventListener("live", () => { backoff = 1000; setConn("live", "live"); refresh(); });
    es.addEventListener("stale", () => { setConn("stale", "reconnecting…"); refresh(); });
    es.addEventListener("change", () => refresh());
    es.onerror = () => {
      setConn("stale", "reconnecting…");
      // EventSource retries by itself unless the server answered with an error.
      if (es.readyState === EventSource.CLOSED) {
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 10000);
      }
    };
  }
  connect();
})();
