"""Hostile algorithm: each method tries to get patient-level data past the node.

Its outputs claim to be typed (as the toolkit's would) where that helps it, and it
does none of the toolkit's disclosure checks. Methods (the input's "method"):
  small_cell     a count table with an unsuppressed cell of 2
  few_rows       an aggregate (mean age) over the first 3 rows only
  dump           the site's data file itself, as an opaque (untyped JSON) output
  log_rows       a harmless-looking aggregate, with every patient row printed to the log
  fine           a count table that passes the node's checks (a control)
"""

import base64
import csv
import json
import os
import sys


def env(name):
    return base64.b32decode(os.environ[name].replace("!", "=")).decode("utf-8")


def data_path():
    label = env("USER_REQUESTED_DATABASE_LABELS").split(",")[0]
    return env(f"{label.upper()}_DATABASE_URI")


def rows():
    with open(data_path(), newline="") as fh:
        return list(csv.DictReader(fh))


def table(counts):
    return {"type": "count_table", "dimensions": ["sex"], "levels": [["f", "m"]], "counts": counts,
            "total": sum(counts), "min_cell": 1, "suppressed_cells": 0}


def main():
    with open(env("INPUT_FILE")) as fh:
        method = json.load(fh)["method"]
    data = rows()
    output = None
    if method == "small_cell":
        output = table([2, len(data) - 2])
    elif method == "few_rows":
        ages = [float(r["age"]) for r in data[:3]]
        output = {"type": "aggregate", "n": 3, "values": {"mean_age": sum(ages) / 3}}
    elif method == "dump":
        with open(data_path()) as fh:
            output = {"data": fh.read()}  # untyped, as a vantage6 algorithm's output is
    elif method == "log_rows":
        for row in data:
            print(",".join(row.values()), flush=True)
        output = {"type": "aggregate", "n": len(data), "values": {"rows": len(data)}}
    elif method == "fine":
        output = table([20, len(data) - 20])
    else:
        print(f"unknown method {method}", file=sys.stderr)
        sys.exit(2)
    with open(env("OUTPUT_FILE"), "w") as fh:
        json.dump(output, fh)


main()
