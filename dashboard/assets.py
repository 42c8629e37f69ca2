"""The dashboard's stylesheet and script, served from /static so the CSP can forbid inline ones."""

from __future__ import annotations

CSS = """
:root { color-scheme: light; --fg: #1d2330; --muted: #6b7385; --line: #dde1ea;
  --bg: #f6f7fb; --card: #fff; --accent: #3657d6; --ok: #13795b; --bad: #c0362c;
  --busy: #a56300; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); }
header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.5rem;
  background: #1d2330; color: #fff; flex-wrap: wrap; }
header a { color: #cfd6ea; text-decoration: none; }
header a.active, header a:hover { color: #fff; }
header nav { display: flex; gap: 1rem; }
.brand { font-weight: 700; color: #fff; }
.lookup { margin-left: auto; display: flex; gap: .3rem; }
.logout { display: flex; gap: .5rem; align-items: center; }
.who { color: #cfd6ea; }
main { padding: 1rem 1.5rem 2rem; max-width: 1400px; }
main.narrow { max-width: 28rem; margin: 4rem auto; background: var(--card);
  border: 1px solid var(--line); border-radius: 8px; padding: 1.5rem 2rem; }
h1 { font-size: 1.35rem; margin: .4rem 0 1rem; }
h2 { font-size: 1.05rem; margin: 1.4rem 0 .5rem; }
footer { color: var(--muted); padding: 0 1.5rem 1.5rem; font-size: .85rem; }
input, button { font: inherit; padding: .3rem .6rem; border-radius: 5px;
  border: 1px solid var(--line); }
button { background: var(--accent); color: #fff; border-color: var(--accent); cursor: pointer; }
button.danger { background: var(--bad); border-color: var(--bad); }
form.login { display: flex; flex-direction: column; gap: .9rem; }
form.login label { display: flex; flex-direction: column; gap: .25rem; color: var(--muted); }
table { border-collapse: collapse; width: 100%; background: var(--card);
  border: 1px solid var(--line); border-radius: 8px; }
th, td { text-align: left; padding: .45rem .7rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
thead th { font-size: .78rem; text-transform: uppercase; letter-spacing: .03em;
  color: var(--muted); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.warn th, tr.warn td { background: #fff4f2; }
.mono, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: .85rem; }
.muted { color: var(--muted); }
.cards { display: flex; gap: 1rem; margin-bottom: 1rem; flex-wrap: wrap; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: .7rem 1rem; min-width: 10rem; display: flex; flex-direction: column;
  color: var(--muted); }
.card .value { font-size: 1.6rem; font-weight: 650; color: var(--fg); }
.card.warn .value { color: var(--bad); }
.chart .bar { fill: var(--accent); }
.chart .axis { stroke: var(--line); stroke-width: 1; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 99px; font-size: .78rem;
  font-weight: 650; background: #e6e9f2; }
.badge.ok { background: #dff3ea; color: var(--ok); }
.badge.bad { background: #fbe3e0; color: var(--bad); }
.badge.busy { background: #fcefd9; color: var(--busy); }
.error { color: var(--bad); }
.notice { background: #e8f0ff; border: 1px solid #bcd0ff; padding: .5rem .8rem;
  border-radius: 6px; }
dl.facts { display: grid; grid-template-columns: 8rem 1fr; gap: .3rem 1rem;
  background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 1rem; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
pre.payload { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: .8rem 1rem; white-space: pre-wrap; word-break: break-word; }
.toggle { font-size: .85rem; font-weight: 400; margin-left: .8rem; }
ul.current { margin: 0; padding-left: 1rem; }
.tabs { display: flex; gap: .5rem; margin-bottom: 1rem; }
.tabs a { padding: .3rem .8rem; border-radius: 6px; border: 1px solid var(--line);
  background: var(--card); color: var(--fg); text-decoration: none; }
.tabs a.active { border-color: var(--accent); color: var(--accent); }
.count { color: var(--muted); }
.actions { display: flex; gap: .6rem; margin-bottom: .8rem; }
td.reason { max-width: 40rem; }
.empty { color: var(--muted); }
"""

# Re-fetches the live part of the page; pauses while the page is hidden or the operator has
# ticked a box, so a selection is never wiped out under the cursor.
JS = """
(() => {
  document.addEventListener('submit', (event) => {
    const question = event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
  const live = document.getElementById('live');
  if (!live) return;
  const every = Math.max(Number(live.dataset.refresh) || 5, 0.5) * 1000;
  const stamp = document.getElementById('updated');
  async function refresh() {
    if (document.hidden || live.querySelector('input:checked')) return;
    try {
      const response = await fetch(window.location.href, {
        headers: { 'X-Partial': '1' }, credentials: 'same-origin', cache: 'no-store' });
      if (response.status === 401) { window.location.reload(); return; }
      if (!response.ok) return;
      live.innerHTML = await response.text();
      const now = new Date().toISOString().slice(0, 19).replace('T', ' ');
      if (stamp) stamp.textContent = `${now} UTC`;
    } catch (error) { /* offline for a moment: try again at the next tick */ }
  }
  window.setInterval(refresh, every);
})();
"""
