#!/usr/bin/env python3
"""Collects the benchmark results into benches/results/summary.json and renders
the figures of docs/BENCHMARKS.md (the tables between the `results` markers
and the SVG charts docs/bench-*.svg). Standard library only.

    python3 scripts/bench_report.py            # collect (if results exist) + render
    python3 scripts/bench_report.py collect    # target/ -> benches/results/summary.json
    python3 scripts/bench_report.py render     # summary.json -> docs/BENCHMARKS.md tables, docs/*.svg

Sources: criterion's target/criterion/**/new/{benchmark,sample}.json (from
`cargo bench --bench machine` and `cargo bench --bench engine`),
target/bench-results/scale.jsonl (examples/bench_scale.rs), and
target/bench-results/postgres.jsonl (scripts/bench-postgres.sh); for each
scale size and PostgreSQL configuration the last line wins.
"""

import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = ROOT / "benches" / "results" / "summary.json"
DOC = ROOT / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


# ---------------------------------------------------------------- collect

def collect():
    summary = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}
    crit = ROOT / "target" / "criterion"
    benches = summary.get("criterion", {})
    for bench_file in crit.glob("**/new/benchmark.json"):
        meta = json.loads(bench_file.read_text())
        sample = json.loads((bench_file.parent / "sample.json").read_text())
        per_iter = sorted(t / i for t, i in zip(sample["times"], sample["iters"]))
        elements = (meta.get("throughput") or {}).get("Elements", 1)
        ns = [t / elements for t in per_iter]  # ns per element
        benches[meta["full_id"]] = {
            "ns_min": ns[0],
            "ns_median": statistics.median(ns),
            "ns_max": ns[-1],
            "samples": len(ns),
            "mtime": os.path.getmtime(bench_file),
        }
    summary["criterion"] = dict(sorted(benches.items()))

    def last_lines(name, key):
        path = ROOT / "target" / "bench-results" / name
        found = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    found[key(row)] = row
        return found

    scale = last_lines("scale.jsonl", lambda r: f'{r["entities"]}/{"drained" if r.get("drain", True) else "kept"}')
    if scale:
        summary["scale"] = {**summary.get("scale", {}), **scale}
    pg = last_lines("postgres.jsonl", lambda r: f'{r["system"]}/{r["mode"]}/{r["clients"]}')
    if pg:
        summary["postgres"] = {**summary.get("postgres", {}), **pg}
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SUMMARY.relative_to(ROOT)}: {len(summary['criterion'])} criterion benchmarks, "
          f"{len(summary.get('scale', {}))} scale runs, {len(summary.get('postgres', {}))} PostgreSQL configurations")


# ---------------------------------------------------------------- formatting

def fmt_time(ns):
    if ns is None:
        return "-"
    if ns < 1e3:
        return f"{ns:.2f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns / 1e6:.2f} ms"


def fmt_rate(per_sec):
    if per_sec is None:
        return "-"
    if per_sec >= 1e6:
        return f"{per_sec / 1e6:.1f} M/s"
    if per_sec >= 1e4:
        return f"{per_sec / 1e3:.1f} k/s"
    return f"{per_sec:,.0f}/s"


def verdict(ratio, target, higher_is_better=True):
    """'met (by x%)' / 'not met (short by x%)' for a ratio against its target."""
    if ratio is None:
        return "not measured"
    if higher_is_better:
        if ratio >= target:
            return f"**met** ({(ratio / target - 1) * 100:.0f}% above)"
        return f"**not met** ({(1 - ratio / target) * 100:.0f}% short)"
    if ratio <= target:
        return f"**met** ({(1 - ratio / target) * 100:.0f}% below)"
    return f"**not met** ({(ratio / target - 1) * 100:.0f}% over)"


