"""A device process for the SIGKILL test: ``python -m tests.device_firmware._runner DIR``.

Builds the same published release and device as ``make_rig`` (fixed seeds), logs every
chunk fetch to ``DIR/fetches`` (one index per line, flushed) and fetches slowly, so the
parent can kill it mid-download. Prints the result as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from tests.device_firmware.conftest import make_rig
from tests.firmware.conftest import image_bytes


def main(root: Path) -> None:
    rig = make_rig(root, image_bytes(40 * 65536 + 5))
    serve = rig.server
    log = (root / "fetches").open("a")

    def fetch(chunks: str, index: int) -> bytes:
        time.sleep(0.02)
        blob = serve(chunks, index)
        log.write(f"{index}\n")
        log.flush()
        os.fsync(log.fileno())
        return blob

    rig.server = fetch  # type: ignore[assignment]
    updater = rig.updater()
    result = updater.resume() or updater.handle(rig.offer())
    print(json.dumps({"state": result.state, "reason": result.reason}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
