// grayproxy web UI. Plain JavaScript, no library, no build step.
//
// Rules this file keeps (the page must never run what the data says):
// - data reaches the page only through textContent and setAttribute on
//   non-event attributes; nothing is parsed as HTML;
// - the admin token lives in sessionStorage (this tab only), is sent only
//   in the Authorization header, never in a URL or in storage that
//   outlives the tab;
// - the Content-Security-Policy allows scripts from this origin only.
'use strict';

(function () {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const POLL_MS = 2000;
  const TOKEN_KEY = 'grayproxy.admin-token';

  const $ = (id) => document.getElementById(id);
  const rows = new Map(); // route name -> row record
  let order = '';
  let polling = null;
  const pageErrors = [];

  // Every script error and every policy violation is shown, not hidden in
  // the console: an operator (and the browser test) sees it.
  // Capture phase: a stylesheet or script that fails to load is reported too.
  window.addEventListener('error', (e) => {
    const t = e.target;
    if (t && t !== window && (t.src || t.href)) reportPageError('cannot load ' + (t.src || t.href));
    else reportPageError('script error: ' + e.message);
  }, true);
  window.addEventListener('unhandledrejection', (e) => reportPageError('script error: ' + String(e.reason)));
  document.addEventListener('securitypolicyviolation', (e) =>
    reportPageError('blocked by the content security policy: ' + e.violatedDirective + ' ' + e.blockedURI));

  function reportPageError(text) {
    pageErrors.push(text);
    document.body.dataset.pageErrors = String(pageErrors.length);
    setProblem(text);
  }

  function setProblem(text) {
    const p = $('problem');
    p.hidden = !text;
    p.textContent = text || '';
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function setText(node, text) {
    const t = text === undefined || text === null ? '' : String(text);
    if (node.textContent !== t) node.textContent = t;
  }

  const pct = (x) => (Number.isFinite(x) ? (x * 100).toFixed(x < 0.001 && x > 0 ? 3 : 2) + '%' : '–');
  const num = (x, d) => (Number.isFinite(x) ? x.toFixed(d === undefined ? 2 : d) : '–');
  const secs = (x) => (Number.isFinite(x) ? (x < 1 ? (x * 1000).toFixed(1) + ' ms' : x.toFixed(2) + ' s') : '–');
  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
  const routePath = (name, what) => '/routes/' + encodeURIComponent(name) + '/' + what;

  async function getJSON(path) {
    const r = await fetch(path, { cache: 'no-store' });
    if (!r.ok) throw new Error(path + ' answered HTTP ' + r.status);
    return r.json();
  }

  // ---- the token (sessionStorage only) -------------------------------------

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
  }

  function showTokenState() {
    setText($('token-state'), token() ? 'token set for this tab' : 'no token: actions will ask for it');
  }

  function setupToken() {
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const v = $('token').value.trim();
      if (v) sessionStorage.setItem(TOKEN_KEY, v);
      $('token').value = '';
      showTokenState();
    });
    $('token-clear').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showTokenState();
    });
    showTokenState();
  }

  // ---- the route list -------------------------------------------------------

  function newRow(name) {
    const tr = el('tr', { class: 'route' });
    tr.dataset.route = name;
    const cells = {
      name: el('td', { class: 'name' }, name),
      weight: el('td', { class: 'weight' }),
      state: el('td', { class: 'state' }),
      waiting: el('td', { class: 'waiting' }),
      errors: el('td', { class: 'num errors' }),
      toggle: el('td', { class: 'toggle' }, '▸'),
    };
    const bar = el('span', { class: 'bar' });
    const fill = el('span');
    bar.appendChild(fill);
    const pctText = el('span', { class: 'pct' });
    cells.weight.append(bar, pctText);
    for (const c of Object.values(cells)) tr.appendChild(c);
    const row = { name, tr, cells, fill, pctText, detail: null, status: null, ticks: [], lastTick: 0 };
    tr.addEventListener('click', () => toggleDetail(row));
    return row;
  }

  function renderRow(row, route) {
    row.status = route;
    const w = Number(route.canary_weight) || 0;
    row.fill.style.width = Math.max(0, Math.min(100, w)) + '%';
    setText(row.pctText, num(w) + '%');
    row.tr.dataset.weight = String(w);
    const state = route.ramp ? route.ramp.state : 'idle';
    const badges = [[state, state]];
    if (route.shadow) badges.push(['shadow', 'shadow']);
    if (route.ramp && route.ramp.error) badges.push(['error', 'state file problem']);
    const key = JSON.stringify(badges);
    if (row.badgeKey !== key) {
      row.badgeKey = key;
      row.cells.state.replaceChildren(...badges.map(([cls, text]) => el('span', { class: 'badge ' + cls }, text)));
    }
    setText(row.cells.waiting, route.ramp && route.ramp.waiting_for);
    const a = route.arms || {};
    const c = a.canary || {};
    const s = a.stable || {};
    setText(row.cells.errors, pct(c.error_rate) + ' / ' + pct(s.error_rate));
    setText(row.cells.toggle, row.detail ? '▾' : '▸');
    if (row.detail) renderDetailStatus(row);
  }

  function renderStatus(doc) {
    const routes = doc.routes || [];
    const seen = new Set();
    for (const route of routes) {
      seen.add(route.name);
      let row = rows.get(route.name);
      if (!row) {
        row = newRow(route.name);
        rows.set(route.name, row);
      }
      renderRow(row, route);
    }
    for (const [name, row] of rows) {
      if (!seen.has(name)) {
        row.tr.remove();
        if (row.detail) row.detail.tr.remove();
        rows.delete(name);
      }
    }
    const now = JSON.stringify(routes.map((r) => r.name));
    if (now !== order) {
      order = now;
      const body = $('route-rows');
      for (const route of routes) {
        const row = rows.get(route.name);
        body.appendChild(row.tr);
        if (row.detail) body.appendChild(row.detail.tr);
      }
      applyFilter();
    }
    const ramping = routes.filter((r) => r.ramp && ['baseline', 'progressing', 'paused'].includes(r.ramp.state)).length;
    const cfg = doc.config || {};
    setText($('summary'), routes.length + ' routes, ' + ramping + ' ramping · config ' + (cfg.path || '?') + ' loaded ' + (cfg.loaded_at || '?'));
    if (cfg.last_error) setProblem('last reload rejected: ' + cfg.last_error);
    renderFleet(doc.fleet);
    setText($('refreshed'), 'updated ' + clock(Date.now()));
    // When the first list was drawn (ms since navigation): measured by the
    // browser test with 200 routes.
    if (!document.body.dataset.firstRenderMs) document.body.dataset.firstRenderMs = String(Math.round(performance.now()));
  }

  function applyFilter() {
    const f = $('filter').value.trim().toLowerCase();
    for (const row of rows.values()) {
      const hide = f !== '' && !row.name.toLowerCase().includes(f);
      row.tr.hidden = hide;
      if (row.detail) row.detail.tr.hidden = hide;
    }
  }

  function renderFleet(fleet) {
    const section = $('fleet');
    section.hidden = !fleet;
    if (!fleet) return;
    const leader = fleet.leader === null || fleet.leader === undefined ? 'none known' : fleet.leader;
    setText($('fleet-summary'), 'this replica ' + fleet.replica + ' · leader ' + leader + ' · etcd ' + fleet.etcd);
    const list = $('fleet-replicas');
    list.replaceChildren(...(fleet.replicas || []).map((r) =>
      el('li', {}, r.replica + (r.alive ? ' (alive)' : ' (lease expired)') + (r.replica === fleet.leader ? ' · leader' : ''))));
  }

  // ---- one route's details ----------------------------------------------------

  function toggleDetail(row) {
    if (row.detail) {
      row.detail.tr.remove();
      row.detail = null;
      row.tr.classList.remove('open');
      setText(row.cells.toggle, '▸');
      return;
    }
    const tr = el('tr', { class: 'detail-row' });
    const td = el('td', { class: 'detail-cell', colspan: '6' });
    td.appendChild($('detail-template').content.cloneNode(true));
    tr.appendChild(td);
    row.tr.after(tr);
    row.tr.classList.add('open');
    row.detail = { tr, root: td };
    row.ticks = [];
    row.lastTick = 0;
    for (const b of td.querySelectorAll('button[data-action]')) {
      b.addEventListener('click', (e) => {
        e.stopPropagation();
        act(row, b.dataset.action);
      });
    }
    renderDetailStatus(row);
    refreshHistory(row);
  }

  function renderDetailStatus(row) {
    const d = row.detail.root;
    const ramp = row.status && row.status.ramp;
    const err = d.querySelector('.ramp-error');
    err.hidden = !(ramp && ramp.error);
    setText(err, ramp && ramp.error);
    renderDecisions(d.querySelector('table.decisions tbody'), (ramp && ramp.decisions) || [], row);
    renderKpi(d.querySelector('.kpi'), (ramp && ramp.kpi) || []);
    renderShadow(d.querySelector('.shadow'), row.status && row.status.shadow);
    renderSegments(d.querySelector('.segments'), (row.status && row.status.segments) || []);
  }

  // Per segment (since its counters began): each arm's numbers, and the
  // judge's rollback evidence within the segment on this ramp.
  function renderSegments(box, segments) {
    box.hidden = segments.length === 0;
    box.querySelector('tbody').replaceChildren(...segments.map((s) => {
      const tr = el('tr');
      tr.append(el('td', {}, s.segment));
      for (const arm of ['stable', 'canary']) {
        const a = (s.arms && s.arms[arm]) || {};
        tr.append(el('td', { class: 'num' }, a.requests),
          el('td', { class: 'num' }, a.errors + ' (' + pct(a.error_rate) + ')'),
          el('td', { class: 'num' }, a.requests ? secs(a.p99_seconds) : '–'));
      }
      tr.append(el('td', { class: 'num' }, num(s.e, 2)));
      return tr;
    }));
  }

  function renderDecisions(body, decisions, row) {
    const key = decisions.length ? decisions[decisions.length - 1].at_ms + ':' + decisions.length : '';
    if (body.dataset.key === key) return;
    body.dataset.key = key;
    body.replaceChildren(...decisions.slice().reverse().map((rec) => {
      const tr = el('tr');
      tr.append(
        el('td', {}, clock(rec.at_ms)),
        el('td', {}, rec.action),
        el('td', {}, rec.trigger),
        el('td', { class: 'num' }, rec.step),
        el('td', { class: 'num' }, num(rec.weight) + '%'),
        el('td', { class: 'reason' }, rec.reason));
      tr.addEventListener('click', () => pick(row, rec));
      return tr;
    }));
  }

  function renderKpi(box, results) {
    box.hidden = results.length === 0;
    const body = box.querySelector('tbody');
    body.replaceChildren(...results.map((k) => {
      const tr = el('tr');
      tr.append(el('td', {}, k.name), el('td', {}, k.outcome), el('td', { class: 'num' }, 'stable ' + num(k.stable, 4)),
        el('td', { class: 'num' }, 'canary ' + num(k.canary, 4)), el('td', { class: 'reason' }, k.reason || ''));
      return tr;
    }));
  }

  function renderShadow(box, s) {
    box.hidden = !s;
    if (!s) return;
    const rows2 = [
      ['mirrored / compared / skipped', s.mirrored + ' / ' + s.compared + ' / ' + s.skipped],
      ['canary errors / stable errors', s.canary_errors + ' / ' + s.stable_errors],
      ['status mismatches', s.status_mismatches],
      ['p99 stable / canary', secs(s.stable_p99_seconds) + ' / ' + secs(s.canary_p99_seconds)],
      ['rank-biased overlap mean / p10 / p50', [s.rbo && s.rbo.mean, s.rbo && s.rbo.p10, s.rbo && s.rbo.p50].map((x) => num(x, 3)).join(' / ')],
      ['overlap at k', num(s.overlap_at_k && s.overlap_at_k.mean, 3)],
    ];
    for (const f of s.fields || []) {
      rows2.push(['field ' + f.path + (f.flagged ? ' (flagged)' : ''),
        'differs ' + pct(f.diff_rate) + ', noise ' + pct(f.noise_rate) + ', e.g. ' + JSON.stringify(f.example && f.example.stable) + ' vs ' + JSON.stringify(f.example && f.example.canary)]);
    }
    box.querySelector('tbody').replaceChildren(...rows2.map(([k, v]) => {
      const tr = el('tr');
      tr.append(el('th', {}, k), el('td', {}, v));
      return tr;
    }));
  }

  // Shows one decision: its reason and the evidence it was made on.
  function pick(row, rec) {
    const box = row.detail && row.detail.root.querySelector('.picked');
    if (!box) return;
    box.hidden = false;
    setText(box.querySelector('.picked-title'), rec.action + ' at ' + clock(rec.at_ms) + ' (' + rec.trigger + ', step ' + rec.step + ', ' + num(rec.weight) + '%)');
    setText(box.querySelector('.picked-reason'), rec.reason);
    const ev = rec.evidence;
    const items = [];
    if (ev) {
      items.push(['E combined / 1/α', num(ev.e, 3) + ' / ' + num(ev.rollback_threshold, 1)]);
      items.push(['E errors, E slow', num(ev.e_errors, 3) + ', ' + num(ev.e_slow, 3)]);
      items.push(['always-valid p-value', num(ev.p_value, 4)]);
      if (ev.gate) items.push(['gate (ratio ' + num(ev.gate.tolerance) + ') F errors, F slow', num(ev.gate.f_errors, 2) + ', ' + num(ev.gate.f_slow, 2) + (ev.gate.passed ? ' (passed)' : ' (not yet)')]);
      const range = (r) => '[' + num(r && r.low, 2) + ', ' + num(r && r.high, 2) + ']';
      items.push(['canary/stable ratio, errors', range(ev.ratio_errors)]);
      items.push(['canary/stable ratio, slow', range(ev.ratio_slow)]);
      for (const arm of ['stable', 'canary']) {
        const a = ev[arm] || {};
        items.push([arm + ' on this step', a.requests + ' requests, ' + a.errors + ' errors (' + pct(a.error_rate) + '), p99 ' + secs(a.p99_seconds)]);
      }
      if (Number.isFinite(ev.e_combined)) items.push(['E with segments (mean of overall and each segment) / 1/α', num(ev.e_combined, 3) + ' / ' + num(ev.rollback_threshold, 1)]);
      for (const sg of ev.segments || []) {
        const c = sg.canary || {};
        const st = sg.stable || {};
        items.push(['segment ' + sg.segment + ': E (errors, slow)', num(sg.e, 3) + ' (' + num(sg.e_errors, 3) + ', ' + num(sg.e_slow, 3) + '); canary ' + c.requests + ' req ' + pct(c.error_rate) + ' err, stable ' + st.requests + ' req ' + pct(st.error_rate) + ' err']);
      }
      items.push(['shared degradation hold', ev.hold ? 'yes' : 'no']);
    } else {
      items.push(['evidence', 'none (the judge was not calibrated yet)']);
    }
    box.querySelector('.picked-evidence').replaceChildren(...items.map(([k, v]) => {
      const tr = el('tr');
      tr.append(el('th', {}, k), el('td', {}, v));
      return tr;
    }));
  }

  // Asks only for the ticks after the last one the page has.
  async function refreshHistory(row) {
    const detail = row.detail;
    if (!detail || detail.loading) return;
    detail.loading = true;
    const since = row.lastTick ? '?since=' + row.lastTick : '';
    let h;
    try {
      h = await getJSON(routePath(row.name, 'history') + since);
    } catch (e) {
      setProblem('cannot read the history of ' + row.name + ': ' + e.message);
      return;
    } finally {
      detail.loading = false;
    }
    if (row.detail !== detail) return;
    const fresh = h.ticks || [];
    row.ticks = row.ticks.concat(fresh);
    if (row.ticks.length > h.capacity) row.ticks = row.ticks.slice(row.ticks.length - h.capacity);
    if (fresh.length) row.lastTick = fresh[fresh.length - 1].at_ms;
    drawCharts(row);
  }

  // ---- operator actions ------------------------------------------------------

  async function act(row, action) {
    const answer = row.detail.root.querySelector('.answer');
    answer.className = 'answer';
    const t = token();
    if (!t) {
      answer.classList.add('refused');
      setText(answer, action + ': enter the admin token at the top first (it is kept for this tab only)');
      $('token').focus();
      return;
    }
    setText(answer, action + '…');
    let status = 0;
    let body = null;
    try {
      const r = await fetch(routePath(row.name, action), {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + t },
        cache: 'no-store',
      });
      status = r.status;
      body = await r.json().catch(() => null);
    } catch (e) {
      answer.classList.add('refused');
      setText(answer, action + ' failed: ' + e.message);
      return;
    }
    if (status >= 200 && status < 300 && body && body.ramp) {
      answer.classList.add('ok');
      setText(answer, action + ' done: ' + body.ramp.state + ' at ' + num(body.ramp.weight) + '%');
    } else {
      answer.classList.add('refused');
      setText(answer, action + ' refused (HTTP ' + status + '): ' + ((body && body.error) || 'no answer'));
    }
    poll();
  }

  // ---- charts (hand-drawn SVG) ------------------------------------------------

  const PAD = { l: 44, r: 8, t: 8, b: 18 };

  function frame(svg, x0, x1, y0, y1, log) {
    const w = Math.max(200, svg.clientWidth || 420);
    const h = Math.max(100, svg.clientHeight || 160);
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    svg.replaceChildren();
    const ty = log ? (v) => Math.log10(Math.max(v, y0)) : (v) => v;
    const a = ty(y0);
    const b = ty(y1);
    const sx = (x) => PAD.l + ((x - x0) / Math.max(1, x1 - x0)) * (w - PAD.l - PAD.r);
    const sy = (y) => h - PAD.b - ((ty(Math.min(Math.max(y, y0), y1)) - a) / Math.max(1e-12, b - a)) * (h - PAD.t - PAD.b);
    svg.append(
      svgEl('line', { class: 'axis', x1: PAD.l, y1: h - PAD.b, x2: w - PAD.r, y2: h - PAD.b }),
      svgEl('line', { class: 'axis', x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: h - PAD.b }),
      svgEl('text', { class: 'tick-label', x: 2, y: PAD.t + 8 }, label(y1, log)),
      svgEl('text', { class: 'tick-label', x: 2, y: h - PAD.b }, label(y0, log)),
      svgEl('text', { class: 'tick-label', x: PAD.l, y: h - 4 }, clock(x0)),
      svgEl('text', { class: 'tick-label', x: w - PAD.r, y: h - 4, 'text-anchor': 'end' }, clock(x1)));
    return { sx, sy, w, h };
  }

  function label(v, log) {
    if (log) return v >= 1 ? String(Math.round(v)) : v.toPrecision(1);
    if (v === 0) return '0';
    return v >= 10 ? String(Math.round(v)) : v < 0.1 ? v.toPrecision(2) : v.toFixed(2);
  }

  function series(svg, f, points, cls) {
    if (points.length === 0) return;
    const pts = points.map(([x, y]) => f.sx(x).toFixed(1) + ',' + f.sy(y).toFixed(1)).join(' ');
    svg.appendChild(svgEl('polyline', { class: 'series ' + cls, points: pts }));
  }

  function hline(svg, f, x0, x1, y, cls, title) {
    const l = svgEl('line', { class: cls, x1: f.sx(x0), x2: f.sx(x1), y1: f.sy(y), y2: f.sy(y) });
    l.appendChild(svgEl('title', {}, title));
    svg.appendChild(l);
  }

  function empty(svg, text) {
    svg.replaceChildren(svgEl('text', { class: 'empty', x: 12, y: 24 }, text));
  }

  function drawCharts(row) {
    const root = row.detail.root;
    const ticks = row.ticks;
    const charts = ['weight', 'errors', 'p99', 'evidence', 'gate'].map((c) => root.querySelector('svg.' + c));
    if (ticks.length === 0) {
      for (const svg of charts) empty(svg, 'no ticks yet');
      return;
    }
    const x0 = ticks[0].at_ms;
    const x1 = Math.max(ticks[ticks.length - 1].at_ms, x0 + 1);
    drawWeight(row, charts[0], ticks, x0, x1);
    drawArms(charts[1], ticks, x0, x1, (a) => (a.requests > 0 ? a.error_rate : null), 0.01);
    drawArms(charts[2], ticks, x0, x1, (a) => a.p99_seconds, 0.01);
    drawEvidence(charts[3], ticks, x0, x1);
    drawGate(charts[4], ticks, x0, x1);
  }

  function drawWeight(row, svg, ticks, x0, x1) {
    const f = frame(svg, x0, x1, 0, 100, false);
    const pts = ticks.map((t) => [t.at_ms, t.weight]);
    series(svg, f, pts, 'canary');
    svg.dataset.points = String(pts.length);
    svg.dataset.lastMs = String(ticks[ticks.length - 1].at_ms);
    const decisions = (row.status && row.status.ramp && row.status.ramp.decisions) || [];
    for (const rec of decisions) {
      if (rec.at_ms < x0 || rec.at_ms > x1) continue;
      const c = svgEl('circle', { class: 'decision ' + rec.action, cx: f.sx(rec.at_ms), cy: f.sy(rec.weight), r: 5 });
      c.appendChild(svgEl('title', {}, rec.action + ' at ' + clock(rec.at_ms) + ': ' + rec.reason));
      c.addEventListener('click', () => pick(row, rec));
      svg.appendChild(c);
    }
  }

  function drawArms(svg, ticks, x0, x1, value, floor) {
    let top = floor;
    const pts = { stable: [], canary: [] };
    for (const t of ticks) {
      for (const arm of ['stable', 'canary']) {
        const v = value(t[arm] || {});
        if (v === null || v === undefined || !Number.isFinite(v)) continue;
        pts[arm].push([t.at_ms, v]);
        top = Math.max(top, v);
      }
    }
    const f = frame(svg, x0, x1, 0, top * 1.1, false);
    series(svg, f, pts.stable, 'stable');
    series(svg, f, pts.canary, 'canary');
  }

  function drawEvidence(svg, ticks, x0, x1) {
    const ev = ticks.filter((t) => t.evidence);
    if (ev.length === 0) {
      empty(svg, 'no evidence yet (the judge calibrates during the baseline)');
      return;
    }
    const threshold = ev[ev.length - 1].evidence.rollback_threshold;
    let top = threshold * 2;
    for (const t of ev) top = Math.max(top, t.evidence.e, t.evidence.e_errors, t.evidence.e_slow);
    const f = frame(svg, x0, x1, 0.01, top, true);
    series(svg, f, ev.map((t) => [t.at_ms, t.evidence.e_errors]), 'errors-e');
    series(svg, f, ev.map((t) => [t.at_ms, t.evidence.e_slow]), 'slow-e');
    series(svg, f, ev.map((t) => [t.at_ms, t.evidence.e]), 'combined');
    hline(svg, f, x0, x1, threshold, 'threshold', 'rollback when E reaches 1/α = ' + num(threshold, 1));
    for (const t of ev) {
      if (!t.evidence.hold) continue;
      svg.appendChild(svgEl('rect', { class: 'hold-mark', x: f.sx(t.at_ms) - 2, y: f.h - PAD.b - 6, width: 4, height: 6 }));
    }
  }

  function drawGate(svg, ticks, x0, x1) {
    const g = ticks.filter((t) => t.evidence && t.evidence.gate);
    if (g.length === 0) {
      empty(svg, 'no gate on this step');
      return;
    }
    const target = g[g.length - 1].evidence.gate.target;
    let top = target * 2;
    for (const t of g) top = Math.max(top, t.evidence.gate.f_errors, t.evidence.gate.f_slow);
    const f = frame(svg, x0, x1, 0.01, top, true);
    series(svg, f, g.map((t) => [t.at_ms, t.evidence.gate.f_errors]), 'errors-e');
    series(svg, f, g.map((t) => [t.at_ms, t.evidence.gate.f_slow]), 'slow-e');
    hline(svg, f, x0, x1, target, 'threshold', 'the step may advance when both reach ' + num(target, 0));
  }

  // ---- polling ----------------------------------------------------------------

  // One poll at a time; a poll asked for meanwhile (after an action) runs
  // right after the current one.
  let inFlight = false;
  let again = false;

  async function poll() {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    clearTimeout(polling);
    try {
      const doc = await getJSON('/status');
      if (pageErrors.length === 0) setProblem(null);
      const t0 = performance.now();
      renderStatus(doc);
      // How long drawing the list took (shown nowhere; the 200-route test reads it).
      document.body.dataset.renderMs = (performance.now() - t0).toFixed(1);
      await Promise.all([...rows.values()].filter((r) => r.detail).map(refreshHistory));
    } catch (e) {
      setProblem('cannot read /status: ' + e.message);
    }
    inFlight = false;
    if (again) {
      again = false;
      poll();
      return;
    }
    polling = setTimeout(poll, POLL_MS);
  }

  setupToken();
  $('filter').addEventListener('input', applyFilter);
  poll();
})();