class Report:
    def __init__(self, summary):
        self.c = summary.get("criterion", {})
        self.scale = summary.get("scale", {})
        self.pg = summary.get("postgres", {})
        self.lines = []
        self.targets = []

    def out(self, text=""):
        self.lines.append(text)

    def ns(self, bench, which="ns_median"):
        row = self.c.get(bench)
        return row[which] if row else None

    def rate(self, bench, which="ns_median"):
        ns = self.ns(bench, which)
        return 1e9 / ns if ns else None

    def row(self, label, bench, baseline=None, per="op"):
        mn, md = self.ns(bench, "ns_min"), self.ns(bench)
        cells = [label, fmt_time(mn), fmt_time(md), fmt_rate(1e9 / md if md else None)]
        if baseline is not None:
            b = self.ns(baseline)
            cells.append(f"{b / md:.2f}x" if (b and md) else "-")
        self.out("| " + " | ".join(cells) + " |")

    def target(self, issue, what, ratio, target, higher=True, note=""):
        ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
        sign = ">=" if higher else "<="
        self.targets.append(f"| {issue} | {what} | {ratio_text} | {sign} {target}x | "
                            f"{verdict(ratio, target, higher)} | {note} |")

    # ------------------------------------------------------------ sections

    def fsm(self):
        self.out("### `next(event)` vs rust-fsm (order machine, `cargo bench --bench machine`)")
        self.out()
        self.out("Per lookup (one `(state, event)` -> `Option<state>`), 4096 per iteration.")
        self.out()
        self.out("| benchmark | min | median | lookups/s |")
        self.out("|---|---|---|---|")
        for name in ["table/idemflow_next", "table/rust_fsm_transition", "table/reference_flat_match",
                     "walk/idemflow_next", "walk/rust_fsm_transition", "walk/rust_fsm_consume",
                     "walk/reference_flat_match"]:
            self.row(f"`{name}`", f"fsm/{name}")
        self.out()
        for kind, theirs in [("table", "rust_fsm_transition"), ("walk", "rust_fsm_transition")]:
            ours, other = self.ns(f"fsm/{kind}/idemflow_next"), self.ns(f"fsm/{kind}/{theirs}")
            ratio = ours / other if ours and other else None
            self.target("2", f"`next` time / rust-fsm `{theirs}` time ({kind})", ratio, 1.1, higher=False)

    def transition(self):
        self.out("### Applied transition vs raw sled (`cargo bench --bench engine -- transition/`)")
        self.out()
        self.out("One thread; `advance` with a fresh idempotency key and a 32-byte JSON payload; "
                 "the raw-sled baseline does the same reads and writes in one transaction with the "
                 "engine's captured bytes. Ratio = engine throughput / raw-sled throughput (medians).")
        self.out()
        self.out("| benchmark | min | median | transitions/s | vs raw sled |")
        self.out("|---|---|---|---|---|")
        for mode in ["buffered", "immediate"]:
            base = f"transition/raw_sled/{mode}"
            self.row(f"raw sled, {mode}", base, base)
            self.row(f"engine (batching), {mode}", f"transition/engine/{mode}", base)
            self.row(f"engine (no batching), {mode}", f"transition/engine_unbatched/{mode}", base)
        self.out()
        for name, label in [("engine", "batching on (default)"), ("engine_unbatched", "batching off")]:
            e, r = self.rate(f"transition/{name}/buffered"), self.rate("transition/raw_sled/buffered")
            ratio = e / r if e and r else None
            self.target("3, 6", f"applied transition (Buffered, {label}) / raw sled", ratio, 0.8)

    def read_path(self):
        self.out("### No-op, replay (`read_path/*`)")
        self.out()
        self.out("Speed-up = applied-transition time (same durability, batching on) / this time.")
        self.out()
        self.out("| benchmark | min | median | calls/s | speed-up vs applied |")
        self.out("|---|---|---|---|---|")
        for mode in ["buffered", "immediate"]:
            applied = f"transition/engine/{mode}"
            for name, label in [("noop_no_key", "no-op, no key (writes nothing)"),
                                ("replay", "key replay (writes nothing)"),
                                ("noop_new_key", "no-op with a new key (writes the key record)")]:
                self.row(f"{label}, {mode}", f"read_path/{name}/{mode}", applied)
        self.out()
        for mode in ["buffered", "immediate"]:
            applied = self.ns(f"transition/engine/{mode}")
            for name, label in [("noop_no_key", "no-op without a key"), ("replay", "key replay")]:
                t = self.ns(f"read_path/{name}/{mode}")
                self.target("3", f"{label} speed-up vs applied ({mode})",
                            applied / t if applied and t else None, 5)

    def ops(self):
        self.out("### Other operations vs plain sled (`ops/*`, Buffered)")
        self.out()
        self.out("| operation | min | median | calls/s | raw sled / engine time |")
        self.out("|---|---|---|---|---|")
        for name, label in [("create", "create"), ("get", "get"), ("history_50", "history (50 entries)"),
                            ("in_state_1000", "in_state (1000 ids)"),
                            ("outbox_pending_ack_100", "outbox pending(100) + ack")]:
            self.row(f"raw sled: {label}", f"ops/{name}/raw_sled", f"ops/{name}/raw_sled")
            self.row(f"engine: {label}", f"ops/{name}/engine", f"ops/{name}/raw_sled")

    def thread_series(self, mode):
        series = [("disjoint", "engine, disjoint"), ("disjoint_unbatched", "engine unbatched, disjoint"),
                  ("shared", "engine, one shared entity"), ("shared_unbatched", "engine unbatched, shared")]
        if mode == "buffered":
            series.append(("raw_sled_disjoint", "raw sled, disjoint"))
        return series

    def threads(self):
        self.out("### Threads (`threads_buffered/*`, `threads_immediate/*`)")
        self.out()
        self.out("Throughput (applied transitions/s, median of samples; min sample in brackets). "
                 "Disjoint: each thread has 100 entities of its own; shared: every call on one entity.")
        self.out()
        for mode in ["buffered", "immediate"]:
            self.out(f"**{mode.capitalize()}**")
            self.out()
            self.out("| series | 1 | 2 | 4 | 8 | 8 / 1 |")
            self.out("|---|---|---|---|---|---|")
            for key, label in self.thread_series(mode):
                cells = []
                for t in [1, 2, 4, 8]:
                    b = f"threads_{mode}/{key}/{t}"
                    md, mx = self.rate(b), self.rate(b, "ns_max")
                    cells.append(f"{fmt_rate(md)} ({fmt_rate(mx)})" if md else "-")
                one, eight = self.rate(f"threads_{mode}/{key}/1"), self.rate(f"threads_{mode}/{key}/8")
                cells.append(f"{eight / one:.2f}x" if one and eight else "-")
                self.out(f"| {label} | " + " | ".join(cells) + " |")
            self.out()
        for mode, key, target, issue in [("immediate", "disjoint", 5, "6"), ("immediate", "disjoint", 2, "3"),
                                         ("buffered", "disjoint", 2, "6")]:
            for suffix, label in [("", "batching"), ("_unbatched", "no batching")]:
                one = self.rate(f"threads_{mode}/{key}{suffix}/1")
                eight = self.rate(f"threads_{mode}/{key}{suffix}/8")
                self.target(issue, f"{mode.capitalize()} 8 threads / 1 thread ({label})",
                            eight / one if one and eight else None, target)

    def scale_rows(self, outbox):
        rows = [(int(k.split("/")[0]), r) for k, r in self.scale.items() if k.endswith("/" + outbox)]
        return sorted(rows, key=lambda row: row[0])

    def scale_section(self):
        self.out("### Scale (`IDEMFLOW_SCALE=N cargo run --release --example bench_scale`)")
        self.out()
        if not self.scale:
            self.out("(not run)")
            return
        self.out("N entities with 10 history entries each (bulk-loaded with Buffered), then applied "
                 "transitions (Buffered, 1 thread, random entities, fresh key + payload), 3 runs of 50,000. "
                 "tps: min / median of the runs; latencies: median of the runs. *Outbox kept*: the 10 "
                 "outbox events per entity stay in the database (`IDEMFLOW_SCALE_DRAIN=0`); *drained*: a "
                 "consumer acknowledged them during the load (the default; see the sled deadlock below).")
        self.out()
        self.out("| entities | outbox | transitions/s min | median | p50 | p99 | p99/p50 | disk bytes/entity | open | peak RSS | bulk load |")
        self.out("|---|---|---|---|---|---|---|---|---|---|---|")
        for outbox in ["kept", "drained"]:
            for n, r in self.scale_rows(outbox):
                p50 = statistics.median(r["p50_us"])
                p99 = statistics.median(r["p99_us"])
                self.out(f"| {n:,} | {outbox} | {r['tps_min']:,.0f} | {r['tps_median']:,.0f} | {p50:.0f} µs | "
                         f"{p99:.0f} µs | {p99 / p50:.1f} | {r['bytes_per_entity']:,} | {r['open_ms']:,.0f} ms | "
                         f"{r['peak_rss_bytes'] / 2**20:,.0f} MiB | {r['load_writes_per_sec']:,.0f} writes/s |")
        kept = dict(self.scale_rows("kept"))
        small, big = kept.get(10_000), kept.get(1_000_000)
        self.target("6", "1M entities / 10k entities transition throughput (outbox kept)",
                    big["tps_median"] / small["tps_median"] if small and big else None, 0.7)
        for outbox in ["kept", "drained"]:
            for n, r in self.scale_rows(outbox):
                ratio = statistics.median(r["p99_us"]) / statistics.median(r["p50_us"])
                self.target("6", f"p99 / p50 at {n:,} entities (outbox {outbox})", ratio, 3, higher=False)

    def postgres(self):
        self.out("### idemflow vs PostgreSQL (`scripts/bench-postgres.sh`)")
        self.out()
        if not self.pg:
            self.out("(not run)")
            return
        some = next(iter(self.pg.values()))
        self.out(f"PostgreSQL {some.get('postgres_version', '?')}, {some.get('secs', '?')} s per run, "
                 f"{len(some['tps'])} runs per configuration (interleaved). Each client has 100 entities.")
        self.out()
        self.out("| mode | clients | system | tps min | tps median | p50 | p99 | idemflow / postgres |")
        self.out("|---|---|---|---|---|---|---|---|")
        for mode in ["durable", "relaxed"]:
            for clients in [1, 8]:
                pg = self.pg.get(f"postgres/{mode}/{clients}")
                for system in ["idemflow", "idemflow_unbatched", "postgres"]:
                    r = self.pg.get(f"{system}/{mode}/{clients}")
                    if not r:
                        continue
                    p50 = statistics.median(map(float, r["p50_us"].split(",")))
                    p99 = statistics.median(map(float, r["p99_us"].split(",")))
                    ratio = f"{r['tps_median'] / pg['tps_median']:.2f}x" if pg and system != "postgres" else ""
                    self.out(f"| {mode} | {clients} | {system} | {r['tps_min']:,.0f} | {r['tps_median']:,.0f} | "
                             f"{p50:,.0f} µs | {p99:,.0f} µs | {ratio} |")
        for mode, clients, target in [("durable", 1, 3), ("durable", 8, 5), ("relaxed", 1, 10), ("relaxed", 8, 5)]:
            pg = self.pg.get(f"postgres/{mode}/{clients}")
            for system, label in [("idemflow", "batching"), ("idemflow_unbatched", "no batching")]:
                r = self.pg.get(f"{system}/{mode}/{clients}")
                ratio = r["tps_median"] / pg["tps_median"] if r and pg else None
                self.target("6", f"vs PostgreSQL, {mode}, {clients} client(s) ({label})", ratio, target)

    def render(self):
        self.fsm()
        self.out()
        self.transition()
        self.out()
        self.read_path()
        self.out()
        self.ops()
        self.out()
        self.threads()
        self.scale_section()
        self.out()
        self.postgres()
        self.out()
        self.out("### Targets")
        self.out()
        self.out("| issue | target | measured | target | verdict | note |")
        self.out("|---|---|---|---|---|---|")
        self.lines.extend(self.targets)
        return "\n".join(self.lines)


