#!/usr/bin/env python3
"""Regenerate the README's generated sections (metric and flag tables) from the code.

    .venv/bin/python scripts/update_readme.py          # rewrite README.md
    .venv/bin/python scripts/update_readme.py --check  # exit 1 if README.md is stale (used by tests)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter import catalogue, config  # noqa: E402
from exporter.sensors import hwmon  # noqa: E402

SECTIONS = {"metrics": catalogue.markdown_table, "flags": config.markdown_flags, "hwmon": hwmon.markdown_table}


def render(text: str) -> str:
    for name, fn in SECTIONS.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md lacks the markers for the generated section {name!r}")
        text = pattern.sub(lambda m: m.group(1) + fn() + m.group(2), text)
    return text


def main() -> int:
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = render(old)
    if "--check" in sys.argv:
        if new != old:
            print("README.md is stale: run .venv/bin/python scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
