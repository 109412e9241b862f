// drover's dashboard: a small single-page app over /api/v1 (no framework,
// no build step). Every text that comes from the API goes into the page as
// a text node or an attribute value, never as markup; the server's
// Content-Security-Policy allows no inline script either.
'use strict';

(function () {
  const API = '/api/v1';
  const TOKEN_KEY = 'drover.token';
  const REFRESH_MS = 5000;
  const LEDGER_PAGE = 50;

  let whoami = null; // {name, role} of the token in use
  let generation = 0; // bumped on every navigation: late answers for old pages are dropped
  let timers = [];
  let streams = []; // AbortControllers of the event streams this page follows
  let lastRollback = null; // a rollback's result, shown above the page redrawn after it

  // --- DOM -----------------------------------------------------------------

  // h('a', {href: '#/x', class: 'y'}, 'text', child...): an element whose
  // children are nodes or strings (which become text nodes).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    put(el, children);
    return el;
  }

  function put(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function fill(el, ...children) {
    el.replaceChildren();
    return put(el, children);
  }

  function view() {
    return document.getElementById('view');
  }

  function badge(text, tone) {
    return h('span', { class: 'badge' + (tone ? ' ' + tone : '') }, text);
  }

  function facts(pairs) {
    const dl = h('dl', { class: 'facts' });
    for (const [k, v] of pairs) {
      if (v === null || v === undefined || v === '') continue;
      put(dl, [h('dt', {}, k), h('dd', {}, v)]);
    }
    return dl;
  }

  function table(headers, rows, empty) {
    if (!rows.length) return h('p', { class: 'empty' }, empty);
    return h('table', {},
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', {}, t)))),
      h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) =>
        c instanceof Node && c.tagName === 'TD' ? c : h('td', {}, c))))));
  }

  function short(digest) {
    if (typeof digest !== 'string') return '';
    const hex = digest.startsWith('sha256:') ? digest.slice(7) : digest;
    return hex.slice(0, 12);
  }

  function digestCode(digest) {
    return h('code', { title: digest }, short(digest));
  }

  // "2026-12-06T04:42:48.034Z" (or unix milliseconds) as
  // "2026-12-06 04:42:48 UTC (3 min ago)".
  function when(t) {
    if (t === null || t === undefined) return '';
    const d = new Date(t);
    if (isNaN(d)) return String(t);
    const iso = d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
    return h('time', { datetime: d.toISOString(), title: d.toISOString() }, iso + ' (' + ago(d) + ')');
  }

  function ago(d) {
    const s = Math.round((Date.now() - d.getTime()) / 1000);
    const future = s < 0;
    const a = Math.abs(s);
    let text;
    if (a < 60) text = a + ' s';
    else if (a < 3600) text = Math.round(a / 60) + ' min';
    else if (a < 86400) text = Math.round(a / 3600) + ' h';
    else text = Math.round(a / 86400) + ' d';
    return future ? 'in ' + text : text + ' ago';
  }

  function link(href, text) {
    return h('a', { href }, text);
  }

  function serviceHref(name) {
    return '#/services/' + encodeURIComponent(name);
  }

  function traceHref(id) {
    return '#/instances/' + encodeURIComponent(id) + '/trace';
  }

  // --- the API ---------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, kind, message, hint) {
      super(message);
      this.status = status;
      this.kind = kind;
      this.hint = hint;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  // GET (or POST `body` to) /api/v1`path`; the document, or an ApiError
  // carrying the API's error document. A 401 signs out.
  async function api(path, opts) {
    opts = opts || {};
    const headers = { Accept: 'application/json' };
    const t = opts.token || token();
    if (t) headers.Authorization = 'Bearer ' + t;
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    let res;
    try {
      res = await fetch(API + path, {
        method: opts.method || 'GET', headers, body, cache: 'no-store', credentials: 'omit',
      });
    } catch (e) {
      throw new ApiError(0, 'unavailable', 'drover serve did not answer (' + e.message + ')',
        'is `drover serve` running with its admin listener here?');
    }
    const text = await res.text();
    const doc = parse(text);
    if (!res.ok || (doc && doc.kind === 'Error')) {
      const e = (doc && doc.error) || {};
      const err = new ApiError(res.status, e.kind || 'http',
        e.message || 'HTTP ' + res.status + ' ' + res.statusText, e.hint || null);
      if (res.status === 401 && !opts.token) {
        signOut('The token was refused (unknown, expired or revoked): paste a valid one.');
      }
      throw err;
    }
    return doc;
  }

  // One JSON document, or JSON Lines (one document a line) as {items}.
  function parse(text) {
    if (!text.trim()) return { items: [] };
    try {
      return JSON.parse(text);
    } catch (_) {
      const items = [];
      for (const line of text.split('\n')) {
        if (!line.trim()) continue;
        try {
          items.push(JSON.parse(line));
        } catch (_) {
          return null;
        }
      }
      return { items };
    }
  }

  function itemsOf(doc) {
    return (doc && Array.isArray(doc.items)) ? doc.items : [];
  }

  function canDeploy() {
    return whoami && (whoami.role === 'deploy' || whoami.role === 'admin');
  }

  function errorBanner(e) {
    let text = e.message;
    if (e.status === 403) text = 'Not allowed with this token (role ' + (whoami ? whoami.role : '?') + '): ' + e.message;
    return h('div', { class: 'banner bad', role: 'alert' }, text,
      e.hint ? h('span', { class: 'hint' }, e.hint) : null);
  }

  // --- pages and refresh -------------------------------------------------------

  // Load with `load` and draw into `el` with `draw`, now and every
  // REFRESH_MS while this page is shown (never again when `ms` is 0);
  // redraws only when the answer changed (so a reader's place and a click
  // in progress are kept). Returns `poke`: load again now (an event said
  // something changed).
  function live(el, load, draw, ms) {
    const gen = generation;
    let last = null;
    let timer = null;
    let running = false;
    let again = false;
    const tick = async () => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      clearTimeout(timer);
      try {
        const data = await load();
        if (gen !== generation) return;
        const key = JSON.stringify(data);
        if (key !== last) {
          last = key;
          fill(el, draw(data));
        }
      } catch (e) {
        if (gen !== generation) return;
        // A moment without an answer keeps what is shown; anything else says why.
        if (last === null || !(e instanceof ApiError) || e.status !== 0) {
          fill(el, errorBanner(e));
          last = null;
        }
      } finally {
        running = false;
      }
      if (gen !== generation) return;
      if (again) {
        again = false;
        tick();
      } else if (ms !== 0) {
        timer = setTimeout(tick, ms || REFRESH_MS);
        timers.push(timer);
      }
    };
    tick();
    return () => {
      if (gen === generation) tick();
    };
  }

  function page(title, sub, ...sections) {
    document.title = title + ' · drover';
    fill(view(), h('h1', {}, title), sub ? h('p', { class: 'sub' }, sub) : null, sections);
  }

  function region() {
    return h('div', { class: 'region' }, h('p', { class: 'muted' }, 'Loading…'));
  }

  // --- the fleet -----------------------------------------------------------------

  function fleetPage() {
    const list = region();
    page('Fleet', 'Every service drover keeps: what runs, how many are ready, whether it matches its fleet file.', list);
    live(list, () => api('/services'), (doc) => {
      const rows = itemsOf(doc).map((s) => [
        link(serviceHref(s.name), s.name),
        s.release === null || s.release === undefined ? h('span', { class: 'muted' }, 'none') : 'release ' + s.release,
        h('td', { class: 'num' }, readyBadge(s)),
        s.strategy || '',
        outcomeBadge(s.outcome),
        syncBadge(s.sync),
        backoffCell(s),
        s.image ? digestCode(s.image) : '',
      ]);
      return table(['Service', 'Release', 'Ready', 'Strategy', 'Outcome', 'Sync', 'Heals / back-off', 'Image'],
        rows, 'No services yet: `drover apply -f fleet.toml` records some.');
    });
  }

  function readyBadge(s) {
    const ready = s.ready || 0;
    const want = s.replicas || 0;
    return badge(ready + '/' + want + ' ready', ready >= want && want > 0 ? 'ok' : (ready === 0 ? 'bad' : 'warn'));
  }

  function outcomeBadge(outcome) {
    if (!outcome) return '';
    return badge(outcome, outcome === 'healthy' ? 'ok' : outcome === 'failed' ? 'bad' : 'warn');
  }

  function syncBadge(sync) {
    if (!sync) return '';
    const tone = sync.state === 'synced' ? 'ok' : sync.state === 'out-of-sync' ? 'warn' : null;
    return h('span', {}, badge(sync.state, tone),
      sync.reason ? h('div', { class: 'muted' }, sync.reason) : null);
  }

  function backoffCell(s) {
    const hl = s.health || {};
    const parts = [];
    if (hl.backoff_until && hl.backoff_until > Date.now()) {
      parts.push(badge('backing off', 'warn'), ' until ', when(hl.backoff_until));
    }
    parts.push(h('div', { class: 'muted' },
      (hl.restarts || 0) + ' restarts, ' + (hl.failures || 0) + ' failed passes'));
    if (hl.last_error) parts.push(h('div', { class: 'problem' }, hl.last_error));
    if (s.revoked) parts.push(h('div', { class: 'problem' }, 'image revoked: ' + s.revoked));
    return h('span', {}, parts);
  }

  // --- one service -------------------------------------------------------------

  function servicePage(name) {
    const summary = region();
    const releases = region();
    const instances = region();
    const events = region();
    const logs = region();
    const rollback = canDeploy() ? rollbackPanel(name, releases) : null;
    page(name, null,
      summary,
      rollback,
      h('h2', {}, 'Instances'), instances,
      h('h2', {}, 'Releases'), releases,
      h('h2', {}, 'Events of the last 24 hours'), events,
      h('h2', {}, 'Log tail'), logs);

    const path = '/services/' + encodeURIComponent(name);
    // Drift is asked for once per set of instances (a sweep hashes their
    // files), not at every refresh; "Check drift again" asks anew.
    let drift = null;
    let driftFor = null;
    let lastService = null;
    const idsOf = (s) => (s.instances || []).map((i) => i.id).sort().join(' ');
    const drawInstances = () => {
      if (!lastService) return;
      // The first answer after the first sweep was asked for tells which
      // instances it covers; other instances later (a rollout): ask again.
      if (driftFor === '') driftFor = idsOf(lastService);
      else if (driftFor !== idsOf(lastService) && !(drift && drift.checking)) return loadDrift();
      fill(instances, instanceTable(lastService, drift, () => loadDrift()));
    };
    const loadDrift = () => {
      driftFor = lastService ? idsOf(lastService) : '';
      drift = { checking: true };
      drawInstances();
      api('/drift?target=' + encodeURIComponent(name)).then((d) => {
        drift = d;
      }, (e) => {
        drift = { error: e.message };
      }).then(drawInstances);
    };

    const pokes = [
      live(summary, () => api(path), (s) => {
        lastService = s;
        drawInstances();
        return serviceSummary(s);
      }),
      live(releases, () => api(path + '/releases'), (doc) => timeline(itemsOf(doc))),
      live(logs, () => api(path + '/logs?tail=50'), (doc) => logTail(itemsOf(doc))),
    ];
    loadDrift();
    // Each new event redraws the rest now rather than at the next refresh.
    followEvents(events, name, () => pokes.forEach((poke) => poke()));
  }

  function serviceSummary(s) {
    return h('section', { class: 'panel' }, facts([
      ['Release', s.release === null || s.release === undefined ? 'none' : String(s.release)],
      ['Ready', readyBadge(s)],
      ['Outcome', outcomeBadge(s.outcome)],
      ['Strategy', s.strategy],
      ['Sync', syncBadge(s.sync)],
      ['Heals / back-off', backoffCell(s)],
      ['Ports', (s.ports || []).join(', ') || 'none'],
      ['Image', s.image ? h('code', {}, s.image) : null],
      ['Quarantined', (s.quarantined || []).length ? (s.quarantined || []).map((q) => typeof q === 'object' ? JSON.stringify(q) : String(q)).join(', ') : null],
    ]));
  }

  function instanceTable(s, drift, recheck) {
    const byId = {};
    let driftNote = null;
    if (drift && drift.checking) driftNote = 'checking…';
    else if (drift && drift.error) driftNote = 'drift check failed: ' + drift.error;
    else if (drift) for (const d of drift.instances || []) byId[d.instance] = d;
    const rows = (s.instances || []).map((i) => {
      const d = byId[i.id];
      let driftCell;
      if (d) {
        const n = (d.findings || []).length;
        driftCell = n === 0 ? badge('no drift', 'ok')
          : h('span', {}, badge(n + ' finding' + (n === 1 ? '' : 's'), 'bad'),
            h('div', { class: 'muted' }, (d.findings || []).slice(0, 3).map(findingText).join('; ')),
            d.action && d.action !== 'none' ? h('div', { class: 'muted' }, 'action: ' + d.action) : null);
      } else {
        driftCell = h('span', { class: 'muted' }, driftNote || 'not checked');
      }
      const flags = [];
      if (i.draining) flags.push(badge('draining', 'warn'));
      if (i.condemned) flags.push(badge('condemned: ' + i.condemned, 'bad'));
      if (i.revoked) flags.push(badge('revoked', 'bad'));
      if (i.lost) flags.push(badge('lost', 'bad'));
      return [
        link(traceHref(i.id), h('code', {}, i.id)),
        'release ' + i.release,
        h('span', {}, badge(i.state, i.state === 'running' ? 'ok' : 'warn'), ' ', flags),
        i.healthy ? badge('healthy', 'ok') : badge(i.healthy === false ? 'unhealthy' : 'unknown', i.healthy === false ? 'bad' : null),
        i.ready ? 'yes' : 'no',
        i.port === null || i.port === undefined ? '' : String(i.port),
        i.pid === null || i.pid === undefined ? '' : String(i.pid),
        driftCell,
      ];
    });
    return h('div', {},
      table(['Instance', 'Release', 'State', 'Health', 'Ready', 'Port', 'PID', 'Drift'], rows, 'No instances.'),
      h('p', {}, h('button', { type: 'button', id: 'check-drift', class: 'secondary', onclick: recheck }, 'Check drift again'),
        ' ', h('span', { class: 'muted' }, 'Click an instance for its trace.')));
  }

  // One drift finding (drift::Drift: tagged by `area`), as `drover drift` says it.
  function findingText(f) {
    if (!f || typeof f !== 'object') return String(f);
    switch (f.area) {
      case 'file': return 'file ' + f.path + ' ' + (f.change || 'changed');
      case 'config': return 'config ' + f.path + ': ' + f.detail;
      case 'process': return 'process ' + f.what + ': ' + f.detail;
      case 'image': return 'image ' + f.got + ', but its release has ' + f.want;
      case 'root': return 'root: ' + f.detail;
      default: return JSON.stringify(f);
    }
  }

  function timeline(items) {
    if (!items.length) return h('p', { class: 'empty' }, 'No releases.');
    const newest = items[items.length - 1].number;
    return h('ol', { class: 'timeline' }, items.slice().reverse().map((r) => {
      const cls = [r.outcome || ''];
      if (r.number === newest) cls.push('current');
      return h('li', { class: cls.join(' '), 'data-release': r.number },
        h('div', { class: 'release-head' },
          h('strong', {}, 'Release ' + r.number),
          outcomeBadge(r.outcome),
          r.rollback_of !== null && r.rollback_of !== undefined ? badge('rollback to ' + r.rollback_of, 'warn') : null,
          r.unstable ? badge('unstable', 'warn') : null,
          h('span', { class: 'muted' }, r.image_ref || short(r.image))),
        facts([
          ['By', r.author],
          ['When', when(r.created)],
          ['Message', r.message],
          ['Reason', r.reason],
          ['Image', h('code', {}, r.image)],
          ['Unstable', r.unstable && typeof r.unstable !== 'boolean' ? String(r.unstable) : null],
        ]));
    }));
  }

  function eventList(items) {
    const recent = items.slice(-20).reverse();
    return table(['Time', 'Event', 'Subject', 'Reason', 'By'], recent.map((e) => [
      when(e.time),
      badge(e.type, /failed|condemned|refus|revok|drift|exited/.test(e.type) ? 'warn' : null),
      [e.release !== null && e.release !== undefined ? 'release ' + e.release : null,
        e.instance ? h('code', {}, ' ' + e.instance) : null],
      e.reason || '',
      e.actor || '',
    ]), 'No events in the last 24 hours.');
  }

  // The service's events of the last 24 hours, then new ones as they
  // happen: the API's server-sent events, read from a fetch (EventSource
  // cannot send a bearer token). A broken stream is taken up again from
  // the last event seen.
  function followEvents(el, name, changed) {
    const gen = generation;
    const ctl = new AbortController();
    streams.push(ctl);
    const q = '/events?service=' + encodeURIComponent(name);
    let items = [];
    let live = false;
    const draw = () => fill(el,
      h('p', { class: 'muted', id: 'events-state' }, live ? 'Live: new events appear as they happen.' : 'Reconnecting…'),
      eventList(items));
    (async () => {
      let next;
      try {
        const doc = await api(q + '&since=24h');
        items = itemsOf(doc);
        next = doc.next;
      } catch (e) {
        if (gen === generation) fill(el, errorBanner(e));
        return;
      }
      while (gen === generation) {
        try {
          await readStream(q + '&from=' + next, ctl.signal, () => {
            live = true;
            draw();
          }, (ev) => {
            items.push(ev);
            if (items.length > 500) items = items.slice(-500);
            next = ev.seq + 1;
            draw();
            changed();
          });
        } catch (_) {
          // Dropped (or the page was left): below.
        }
        if (gen !== generation) return;
        live = false;
        draw();
        await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
      }
    })();
  }

  // Read the server-sent events at /api/v1`path`: `opened` once the
  // stream answers, `onEvent` with each event's data (JSON).
  async function readStream(path, signal, opened, onEvent) {
    const res = await fetch(API + path, {
      headers: { Accept: 'text/event-stream', Authorization: 'Bearer ' + token() },
      signal, cache: 'no-store', credentials: 'omit',
    });
    if (res.status === 401) signOut('The token was refused (unknown, expired or revoked): paste a valid one.');
    if (!res.ok || !res.body) throw new ApiError(res.status, 'http', 'event stream: HTTP ' + res.status, null);
    opened();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let type = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) type = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (!data.length) continue; // a comment (keep-alive) or retry:
        if (type === 'error') throw new ApiError(500, 'internal', 'event stream: ' + data.join('\n'), null);
        try {
          onEvent(JSON.parse(data.join('\n')));
        } catch (_) {
          // Not an event: skip it.
        }
      }
    }
  }

  function logTail(items) {
    if (!items.length) return h('p', { class: 'empty' }, 'No output yet.');
    const lines = items.map((l) => {
      const who = l.instance ? l.instance + ' ' : '';
      return who + (l.text !== undefined ? l.text : JSON.stringify(l)).replace(/\n$/, '');
    });
    return h('pre', { class: 'logs' }, lines.join('\n'));
  }

  function rollbackPanel(name, releasesRegion) {
    const to = h('select', { id: 'rollback-to', name: 'to' },
      h('option', { value: '' }, 'the last healthy release before the current one'));
    const reason = h('input', { id: 'rollback-message', type: 'text', name: 'message', placeholder: 'why (recorded with the new release)' });
    const button = h('button', { id: 'rollback', type: 'submit', class: 'danger' }, 'Roll back');
    const result = h('div', { id: 'rollback-result' });
    const fillOptions = () => api('/services/' + encodeURIComponent(name) + '/releases').then((doc) => {
      const items = itemsOf(doc);
      const current = items.length ? items[items.length - 1].number : null;
      to.replaceChildren(to.firstChild);
      for (const r of items.slice().reverse()) {
        if (r.number === current) continue;
        put(to, [h('option', { value: r.number }, 'release ' + r.number + ' — ' + (r.image_ref || short(r.image)) + ' (' + r.outcome + ')')]);
      }
    }, () => {});
    fillOptions();
    if (lastRollback && lastRollback.service === name) fill(result, rollbackResult(lastRollback.doc));
    lastRollback = null;
    const form = h('form', {
      class: 'panel inline', id: 'rollback-form',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const body = {};
        if (to.value) body.to = Number(to.value);
        if (reason.value.trim()) body.message = reason.value.trim();
        button.disabled = true;
        button.textContent = 'Rolling back…';
        fill(result, h('div', { class: 'banner warn' }, 'Rolling back ' + name + '…'));
        try {
          const doc = await api('/services/' + encodeURIComponent(name) + '/rollback', { method: 'POST', body });
          lastRollback = { service: name, doc };
          // Draw the page anew (the new release and instances now rather
          // than at the next refresh), the result above it.
          route();
          return;
        } catch (e) {
          fill(result, errorBanner(e));
        } finally {
          button.disabled = false;
          button.textContent = 'Roll back';
        }
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'rollback-to' }, 'Roll back to'), to),
    h('div', { class: 'field wide' }, h('label', { for: 'rollback-message' }, 'Message'), reason),
    button);
    return h('div', {}, form, result);
  }

  // The answer to a rollback: its deploy report (a new release recorded,
  // which `drover serve` rolls out; the page follows it).
  function rollbackResult(doc) {
    const r = itemsOf(doc)[0] || doc;
    let text;
    if (r.created !== null && r.created !== undefined) {
      text = 'Rollback of ' + r.service + ' recorded as release ' + r.created +
        (r.started || r.stopped
          ? ': rolled out (' + (r.started || 0) + ' started, ' + (r.stopped || 0) + ' stopped).'
          : '; drover serve is rolling it out (this page follows it).');
    } else {
      text = 'Nothing to roll back: ' + r.service + ' already runs that content (release ' + r.release + ').';
    }
    return h('div', { class: 'banner ok', role: 'status', id: 'rollback-done' }, text);
  }

  // --- an instance's trace -------------------------------------------------------

  function tracePage(id) {
    const tree = region();
    page('Trace of ' + id, 'Instance → release → image → signatures → provenance → SBOM → baseline → drift: each link and its check.', tree);
    live(tree, () => api('/instances/' + encodeURIComponent(id) + '/trace'), (doc) => {
      const root = doc.root || doc;
      const bad = [];
      let svc = null;
      const walk = (n) => {
        if (!n.ok) bad.push(n);
        // The release link is named SERVICE@NUMBER.
        if (n.kind === 'release' && !svc && typeof n.name === 'string' && n.name.includes('@')) {
          svc = n.name.slice(0, n.name.lastIndexOf('@'));
        }
        (n.children || []).forEach(walk);
      };
      walk(root);
      const banner = bad.length
        ? h('div', { class: 'banner bad', role: 'status' }, bad.length + (bad.length === 1 ? ' link does' : ' links do') + ' not hold: ' + bad.map((n) => n.kind + ' ' + n.name).join(', '))
        : h('div', { class: 'banner ok', role: 'status' }, 'Every link holds.');
      return h('div', {}, banner,
        svc ? h('p', {}, link(serviceHref(svc), '← ' + svc)) : null,
        h('ul', { class: 'tree root' }, traceNode(root)));
    }, 0);
  }

  function traceNode(n) {
    const card = h('div', { class: 'link-card' + (n.ok ? '' : ' bad'), 'data-kind': n.kind },
      h('div', { class: 'link-title' },
        badge(n.ok ? '✓ holds' : '✗ does not hold', n.ok ? 'ok' : 'bad'),
        h('span', { class: 'link-kind' }, n.kind === 'sbom' ? 'SBOM' : n.kind),
        h('span', { class: 'link-name' }, n.name)),
      (n.facts || []).length ? facts(n.facts.map((f) => Array.isArray(f) ? [f[0], f[1]] : [String(f), ''])) : null,
      n.problem ? h('div', { class: 'problem' }, n.problem) : null);
    return h('li', {}, card,
      (n.children || []).length ? h('ul', { class: 'tree' }, n.children.map(traceNode)) : null);
  }

  // --- the ledger ------------------------------------------------------------------

  const LEDGER_FILTERS = ['actor', 'action', 'subject'];

  function ledgerPage(params) {
    const body = region();
    const filters = {};
    for (const k of LEDGER_FILTERS) if (params.get(k)) filters[k] = params.get(k);
    const inputs = LEDGER_FILTERS.map((k) => h('input', {
      type: 'text', id: 'ledger-' + k, name: k, value: filters[k] || '',
      placeholder: { actor: 'token:ci', action: 'release.*', subject: 'web' }[k],
    }));
    const form = h('form', {
      class: 'panel inline', id: 'ledger-filter',
      onsubmit: (ev) => {
        ev.preventDefault();
        const f = {};
        inputs.forEach((input, i) => {
          if (input.value.trim()) f[LEDGER_FILTERS[i]] = input.value.trim();
        });
        location.hash = ledgerHref(null, f);
      },
    },
    LEDGER_FILTERS.map((k, i) => h('div', { class: 'field' }, h('label', { for: 'ledger-' + k }, k[0].toUpperCase() + k.slice(1)), inputs[i])),
    h('button', { type: 'submit' }, 'Filter'),
    Object.keys(filters).length ? link('#/ledger', 'all entries') : null);
    page('Ledger', 'Every change drover made, hash-chained and signed by the host key.', form, body);
    // Without `from` the API answers the newest page.
    const from = Number(params.get('from')) || null;
    let q = '/ledger?limit=' + LEDGER_PAGE + (from ? '&from=' + from : '');
    for (const [k, v] of Object.entries(filters)) q += '&' + k + '=' + encodeURIComponent(v);
    live(body, () => api(q), (doc) => ledgerView(doc, filters), from ? 0 : REFRESH_MS);
  }

  function ledgerHref(from, filters) {
    const p = new URLSearchParams();
    if (from) p.set('from', from);
    for (const [k, v] of Object.entries(filters)) p.set(k, v);
    const q = p.toString();
    return '#/ledger' + (q ? '?' + q : '');
  }

  function ledgerView(doc, filters) {
    const v = doc.verification || {};
    const banner = v.valid
      ? h('div', { class: 'banner ok', role: 'status', id: 'ledger-verification' },
        'Ledger verified: ' + v.entries + ' entries, the hash chain and every signature hold.')
      : h('div', { class: 'banner bad', role: 'status', id: 'ledger-verification' },
        'Ledger NOT verified' + (v.entries !== undefined ? ' (' + v.entries + ' entries)' : '') + ': ' +
        problemText(v.problem));
    const items = itemsOf(doc);
    const newest = doc.next === null || doc.next === undefined;
    const filtered = Object.keys(filters).length > 0;
    const pager = h('div', { class: 'pager' },
      doc.previous ? link(ledgerHref(1, filters), '« first') : null,
      doc.previous ? link(ledgerHref(doc.previous, filters), '‹ older') : null,
      h('span', { class: 'muted' }, items.length
        ? (filtered ? items.length + (items.length === 1 ? ' matching entry: ' : ' matching entries: ') : 'entries ') +
          (items.length === 1 ? items[0].seq : items[0].seq + '–' + items[items.length - 1].seq) +
          (doc.head ? ' of ' + doc.head : '')
        : 'no entries here'),
      newest ? null : link(ledgerHref(doc.next, filters), 'newer ›'),
      newest ? null : link(ledgerHref(null, filters), 'newest »'));
    const rows = items.slice().reverse().map((e) => [
      h('td', { class: 'num' }, String(e.seq)),
      when(e.time),
      e.actor,
      h('code', {}, e.action),
      h('span', {}, (e.subjects || []).slice(0, 3).map((s) => h('div', {}, s.startsWith('sha256:') ? digestCode(s) : s)),
        (e.subjects || []).length > 3 ? h('div', { class: 'muted' }, '+' + (e.subjects.length - 3) + ' more') : null),
      e.details && Object.keys(e.details).length
        ? h('details', {}, h('summary', {}, 'details'), h('pre', {}, JSON.stringify(e.details, null, 2)))
        : '',
    ]);
    return h('div', {}, banner, pager,
      table(['Seq', 'Time', 'Actor', 'Action', 'Subjects', 'Details'], rows, 'No entries.'), pager.cloneNode(true));
  }

  function problemText(p) {
    if (p === null || p === undefined) return 'no reason given';
    if (typeof p === 'string') return p;
    return p.message || p.reason || JSON.stringify(p);
  }

  // --- revocations and policy ------------------------------------------------------

  function revocationsPage() {
    const list = region();
    const policy = region();
    page('Revocations', 'Images refused from now on by run, apply, rollback and build; serve moves services off them.',
      list, h('h2', {}, 'Deploy policy'), policy);
    live(list, () => api('/revocations'), (doc) => table(['Image', 'Reason', 'When', 'By'],
      itemsOf(doc).map((r) => [h('code', {}, r.digest), r.reason || '', when(r.time), r.actor || '']),
      'No image is revoked.'));
    live(policy, () => api('/policy'), (p) => h('section', { class: 'panel' }, facts([
      ['Trusted keys', (p.trusted_keys || []).join(', ') || 'none'],
      ['Signature required', String(!!p.require_signature)],
      ['Provenance required', String(!!p.require_provenance)],
      ['Trusted builders', (p.trusted_builders || []).join(', ') || 'any'],
      ['Allowed registries', (p.allowed_registries || []).join(', ') || 'any'],
      ['Allowed base images', (p.allowed_base_images || []).join(', ') || 'any'],
      ['Replace revoked', String(!!p.replace_revoked)],
      ['From', p.source ? p.source.kind + (p.source.path ? ' (' + p.source.path + ')' : '') : null],
    ])));
  }

  // --- signing in and out ------------------------------------------------------------

  function loginPage(message) {
    document.title = 'Sign in · drover';
    document.getElementById('nav').hidden = true;
    document.getElementById('who').hidden = true;
    const input = h('input', { id: 'token', type: 'password', name: 'token', autocomplete: 'off', placeholder: 'drv_…', required: true });
    const note = h('div', { id: 'login-message' }, message ? h('div', { class: 'banner bad', role: 'alert' }, message) : null);
    const form = h('form', {
      class: 'panel login', id: 'login',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const t = input.value.trim();
        if (!t) return;
        try {
          const who = await api('/whoami', { token: t });
          sessionStorage.setItem(TOKEN_KEY, t);
          setWho(who);
          route();
        } catch (e) {
          fill(note, e.status === 401
            ? h('div', { class: 'banner bad', role: 'alert' }, 'That token was refused (unknown, expired or revoked).')
            : errorBanner(e));
        }
      },
    },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'Paste an API token. `drover token create NAME --role read|deploy|admin` makes one; it is kept in this tab only (session storage) and sent as a bearer token.'),
    h('label', { for: 'token' }, 'Token'), input, note,
    h('p', {}, h('button', { type: 'submit' }, 'Sign in')));
    fill(view(), form);
    input.focus();
  }

  function setWho(who) {
    whoami = who;
    document.getElementById('who-name').textContent = who.name + ' (' + who.role + ')';
    document.getElementById('who').hidden = false;
    document.getElementById('nav').hidden = false;
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    whoami = null;
    stopTimers();
    generation++;
    loginPage(message);
  }

  // --- routing -----------------------------------------------------------------------

  function stopTimers() {
    for (const t of timers) clearTimeout(t);
    timers = [];
    for (const a of streams) a.abort();
    streams = [];
  }

  async function route() {
    stopTimers();
    const gen = ++generation;
    if (!token()) return loginPage(null);
    if (!whoami) {
      try {
        setWho(await api('/whoami'));
      } catch (e) {
        if (gen === generation && e.status !== 401) fill(view(), errorBanner(e));
        return;
      }
      if (gen !== generation) return;
    }
    const hash = location.hash.replace(/^#/, '') || '/services';
    const [path, query] = hash.split('?');
    const parts = path.split('/').filter(Boolean).map((p) => {
      try { return decodeURIComponent(p); } catch (_) { return p; }
    });
    const params = new URLSearchParams(query || '');
    for (const a of document.querySelectorAll('nav a')) {
      a.classList.toggle('current', a.dataset.section === (parts[0] === 'instances' ? 'services' : parts[0] || 'services'));
    }
    if (parts.length === 0 || (parts[0] === 'services' && parts.length === 1)) return fleetPage();
    if (parts[0] === 'services' && parts.length === 2) return servicePage(parts[1]);
    if (parts[0] === 'instances' && parts.length === 3 && parts[2] === 'trace') return tracePage(parts[1]);
    if (parts[0] === 'ledger' && parts.length === 1) return ledgerPage(params);
    if (parts[0] === 'revocations' && parts.length === 1) return revocationsPage();
    page('Not found', null, h('p', {}, 'No page here. ', link('#/services', 'Go to the fleet.')));
  }

  document.addEventListener('DOMContentLoaded', () => {
    document.getElementById('sign-out').addEventListener('click', () => signOut(null));
    window.addEventListener('hashchange', route);
    route();
  });
})();
