// Drover web UI, list pages (runs, agents, ...): refreshes the rows of
// any element with data-refresh="URL" data-every="MS" (rows, or a live section of a page) from
// server-rendered fragments.
(() => {
  'use strict';

  const liveEl = document.getElementById('live');
  const setLive = (on) => { if (liveEl) liveEl.classList.toggle('off', !on); };

  function watch(tbody) {
    const url = tbody.dataset.refresh;
    const every = Math.max(500, Number(tbody.dataset.every) || 5000);
    let timer = 0, busy = false, last = null;

    async function refresh() {
      clearTimeout(timer);
      timer = 0;
      if (document.visibilityState !== 'visible') return; // resumed on visibilitychange
      if (busy) return;
      busy = true;
      try {
        const res = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'text/html' }, cache: 'no-store' });
        // A redirect (to the login page, say) is not a fragment of rows.
        if (!res.ok || res.redirected) throw new Error('refresh: HTTP ' + res.status);
        const html = await res.text();
        if (html !== last) { last = html; replace(tbody, html); }
        setLive(true);
      } catch (e) {
        setLive(false);
      } finally {
        busy = false;
        if (!timer) timer = setTimeout(refresh, every);
      }
    }

    // Swap in the new rows (server-escaped HTML); keep focus on an element whose id survives.
    function replace(el, html) {
      const active = document.activeElement;
      const id = active && el.contains(active) && active.id ? active.id : '';
      el.innerHTML = html;
      if (id) {
        const again = document.getElementById(id);
        if (again) again.focus({ preventScroll: true });
      }
    }

    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') refresh();
      else { clearTimeout(timer); timer = 0; }
    });
    timer = setTimeout(refresh, every);
  }

  document.querySelectorAll('[data-refresh]').forEach(watch);
})();