# ---------------------------------------------------------------- charts (plain SVG)

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def nice_max(value):
    if value <= 0:
        return 1
    exp = 10 ** int(f"{value:e}".split("e")[1])
    for step in [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]:
        if step * exp >= value:
            return step * exp
    return 10 * exp


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_frame(title, ylabel, width, height):
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{esc(title)}</text>',
             f'<text transform="translate(16,{height / 2}) rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>']
    return parts


def y_axis(parts, left, top, plot_w, plot_h, ymax, fmt):
    for k in range(6):
        v = ymax * k / 5
        y = top + plot_h - plot_h * k / 5
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(v)}</text>')


def legend(parts, names, x, y):
    for i, name in enumerate(names):
        yy = y + i * 18
        parts.append(f'<rect x="{x}" y="{yy - 9}" width="12" height="12" fill="{COLORS[i % len(COLORS)]}"/>')
        parts.append(f'<text x="{x + 18}" y="{yy + 1}">{esc(name)}</text>')


def short(v):
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def line_chart(path, title, xlabel, xs, series, ylabel):
    width, height, left, top, right, bottom = 760, 430, 70, 40, 250, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, vs in series for v in vs if v is not None]
    if not values:
        return False
    ymax = nice_max(max(values) * 1.05)
    parts = svg_frame(title, ylabel, width, height)
    y_axis(parts, left, top, plot_w, plot_h, ymax, short)
    step = plot_w / max(1, len(xs) - 1)
    for i, x in enumerate(xs):
        px = left + i * step
        parts.append(f'<text x="{px:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{esc(str(x))}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">{esc(xlabel)}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>')
    for s, (name, vs) in enumerate(series):
        color = COLORS[s % len(COLORS)]
        points = [(left + i * step, top + plot_h - plot_h * v / ymax) for i, v in enumerate(vs) if v is not None]
        if len(points) > 1:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
        for x, y in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>')
    legend(parts, [name for name, _ in series], left + plot_w + 20, top + 10)
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")
    return True


