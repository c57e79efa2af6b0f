"""Print a command block of README.md, so that CI runs exactly what the README tells a newcomer.

    python3 .ci/readme_commands.py setup    # the indented block under the "## Set up" heading
    python3 .ci/readme_commands.py test     # the indented block under the "## Tests" heading

A block is the first run of lines indented by four spaces after the heading. Exits 1, naming the
heading, when the README lost the heading or its block: CI then fails instead of testing nothing.
"""
from __future__ import annotations

import os
import sys

HEADINGS = {"setup": "## Set up", "test": "## Tests"}
README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")


def command_block(text: str, heading: str) -> list[str]:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        raise LookupError(f"README.md has no heading starting with {heading!r}")
    block: list[str] = []
    for line in lines[start + 1:]:
        if line.startswith("#") and not block:
            break  # the next section began before any command
        if line.startswith("    ") and line.strip():
            block.append(line[4:])
        elif block:
            break
    if not block:
        raise LookupError(f"README.md has no indented command block under {heading!r}")
    return block


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in HEADINGS:
        print(f"usage: readme_commands.py {{{'|'.join(HEADINGS)}}}", file=sys.stderr)
        return 2
    with open(README, encoding="utf-8") as f:
        text = f.read()
    try:
        print("\n".join(command_block(text, HEADINGS[argv[0]])))
    except LookupError as e:
        print(f"readme_commands: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
