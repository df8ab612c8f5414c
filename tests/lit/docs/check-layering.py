"""check-layering.py SRC: every folder of the tree includes only the folders
it may depend on (docs/architecture.md, "Folders"). Include paths are global,
so this test is what enforces the layering; it prints each violation as
file:line and exits 1, or prints OK."""
import os
import re
import sys

ALLOWED = {
    "support": set(),
    "ir": {"support"},
    "frontend": {"ir", "support"},
    "models": {"frontend", "ir", "support"},
    "passes": {"ir", "support"},
    "runtime": {"ir", "support"},
    "codegen": {"ir", "passes", "runtime", "support"},
}
INCLUDE = re.compile(r'#\s*include\s+"([a-z]+)/')

src = sys.argv[1]
bad = []
for folder, allowed in ALLOWED.items():
    for root, _, files in os.walk(os.path.join(src, folder)):
        for name in files:
            if not name.endswith((".h", ".cpp", ".td", ".cuh", ".inc")):
                continue
            path = os.path.join(root, name)
            with open(path, encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, 1):
                    m = INCLUDE.search(line)
                    if m and m.group(1) in ALLOWED and m.group(1) != folder and m.group(1) not in allowed:
                        bad.append(f"{os.path.relpath(path, src)}:{number}: {folder}/ may not include {m.group(1)}/")
print("\n".join(bad) if bad else "OK")
sys.exit(1 if bad else 0)
