// intemporal ui: keeps the page's #live part current (polls it) and shows a bar's details.
(function () {
  "use strict";
  const live = document.getElementById("live");
  if (live && live.dataset.poll) {
    let stamp = live.dataset.stamp;
    const period = Math.max(250, parseFloat(live.dataset.poll) * 1000);
    const tick = async function () {
      const url = new URL(window.location.href);
      url.searchParams.set("partial", "1");
      url.searchParams.set("known", stamp);
      try {
        const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
        if (r.status === 200) {
          const open = Array.from(live.querySelectorAll("details[id]")).map((d) => [d.id, d.open]);
          live.innerHTML = await r.text();
          stamp = r.headers.get("X-Stamp") || stamp;
          open.forEach(([id, isOpen]) => {
            const d = document.getElementById(id);
            if (d) d.open = isOpen;
          });
        }
      } catch (e) {
        /* the server stopped or a network blip: try again later */
      }
      setTimeout(tick, period);
    };
    setTimeout(tick, period);
  }
  const panel = document.getElementById("detail");
  if (panel) {
    document.addEventListener("click", function (ev) {
      const bar = ev.target.closest(".track .bar");
      if (bar) {
        panel.querySelector("h3").textContent = bar.dataset.label || "";
        panel.querySelector(".text").textContent = bar.dataset.detail || "";
        const tb = panel.querySelector(".tb");
        tb.textContent = bar.dataset.tb || "";
        tb.hidden = !bar.dataset.tb;
        panel.hidden = false;
      } else if (ev.target.closest(".close")) {
        panel.hidden = true;
      }
    });
  }
})();