def bar_chart(path, title, groups, names, values, ylabel):
    """values[g][n]: bar n of group g (None: missing)."""
    width, height, left, top, right, bottom = 760, 430, 70, 40, 200, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    flat = [v for row in values for v in row if v is not None]
    if not flat:
        return False
    ymax = nice_max(max(flat) * 1.05)
    parts = svg_frame(title, ylabel, width, height)
    y_axis(parts, left, top, plot_w, plot_h, ymax, short)
    group_w = plot_w / len(groups)
    bar_w = group_w * 0.8 / len(names)
    for g, group in enumerate(groups):
        gx = left + g * group_w + group_w * 0.1
        parts.append(f'<text x="{gx + group_w * 0.4:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{esc(group)}</text>')
        for n, v in enumerate(values[g]):
            if v is None:
                continue
            h = plot_h * v / ymax
            x = gx + n * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                         f'fill="{COLORS[n % len(COLORS)]}"/>')
            parts.append(f'<text x="{x + bar_w / 2 - 1:.1f}" y="{top + plot_h - h - 4:.1f}" text-anchor="middle" '
                         f'font-size="10">{short(round(v))}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>')
    legend(parts, names, left + plot_w + 20, top + 10)
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")
    return True


def charts(summary):
    report = Report(summary)
    docs = ROOT / "docs"
    written = []
    threads = [1, 2, 4, 8]
    for mode in ["buffered", "immediate"]:
        series = []
        for key, label in report.thread_series(mode):
            vs = [report.rate(f"threads_{mode}/{key}/{t}") for t in threads]
            if any(v is not None for v in vs):
                series.append((label, vs))
        path = docs / f"bench-threads-{mode}.svg"
        if series and line_chart(path, f"Applied transitions/s vs threads ({mode.capitalize()})",
                                 "threads (2 cores)", threads, series, "transitions/s"):
            written.append(path)
    kept = report.scale_rows("kept")
    if kept:
        xs = [short(n) for n, _ in kept]
        path = docs / "bench-scale.svg"
        if line_chart(path, "Applied transitions/s vs entities (Buffered, 1 thread)",
                      "entities (10 history entries each)", xs,
                      [("median run", [r["tps_median"] for _, r in kept]),
                       ("slowest run", [r["tps_min"] for _, r in kept])], "transitions/s"):
            written.append(path)
        path = docs / "bench-scale-latency.svg"
        if line_chart(path, "Transition latency vs entities (Buffered, 1 thread)", "entities", xs,
                      [("p50", [statistics.median(r["p50_us"]) for _, r in kept]),
                       ("p99", [statistics.median(r["p99_us"]) for _, r in kept])], "µs"):
            written.append(path)
    if report.pg:
        groups, values = [], []
        names = ["idemflow", "idemflow (no batching)", "PostgreSQL"]
        for mode in ["durable", "relaxed"]:
            for clients in [1, 8]:
                groups.append(f"{mode}, {clients} client{'s' if clients > 1 else ''}")
                values.append([report.pg.get(f"{s}/{mode}/{clients}", {}).get("tps_median")
                               for s in ["idemflow", "idemflow_unbatched", "postgres"]])
        path = docs / "bench-postgres.svg"
        if bar_chart(path, "Transitions/s: idemflow vs PostgreSQL (median)", groups, names, values, "transitions/s"):
            written.append(path)
    for path in written:
        print(f"wrote {path.relative_to(ROOT)}")


def render():
    summary = json.loads(SUMMARY.read_text())
    text = Report(summary).render()
    doc = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in doc or END not in doc:
        doc += f"\n{BEGIN}\n{END}\n"
    before, rest = doc.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    notice = ("<!-- generated by `python3 scripts/bench_report.py` from benches/results/summary.json; "
              "edit outside the markers -->")
    DOC.write_text(f"{before}{BEGIN}\n{notice}\n\n{text}\n\n{END}{after}")
    print(f"wrote the results section of {DOC.relative_to(ROOT)}")
    charts(summary)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("collect", "all"):
        if (ROOT / "target" / "criterion").exists() or (ROOT / "target" / "bench-results").exists():
            collect()
        elif what == "collect":
            sys.exit("no results under target/: run the benchmarks first")
    if what in ("render", "all"):
        render()


if __name__ == "__main__":
    main()
