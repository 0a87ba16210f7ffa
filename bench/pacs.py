"""A minimal receiving PACS for the benchmarks where DCMTK's storescp is not installed.

    python -m bench.pacs PORT DIRECTORY

Accepts any storage SOP class (AE title PACS) and writes each data set as received, with its
file meta information, to DIRECTORY/<SOP Instance UID>.dcm (renamed into place when whole).
It neither decodes nor re-encodes, so it answers about as fast as storescp does;
pynetdicom's own storescp application decodes and re-writes every data set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event


def main() -> None:
    port, folder = int(sys.argv[1]), Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)

    def store(event: Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        partial = folder / f".{uid}.part"
        partial.write_bytes(event.encoded_dataset(include_meta=True))
        os.replace(partial, folder / f"{uid}.dcm")
        return 0x0000

    ae = AE(ae_title="PACS")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context("1.2.840.10008.1.1")  # verification
    ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, store)])


if __name__ == "__main__":
    main()
