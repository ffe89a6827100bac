#!/usr/bin/env python3
"""Writes docs/bench-runs.md from the logs scripts/bench-all.sh leaves.

Usage: bench-runs-doc.py LOG_DIR OUTPUT

Every run that has a .meta file is listed, oldest first, with its command,
start time, commit, exit status and what it printed on stdout, verbatim.
Runs already in OUTPUT whose logs are gone are kept as they were, and so
is everything from a line "# Other runs" on (runs made by hand).
"""
import pathlib
import re
import sys

HEADER = """# Benchmark runs

What each run of `scripts/bench-all.sh` printed, verbatim (stdout; its
stderr is in `target/bench-runs/<name>.err` on the machine that ran it).
[benchmarks.md](benchmarks.md) explains each bench and cites these runs by
name. Rerun one with `scripts/bench-all.sh <name>`: the section is replaced.
"""


def sections_of(text):
    """Existing sections of OUTPUT by run name."""
    found = {}
    parts = re.split(r"^## ", text, flags=re.M)[1:]
    for part in parts:
        name = part.split("\n", 1)[0].strip().strip("`")
        found[name] = "## " + part.rstrip() + "\n"
    return found


def main():
    logs = pathlib.Path(sys.argv[1])
    output = pathlib.Path(sys.argv[2])
    text = output.read_text() if output.exists() else ""
    text, marker, others = text.partition("\n# Other runs")
    sections = sections_of(text)
    started = {}
    for name, section in sections.items():
        m = re.search(r"^\* started: (.+)$", section, flags=re.M)
        started[name] = m.group(1) if m else ""
    for meta in logs.glob("*.meta"):
        name, start, commit, status, command = meta.read_text().rstrip("\n").split("\t", 4)
        stdout = (logs / f"{name}.log").read_text(errors="replace").rstrip()
        sections[name] = (
            f"## `{name}`\n\n"
            f"* command: `{command}`\n"
            f"* started: {start}\n"
            f"* commit: {commit}\n"
            f"* exit status: {status}\n\n"
            "```text\n" + (stdout or "(nothing on stdout)") + "\n```\n"
        )
        started[name] = start
    body = "\n".join(sections[n] for n in sorted(sections, key=lambda n: started[n]))
    output.write_text(HEADER + "\n" + body + (marker + others if marker else ""))


if __name__ == "__main__":
    main()
