"""Coverage-guided fuzzing (atheris) of what the gateway does to a received data set: parsing
and checking it and decoding its first frame (``dicom_gateway.inspection.inspect``).

    .venv/bin/python -m fuzz.inspection [-atheris_runs=N] [-max_total_time=S] [CORPUS_DIR]

Every input must end in an ``Inspected`` summary or a refusal (``InstanceRejected``: a DICOM
failure status at the gateway); any other exception is a bug, and atheris stops and writes the
input (``crash-*``) for a regression case. Without a corpus folder, the seeds are a generated
photograph in each transfer syntax the gateway accepts. The decode limit is kept small so that
the fuzzer looks for crashes, not for memory.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from io import BytesIO
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

with atheris.instrument_imports(include=["dicom_gateway", "pydicom"]):
    from dicom_gateway.inspection import Limits, inspect
    from services.kernel.errors import InstanceRejected

LIMITS = Limits(max_sequence_depth=12, max_decoded_bytes=64 << 20)
SYNTAXES = (
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.5",
)


def check_one(data: bytes) -> None:
    # A refusal (a DICOM failure status at the gateway) is a right answer; anything else raised
    # is a bug for atheris to report.
    with contextlib.suppress(InstanceRejected):
        inspect(data, LIMITS)


def seeds(folder: Path) -> None:
    """A generated photograph as an OP file in each transfer syntax, as seeds."""
    from pydicom import dcmread
    from pydicom.uid import UID

    from dicom_gateway.photos import photo_to_dataset
    from tests.synthetic_photos import generated_fundus_photos

    photo = generated_fundus_photos(1)[0]
    base = BytesIO()
    photo_to_dataset(photo, patient_id="FUZZ").save_as(base, enforce_file_format=True)
    for n, syntax in enumerate(SYNTAXES):
        ds = dcmread(BytesIO(base.getvalue()))
        if syntax != ds.file_meta.TransferSyntaxUID:
            ds.decompress()
            ds.PhotometricInterpretation = "RGB"
            if syntax == "1.2.840.10008.1.2.5":
                ds.compress(UID(syntax))
            else:
                ds.file_meta.TransferSyntaxUID = UID(syntax)
                ds.set_original_encoding(None, None)
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
        (folder / f"seed-{n}.dcm").write_bytes(out.getvalue())


def main() -> None:
    arguments = list(sys.argv)
    if not any(not a.startswith("-") for a in arguments[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="eyescreen-fuzz-"))
        seeds(corpus)
        arguments.append(str(corpus))
    atheris.Setup(arguments, check_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
