import Crypto
import Foundation

/// The session page: one self-contained document (no external asset, so it works on a lab
/// network with no internet) that polls `status.json` every second and redraws. Text from
/// the network (client names, reasons) only ever goes in through `textContent`; the
/// Content-Security-Policy allows this page's own script and style (by hash) and fetches to
/// this server, nothing else.
enum StatusPage {
    static let html: [UInt8] = Array("""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>asr server</title>
        <style>\(style)</style>
        </head>
        <body>
        \(body)
        <script>\(script)</script>
        </body>
        </html>

        """.utf8)

    static let contentSecurityPolicy =
        "default-src 'none'; script-src '\(hash(script))'; style-src '\(hash(style))'; connect-src 'self'; img-src 'self' data:; "
        + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    private static func hash(_ text: String) -> String {
        "sha256-" + Data(SHA256.hash(data: Array(text.utf8))).base64EncodedString()
    }

    static let body = #"""
        <header>
          <h1><span id="image-name">asr server</span><span id="stream-state" class="pill">connecting</span></h1>
          <div id="summary"></div>
          <div id="connection" class="banner" hidden>No answer from the server; trying again every second.</div>
        </header>
        <main>
          <section class="cards">
            <div class="card"><h2>Image</h2><dl id="image"></dl></div>
            <div class="card"><h2>Stream</h2><dl id="stream"></dl></div>
          </section>
          <section class="card">
            <h2>Throughput <span id="rate-now" class="aside"></span></h2>
            <svg id="chart" viewBox="0 0 800 160" preserveAspectRatio="none" role="img" aria-label="bytes sent per second, recent minutes">
              <path class="area" d=""></path><path class="line" d=""></path><line class="limit" x1="0" x2="800" y1="0" y2="0"></line>
            </svg>
            <div class="axis"><span id="chart-from"></span><span id="chart-peak"></span><span>now</span></div>
          </section>
          <section class="card">
            <h2>Clients <span id="client-count" class="aside"></span></h2>
            <table id="clients">
              <thead><tr><th>Name</th><th>Address</th><th>Joined</th><th>Progress</th><th>Chunks</th><th>Repairs</th><th>Loss</th><th>Write rate</th><th>State</th><th>ETA</th></tr></thead>
              <tbody></tbody>
            </table>
            <p id="no-clients">No client has joined yet. On each machine: <code>asr restore --source asr://SERVER --target DISK --erase</code></p>
          </section>
        </main>
        """#

    static let style = #"""
        :root { --bg: #f4f5f8; --card: #fff; --ink: #1d2330; --muted: #687083; --line: #e2e5eb; --accent: #2f6fde; --ok: #1d8f4e;
          --warn: #c26a05; --bad: #cc3b3b; --verify: #7a4bc8;
          font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
        * { box-sizing: border-box; }
        body { margin: 0; background: var(--bg); color: var(--ink); font-size: 14px; }
        header { padding: 18px 24px 6px; }
        h1 { margin: 0; font-size: 20px; display: flex; gap: 12px; align-items: center; }
        main { padding: 8px 24px 24px; display: grid; gap: 16px; }
        .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 16px; }
        .card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
        h2 { margin: 0 0 10px; font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); }
        .aside { text-transform: none; letter-spacing: 0; font-weight: normal; margin-left: 8px; }
        dl { display: grid; grid-template-columns: max-content 1fr; gap: 5px 18px; margin: 0; }
        dt { color: var(--muted); }
        dd { margin: 0; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
        #summary { color: var(--muted); margin-top: 4px; }
        .pill { font-size: 12px; font-weight: 600; padding: 2px 10px; border-radius: 999px; background: var(--line);
          text-transform: uppercase; letter-spacing: .04em; }
        .pill.sending { background: #dcf5e6; color: var(--ok); }
        .pill.idle, .pill.waiting { background: #e8edf7; color: var(--accent); }
        .pill.suspended { background: #fdf0dc; color: var(--warn); }
        .pill.stopped, .pill.unreachable { background: #fbe3e3; color: var(--bad); }
        .banner { margin-top: 8px; padding: 6px 10px; background: #fbe3e3; color: var(--bad); border-radius: 6px; }
        #chart { width: 100%; height: 160px; display: block; background: linear-gradient(#fafbfd, #fff); border-radius: 4px; }
        .area { fill: rgba(47, 111, 222, .16); }
        .line { fill: none; stroke: var(--accent); stroke-width: 2; vector-effect: non-scaling-stroke; }
        .limit { stroke: var(--warn); stroke-width: 1; stroke-dasharray: 6 4; vector-effect: non-scaling-stroke; }
        .axis { display: flex; justify-content: space-between; color: var(--muted); font-size: 12px; margin-top: 4px; }
        table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
        th, td { text-align: left; padding: 7px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; vertical-align: top; }
        th { font-size: 12px; color: var(--muted); font-weight: 600; }
        td.progress { width: 26%; min-width: 170px; }
        .bar { position: relative; height: 18px; background: #edf0f5; border-radius: 4px; overflow: hidden; }
        .fill { height: 100%; width: 0; background: var(--accent); transition: width .9s linear; }
        .fill.verify { background: var(--verify); }
        tr.state-done .fill { background: var(--ok); }
        tr.state-failed .fill, tr.state-dropped .fill, tr.state-left .fill { background: #c5cad3; }
        .label { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center; font-size: 12px; }
        .badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; font-weight: 600; background: var(--line); }
        tr.state-joining .badge { background: #fdf0dc; color: var(--warn); }
        tr.state-restoring .badge { background: #e3ecfb; color: var(--accent); }
        tr.state-verifying .badge { background: #eee5fa; color: var(--verify); }
        tr.state-done .badge { background: #dcf5e6; color: var(--ok); }
        tr.state-failed .badge, tr.state-dropped .badge { background: #fbe3e3; color: var(--bad); }
        .reason { display: block; max-width: 300px; margin-top: 3px; font-size: 12px; color: var(--bad); white-space: normal; }
        .muted { color: var(--muted); }
        code { background: #edf0f5; padding: 1px 5px; border-radius: 4px; }
        """#

    static let script = #"""
        "use strict";
        const $ = (id) => document.getElementById(id);
        const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
        const ENDED = new Set(["done", "failed", "dropped", "left"]);
        const COLUMNS = ["name", "address", "joined", "progress", "chunks", "repairs", "loss", "write", "state", "eta"];
        const rows = new Map();

        function bytes(n) {
          if (n == null) return "–";
          let i = 0;
          while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
          return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + UNITS[i];
        }
        const rate = (n) => n == null ? "–" : bytes(Math.round(n)) + "/s";
        const percent = (x, digits) => x == null ? "–" : (x * 100).toFixed(digits) + "%";
        const clock = (t) => t == null ? "–" : new Date(t * 1000).toLocaleTimeString();
        function duration(s) {
          if (s == null) return "–";
          s = Math.round(s);
          if (s < 60) return s + " s";
          const m = Math.floor(s / 60);
          return m < 60 ? m + " min " + (s % 60) + " s" : Math.floor(m / 60) + " h " + (m % 60) + " min";
        }
        function text(el, value) { if (el.textContent !== value) el.textContent = value; }

        function list(dl, entries) {
          dl.replaceChildren(...entries.flatMap(([label, value, title]) => {
            const dt = document.createElement("dt"), dd = document.createElement("dd");
            dt.textContent = label;
            dd.textContent = value;
            if (title) dd.title = title;
            return [dt, dd];
          }));
        }

        function row(c) {
          let tr = rows.get(c.id);
          if (tr) return tr;
          tr = document.createElement("tr");
          for (const k of COLUMNS) { const td = document.createElement("td"); td.className = k; tr.append(td); }
          const bar = document.createElement("div"), fill = document.createElement("div"), label = document.createElement("span");
          bar.className = "bar"; fill.className = "fill"; label.className = "label";
          bar.append(fill, label);
          tr.querySelector(".progress").append(bar);
          const badge = document.createElement("span"), reason = document.createElement("span");
          badge.className = "badge"; reason.className = "reason";
          tr.querySelector(".state").append(badge, reason);
          $("clients").tBodies[0].append(tr);
          rows.set(c.id, tr);
          return tr;
        }

        function showClient(c) {
          const tr = row(c), cell = (k) => tr.querySelector("td." + k);
          const verifying = c.state === "verifying";
          tr.className = "state-" + c.state;
          Object.assign(tr.dataset, { id: c.id, state: c.state, progress: c.progress, repairs: c.repairsAsked,
            loss: c.loss ?? "", verify: c.verifyProgress ?? "" });
          text(cell("name"), c.name);
          text(cell("address"), c.address);
          text(cell("joined"), clock(c.joinedAt));
          const share = verifying ? (c.verifyProgress ?? 0) : c.progress;
          const fill = tr.querySelector(".fill");
          fill.style.width = (Math.min(1, share) * 100).toFixed(1) + "%";
          fill.classList.toggle("verify", verifying);
          text(tr.querySelector(".label"), verifying ? "verifying " + percent(c.verifyProgress ?? 0, 0) : percent(c.progress, 1));
          text(cell("chunks"), c.chunks + " / " + c.chunkCount);
          text(cell("repairs"), String(c.repairsAsked));
          text(cell("loss"), percent(c.loss, 1));
          text(cell("write"), c.writeRate ? rate(c.writeRate) : "–");
          text(tr.querySelector(".badge"), c.state);
          text(tr.querySelector(".reason"), c.reason ?? "");
          const eta = cell("eta");
          eta.classList.toggle("muted", ENDED.has(c.state));
          text(eta, ENDED.has(c.state) ? "ended " + clock(c.endedAt) : duration(c.eta));
        }

        function chart(samples, limit) {
          // The last minute to five: a young session fills the width.
          const W = 800, H = 160;
          const now = samples.length ? samples[samples.length - 1].t : Date.now() / 1000;
          const SPAN = Math.min(300, Math.max(60, Math.ceil((now - (samples.length ? samples[0].t : now)) / 60) * 60));
          const shown = samples.filter((s) => now - s.t <= SPAN);
          const peak = Math.max(limit * 1.15, 1, ...shown.map((s) => s.bytesPerSecond));
          const x = (t) => (W - (now - t) / SPAN * W).toFixed(1), y = (v) => (H - v / peak * (H - 6)).toFixed(1);
          const points = shown.map((s) => x(s.t) + "," + y(s.bytesPerSecond));
          const svg = $("chart");
          svg.querySelector(".line").setAttribute("d", points.length ? "M" + points.join(" L") : "");
          svg.querySelector(".area").setAttribute("d", points.length ? "M" + x(shown[0].t) + "," + H + " L" + points.join(" L") + " L" + x(now) + "," + H + " Z" : "");
          const limitLine = svg.querySelector(".limit");
          limitLine.setAttribute("y1", y(limit));
          limitLine.setAttribute("y2", y(limit));
          text($("chart-peak"), "dashed: the rate limit, " + rate(limit));
          text($("chart-from"), SPAN / 60 + " min ago");
        }

        function render(s) {
          document.title = s.image.name + " – asr server";
          text($("image-name"), s.image.name);
          const pill = $("stream-state");
          pill.className = "pill " + s.stream.state;
          text(pill, s.stream.state);
          const active = s.clients.filter((c) => !ENDED.has(c.state)).length;
          const parts = Object.entries(s.counts).filter(([, n]) => n > 0).map(([k, n]) => n + " " + k);
          text($("summary"), s.clients.length + (s.clients.length === 1 ? " client" : " clients") + (parts.length ? ": " + parts.join(" · ") : "")
            + " · up " + duration(s.server.now - s.server.startedAt));
          list($("image"), [
            ["Format", s.image.format],
            ["Disk", bytes(s.image.diskBytes)],
            ["Sent per copy", bytes(s.image.storedBytes) + (s.image.freeBytes ? " (" + bytes(s.image.freeBytes) + " free space never sent)" : "")],
            ["Chunks", String(s.image.chunks)],
            ["Identity", s.image.identity.slice(0, 16) + "…", s.image.identity],
            ["Signed", s.image.signed ? "yes, key " + s.image.signer.slice(0, 16) + "…" : "no", s.image.signer ?? ""],
          ]);
          list($("stream"), [
            ["Group", s.stream.group + ":" + s.stream.port + " (TTL " + s.stream.ttl + ")"],
            ["Rate", rate(s.stream.effectiveRate) + (s.stream.effectiveRate < s.stream.dataRate ? " (Client Data Rate; Data Rate " + rate(s.stream.dataRate) + ")" : "")],
            ["Now", rate(s.stream.rate)],
            ["Sent", bytes(s.stream.bytesSent) + " in " + s.stream.packetsSent.toLocaleString() + " packets"],
            ["Passes", String(s.stream.passes)],
            ["Repairs", s.stream.repairsSent + " chunks, " + s.stream.fragmentRepairsSent + " fragments"],
          ]);
          text($("rate-now"), rate(s.stream.rate));
          chart(s.throughput, s.stream.effectiveRate);
          text($("client-count"), active + " active");
          const seen = new Set();
          for (const c of s.clients) { seen.add(c.id); showClient(c); }
          for (const [id, tr] of rows) if (!seen.has(id)) { tr.remove(); rows.delete(id); }
          $("no-clients").hidden = s.clients.length > 0;
        }

        async function poll() {
          try {
            const response = await fetch("status.json", { cache: "no-store" });
            if (!response.ok) throw new Error("HTTP " + response.status);
            render(await response.json());
            $("connection").hidden = true;
          } catch (error) {
            $("connection").hidden = false;
            const pill = $("stream-state");
            pill.className = "pill unreachable";
            text(pill, "unreachable");
          } finally {
            setTimeout(poll, 1000);
          }
        }
        poll();
        """#
}
