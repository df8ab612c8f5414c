"""Runs the ```bash blocks of a doc page, as a reader would paste them, in
the current directory (which must hold build/bin/kiln, configs/ and
scripts/), but small: the first block (which picks the input files) is
replaced by FILES, and every `kiln train` gets EXTRA settings appended
(later --set wins), so the page's commands run in seconds.
Usage: run-doc-commands.py PAGE.md 'FILES' 'EXTRA --set ARGS'"""
import re
import subprocess
import sys

page, files, extra = sys.argv[1], sys.argv[2], sys.argv[3]
blocks = re.findall(r"```bash\n(.*?)```", open(page).read(), re.S)
script = ["set -euo pipefail", f"fortunes='{files}'"]
for block in blocks[1:]:
    for command in block.replace("\\\n", " ").splitlines():
        if not command.strip():
            continue
        if command.lstrip().startswith("build/bin/kiln train"):
            command += " " + extra
        script.append(command)
print(f"run-doc-commands: {len(blocks) - 1} blocks, {len(script) - 2} commands", flush=True)
sys.exit(subprocess.run(["bash", "-c", "\n".join(script)]).returncode)
