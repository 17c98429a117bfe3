"""The report of tools/bench_download_run.py: targets, Markdown, chart and docs/benchmarks.md.

:func:`report` checks the results of tools/bench_download_measure.py against the targets of
issue 4 (:func:`evaluate`), prints the Markdown section (:func:`markdown`) and, with
``--update-docs``, draws docs/bench_download.png (:func:`chart`, needs matplotlib) and replaces
the Downloads section of docs/benchmarks.md (:func:`update_docs`), keeping what stands after
its HAND_WRITTEN marker. The package never imports this module.
"""

import math
import os
import re
import textwrap

from bench_download_measure import BIG_SIZE, MIB
from bench_download_servers import ROOT, log

DOCS = os.path.join(ROOT, "docs", "benchmarks.md")
CHART = os.path.join(ROOT, "docs", "bench_download.png")
SECTION = "## Downloads (tools/bench_download_run.py)"

# Targets of issue 4 and the Glance 33 reference measured on this machine (uWSGI, 4 procs).
GLANCE_REFERENCE = {
    "big_hit_c1_mib_s": 1237, "big_hit_c1_vs_nginx": 0.67, "small_hit_c16_req_s": 117,
    "small_cpu_ms_per_hit": 12.6, "nginx_small_req_s": 21500, "cold16_origin_reads": 16,
    "cold_vs_hit": 8,
}


def report(results, command, args):
    """Print the Markdown section; with --update-docs also write the chart and the doc."""
    # The command that reproduces the numbers: without where this run put its JSON.
    command = re.sub(r" --(json-out|from-json)(=| )\S+", "", command).replace("sudo ", "")
    checks = evaluate(results)
    results["checks"] = checks
    section = markdown(results, checks, command)
    print(section)
    if args.update_docs:
        chart(results)
        update_docs(section)
        log("wrote %s and the Downloads section of %s", CHART, DOCS)
    return 0 if all(check["met"] for check in checks) else 1


def evaluate(results):
    big, small, cold = results["big"], results["small"], results["cold"]
    nginx_c1 = big["nginx"]["1"]
    checks = []

    def add(name, ok, detail):
        checks.append({"target": name, "met": bool(ok), "detail": detail})

    for label, factor in (("gunicorn", 0.95), ("eventlet", 0.8)):
        ratio = big[label]["1"]["mib_per_s"] / nginx_c1["mib_per_s"]
        add("256 MiB hit at C=1 >= %.2fx nginx MiB/s (%s)" % (factor, label), ratio >= factor,
            "%.0f vs %.0f MiB/s = %.2fx" % (big[label]["1"]["mib_per_s"],
                                             nginx_c1["mib_per_s"], ratio))
    for label in ("gunicorn", "eventlet"):
        ratio = big[label]["1"]["cpu_s_per_gib"] / nginx_c1["cpu_s_per_gib"]
        add("server CPU per GiB at C=1 <= 1.1x nginx (%s)" % label, ratio <= 1.1,
            "%.3f vs %.3f s/GiB = %.2fx" % (big[label]["1"]["cpu_s_per_gib"],
                                             nginx_c1["cpu_s_per_gib"], ratio))
    for label in ("gunicorn", "eventlet"):
        run = small[label]
        add("64 KiB hits >= 3000 req/s at C=16, <= 0.5 ms CPU/hit (%s)" % label,
            run["requests_per_s"] >= 3000 and run["cpu_ms_per_request"] <= 0.5,
            "%.0f req/s, %.3f ms CPU/hit (nginx %.0f req/s, %.3f ms)"
            % (run["requests_per_s"], run["cpu_ms_per_request"],
               small["nginx"]["requests_per_s"], small["nginx"]["cpu_ms_per_request"]))
    floor = 16 * BIG_SIZE / MIB / big["nginx"]["16"]["mib_per_s"]
    for label, entry in cold.items():
        add("16 concurrent cold downloads read the origin once (%s)" % label,
            entry["origin_reads_max"] == 1 and not entry["errors"],
            "at most %d origin read(s) per run over %d runs; X-Image-Cache of the last run: %s"
            % (entry["origin_reads_max"], len(entry["reps"]),
               ", ".join("%s %d" % kv for kv in sorted(entry["reps"][-1]["sixteen_status"]
                                                        .items()))))
        add("16 concurrent cold all done <= 1.5x one cold (%s)" % label,
            entry["last_vs_single"] <= 1.5,
            "last of 16 at %.2f s vs one cold %.2f s = %.2fx (bandwidth floor %.2f s = %.2fx)"
            % (entry["sixteen_last_s"], entry["single_s"], entry["last_vs_single"], floor,
               floor / entry["single_s"]))
        if entry.get("origin_mib_s"):
            continue   # a paced origin makes any cold download slow: no cold/hit target
        add("cold download <= 3x its hit (%s)" % label, entry["cold_vs_hit"] <= 3,
            "cold %.2f s vs hit %.3f s = %.1fx" % (entry["single_s"], entry["hit_s"],
                                                 entry["cold_vs_hit"]))
        if "fresh_s" in entry:
            add("cold download <= 3x its hit, image just uploaded (%s)" % label,
                entry["fresh_vs_hit"] <= 3,
                "cold %.2f s vs hit %.3f s = %.1fx; a plain write loop of as many bytes, also "
                "just after an upload: %.2f s (the cold download = %.2fx that)"
                % (entry["fresh_s"], entry["hit_s"], entry["fresh_vs_hit"],
                   entry["write_floor_s"], entry["fresh_vs_floor"]))
    return checks


