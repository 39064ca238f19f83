#!/usr/bin/env python3
"""Parses a Prometheus text exposition (format 0.0.4) with python3-prometheus-client's parser,
the independent reference for loraserve's own writer, and checks the rules that parser lets
pass: every family has HELP and TYPE before its samples, no series appears twice, counters end
in _total, histogram buckets are cumulative and end with le="+Inf" equal to _count, and every
histogram series has _sum and _count.

Reads the text from the file named on the command line (or stdin); prints one JSON object:
{"families": {name: {"type", "help", "samples": [[sample_name, {labels}, value], ...]}}}, with
values as strings ("+Inf", "NaN" or repr of the float). Exits 1, naming the rule, on a
violation."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def check_order(text):
    """HELP then TYPE before the first sample of each family; no family is declared twice."""
    declared = {}
    current = None
    for number, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            if name in declared:
                fail(f"line {number}: family {name} declared twice")
            declared[name] = "help"
            current = name
        elif line.startswith("# TYPE "):
            name, kind = line.split(" ", 3)[2:4]
            if declared.get(name) != "help":
                fail(f"line {number}: TYPE of {name} without its HELP just before")
            declared[name] = kind
            current = name
        elif line.startswith("#"):
            continue
        else:
            sample = line.split("{", 1)[0].split(" ", 1)[0]
            base = current or ""
            kind = declared.get(base)
            allowed = {base}
            if kind == "histogram":
                allowed = {base + "_bucket", base + "_sum", base + "_count"}
            if sample not in allowed:
                fail(f"line {number}: sample {sample} outside its family ({base})")
    if not text.endswith("\n"):
        fail("the exposition does not end with a newline")


def value_text(v):
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def check_family(family):
    seen = set()
    for s in family.samples:
        key = (s.name, tuple(sorted(s.labels.items())))
        if key in seen:
            fail(f"{family.name}: series {key} appears twice")
        seen.add(key)
    if family.type == "counter" and not all(s.name.endswith("_total") for s in family.samples):
        fail(f"{family.name}: counter samples must end in _total")
    if family.type != "histogram":
        return
    series = {}
    for s in family.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        entry = series.setdefault(tuple(sorted(labels.items())), {"buckets": []})
        if s.name.endswith("_bucket"):
            entry["buckets"].append((float(s.labels["le"]), s.value, s.labels["le"]))
        elif s.name.endswith("_sum"):
            entry["sum"] = s.value
        elif s.name.endswith("_count"):
            entry["count"] = s.value
    for labels, e in series.items():
        if "sum" not in e or "count" not in e:
            fail(f"{family.name}{labels}: _sum or _count missing")
        bounds = [b[0] for b in e["buckets"]]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            fail(f"{family.name}{labels}: bucket bounds not increasing")
        if not e["buckets"] or e["buckets"][-1][2] != "+Inf":
            fail(f"{family.name}{labels}: the last bucket is not le=\"+Inf\"")
        counts = [b[1] for b in e["buckets"]]
        if counts != sorted(counts):
            fail(f"{family.name}{labels}: buckets not cumulative")
        if counts[-1] != e["count"]:
            fail(f"{family.name}{labels}: +Inf bucket {counts[-1]} != _count {e['count']}")


def main():
    text = open(sys.argv[1], encoding="utf-8").read() if len(sys.argv) > 1 else sys.stdin.read()
    check_order(text)
    out = {}
    for family in text_string_to_metric_families(text):
        check_family(family)
        # The parser strips _total from a counter family's name; keep the exposed name.
        name = family.name + "_total" if family.type == "counter" else family.name
        if name in out:
            fail(f"family {name} appears twice")
        out[name] = {
            "type": family.type,
            "help": family.documentation,
            "samples": [[s.name, s.labels, value_text(s.value)] for s in family.samples],
        }
    json.dump({"families": out}, sys.stdout)


if __name__ == "__main__":
    main()