def markdown(results, checks, command):
    meta = results["meta"]
    lines = [SECTION, "",
             "Reproduce every number below from the repository root, as root (it installs nginx "
             "from Debian when missing and runs it), ideally on an otherwise idle machine; the "
             "chart needs matplotlib in .venv (`.venv/bin/pip install matplotlib`). About 9 "
             "minutes:", "",
             "```", command, "```", "",
             "Machine: %s, %d cores, Python %s; %s%s. Client: tools/bench_download.py (one process "
             "per connection, keep-alive, its raw HTTP/1.1 client reading with recv_into into a "
             "1 MiB buffer; byte count checked on every response, MD5 of every body in the "
             "warm-up and cold-verification runs, none in the timed runs). Servers: glance-cache-mw-api (eventlet, %d workers, its wsgi.file_wrapper = sendfile), "
             "gunicorn %s (gthread, %d workers x %d threads, wsgi.file_wrapper = sendfile), "
             "nginx %s (%d workers, sendfile on, access log buffered). Each cell: median of %d "
             "runs of %g s, the servers interleaved round-robin (all of them up at once, "
             "only one loaded at a time); server CPU = utime+stime of all server processes from /proc. "
             "1-minute load average during the runs: %.1f to %.1f (other work on the same 2 "
             "cores lowers throughput; CPU per request/GiB is the steadier figure)."
             % (meta["cpu"], meta["cores"], meta["python"], meta["date"],
                ", code at %s" % meta["commit"] if meta.get("commit") else "",
                meta["eventlet_workers"],
                meta["gunicorn_version"], meta["gunicorn_workers"], meta["gunicorn_threads"],
                meta["nginx_version"], meta["nginx_workers"], meta["repeat"], meta["seconds"],
                *(meta.get("loadavg_1m_range") or (math.nan, math.nan))),
             "", "### Hits and origin-only, 256 MiB image", "",
             "| server | C | MiB/s | (each run) | p50 ms | p99 ms | server CPU s/GiB "
             "| vs nginx MiB/s |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    big = results["big"]
    for label in results["labels"]:
        for conc, run in big[label].items():
            ratio = run["mib_per_s"] / big["nginx"][conc]["mib_per_s"]
            lines.append("| %s | %s | %.0f | %s | %.1f | %.1f | %.3f | %.2fx |" % (
                label, conc, run["mib_per_s"], " / ".join("%.0f" % v for v in run["all_runs"]),
                run["latency_ms"]["p50"], run["latency_ms"]["p99"], run["cpu_s_per_gib"], ratio))
    lines += ["", "### 64 KiB images, C=16 (16 images round-robin)", "",
              "| server | req/s | (each run) | p50 ms | p99 ms | server CPU ms/request "
              "| X-Image-Cache |",
              "|---|---:|---|---:|---:|---:|---|"]
    for label in results["labels"]:
        run = results["small"][label]
        lines.append("| %s | %.0f | %s | %.2f | %.2f | %.3f | %s |" % (
            label, run["requests_per_s"], " / ".join("%.0f" % v for v in run["all_runs"]),
            run["latency_ms"]["p50"], run["latency_ms"]["p99"],
            run["cpu_ms_per_request"], ", ".join("%s %d" % kv for kv in
                                                 sorted(run["x_image_cache"].items()))))
    lines += ["", "### Cold downloads, 256 MiB (median of %d)" % meta["repeat"], "",
              "Origin: the file store, in the page cache (faster than this machine can send "
              "16 copies), and, in the rows that say so, the same store paced to a remote "
              "store's rate by tools/bench_origin_rate.py (`--origin-rate`).", "",
              "| server | one cold s | its hit s | cold/hit | 16 cold: last headers s "
              "| 16 cold: last done s | /one cold | origin reads (max) "
              "| X-Image-Cache of 16 (last run) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, entry in results["cold"].items():
        last = entry["reps"][-1]["sixteen_status"]
        lines.append("| %s | %.2f | %.3f | %s | %.2f | %.2f | %.2fx | %d | %s |" % (
            label, entry["single_s"], entry["hit_s"],
            "-" if entry.get("origin_mib_s") else "%.1fx" % entry["cold_vs_hit"],
            entry.get("sixteen_last_headers_s", float("nan")), entry["sixteen_last_s"],
            entry["last_vs_single"], entry["origin_reads_max"],
            ", ".join("%s %d" % kv for kv in sorted(last.items()))))
    floor = 16 * BIG_SIZE / MIB / results["big"]["nginx"]["16"]["mib_per_s"]
    lines += ["", "Bandwidth floor for the 16 cold downloads on this machine: 16 x 256 MiB at "
              "nginx's C=16 hit rate = %.2f s, whatever the cache and the origin do; \"headers\" is when "
              "the response headers arrived (a request that waits for a fill shows it here)."
              % floor]
    fresh = [(label, entry) for label, entry in results["cold"].items() if "fresh_s" in entry]
    if fresh:
        lines += ["", "### Cold download of a just-uploaded image, 256 MiB", "",
                  "Each rep uploads two images; one is then downloaded (cold), the other is "
                  "followed by a plain Python loop writing as many bytes, 1 MiB at a time, to a "
                  "new file in the cache directory (no fsync; the order alternates). The fill "
                  "writes every byte into the cache file before sending it on, so the disk's "
                  "write speed at that moment is the cold download's floor; on this machine's "
                  "virtual disk it swings between ~0.05 s and ~0.85 s per 256 MiB (seemingly slow "
                  "into blocks the filesystem has not just freed, fast right after a deletion).", "",
                  "| server | cold s (median) | each rep | write loop s (median) | each rep "
                  "| cold / its hit | cold / write loop |",
                  "|---|---:|---|---:|---|---:|---:|"]
        for label, entry in fresh:
            lines.append("| %s | %.2f | %s | %.2f | %s | %.1fx | %.2fx |" % (
                label, entry["fresh_s"], " / ".join("%.2f" % v for v in entry["fresh_all_s"]),
                entry["write_floor_s"],
                " / ".join("%.2f" % v for v in entry["write_floor_all_s"]),
                entry["fresh_vs_hit"], entry["fresh_vs_floor"]))
    lines += ["", "### Targets (issue 4)", "", "| target | met | measured |", "|---|---|---|"]
    for check in checks:
        lines.append("| %s | %s | %s |" % (check["target"], "met" if check["met"] else
                                            "**not met**", check["detail"]))
    ref = GLANCE_REFERENCE
    lines += ["", "Glance 33 under uWSGI (4 procs) on this machine, for reference: 256 MiB hit at "
              "C=1 %d MiB/s = %.2fx nginx; 64 KiB hits at C=16 %d req/s (%.1f ms server CPU per "
              "hit; nginx %d req/s); 16 cold = %d origin reads; cold = %dx hit."
              % (ref["big_hit_c1_mib_s"], ref["big_hit_c1_vs_nginx"], ref["small_hit_c16_req_s"],
                 ref["small_cpu_ms_per_hit"], ref["nginx_small_req_s"],
                 ref["cold16_origin_reads"], ref["cold_vs_hit"]),
              "", "![downloads](bench_download.png)", ""]
    # Wrap prose like the rest of docs/ (tables, code and headings stay one line each).
    wrapped = []
    for line in lines:
        if len(line) > 96 and not line.startswith(("|", "#", "`", "!", ".venv")):
            wrapped.extend(textwrap.wrap(line, 96, break_on_hyphens=False))
        else:
            wrapped.append(line)
    return "\n".join(wrapped)


HAND_WRITTEN = "<!-- bench_download_run.py keeps the rest of this section as it is -->"


def update_docs(section_text, path=DOCS):
    """Replace (or append) our section of docs/benchmarks.md; re-read just before writing.

    Text after the HAND_WRITTEN marker (profiles, diagnoses) is kept across runs."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        new = text.rstrip("\n") + "\n\n" + section_text.rstrip("\n") + "\n"
    else:
        nxt = re.search(r"^## ", text[start + len(SECTION):], re.MULTILINE)
        end = start + len(SECTION) + nxt.start() if nxt else len(text)
        kept = text[start:end]
        kept = kept[kept.index(HAND_WRITTEN):].rstrip("\n") + "\n" if HAND_WRITTEN in kept else ""
        body = section_text.rstrip("\n") + "\n" + ("\n" + kept if kept else "")
        new = text[:start] + body + ("\n" + text[end:] if nxt else "")
    with open(path, "w") as handle:
        handle.write(new)


def chart(results, path=CHART):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = results["labels"]
    colors = {"nginx": "#444444", "gunicorn": "#1f77b4", "eventlet": "#2ca02c",
              "gunicorn-nocache": "#aec7e8", "eventlet-nocache": "#98df8a"}
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    concs = list(results["big"]["nginx"])
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = [results["big"][label][c]["mib_per_s"] for c in concs]
        ax.bar([x + i * width for x in range(len(concs))], values, width, label=label,
               color=colors.get(label))
    ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(concs))])
    ax.set_xticklabels(["C=%s" % c for c in concs])
    ax.set_ylabel("MiB/s")
    ax.set_title("256 MiB downloads: throughput")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.25)
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    ax = axes[0][1]
    values = [results["big"][label]["1"]["cpu_s_per_gib"] for label in labels]
    ax.bar(labels, values, color=[colors.get(label) for label in labels])
    ax.set_ylabel("server CPU s per GiB (C=1)")
    ax.set_title("256 MiB downloads: server CPU per GiB")
    ax.tick_params(axis="x", labelsize=8)
    ax = axes[1][0]
    values = [results["small"][label]["requests_per_s"] for label in labels]
    ax.bar(labels, values, color=[colors.get(label) for label in labels])
    ax.axhline(3000, color="red", linestyle="--", linewidth=1, label="target 3,000 req/s")
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (log)")
    ax.set_title("64 KiB downloads at C=16")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8)
    ax = axes[1][1]
    cold_labels = list(results["cold"])
    for i, label in enumerate(cold_labels):
        entry = results["cold"][label]
        rep = entry["reps"][len(entry["reps"]) // 2]
        color = colors.get(label.split(",")[0])
        ax.scatter(rep["sixteen_finish_s"], [i] * len(rep["sixteen_finish_s"]), marker="|",
                   s=300, color=color, label="%s: 16 cold, finish times" % label)
        headers = rep.get("sixteen_headers_s") or []
        ax.scatter(headers, [i - 0.2] * len(headers), marker=".", color=color,
                   label="%s: 16 cold, headers received" % label)
        ax.scatter([entry["single_s"]], [i + 0.25], marker="o", color=color,
                   label="%s: one cold alone" % label)
        ax.scatter([entry["hit_s"]], [i + 0.25], marker="x", color=color,
                   label="%s: one hit" % label)
        ax.plot([1.5 * entry["single_s"]] * 2, [i - 0.4, i + 0.4], color=color, linestyle=":",
                linewidth=1)
    floor = 16 * BIG_SIZE / MIB / results["big"]["nginx"]["16"]["mib_per_s"]
    ax.axvline(floor, color="black", linestyle="--", linewidth=1,
               label="16 x 256 MiB at nginx's C=16 rate")
    ax.set_yticks(range(len(cold_labels)))
    ax.set_yticklabels(cold_labels)
    ax.set_ylim(-0.5, len(cold_labels) - 0.2)
    ax.set_xlabel("seconds (dotted: 1.5x one cold)")
    ax.set_title("Cold 256 MiB downloads (median run)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.suptitle("glance_cache_mw downloads on 127.0.0.1 (%s)" % results["meta"]["date"])
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


