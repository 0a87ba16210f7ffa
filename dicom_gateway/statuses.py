"""C-STORE response statuses the gateway answers (documented in docs/conformance.md)."""

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # disk below the watermark, database unavailable: the sender retries
DATASET_MISMATCH = 0xA900  # data set does not match the SOP class / instance of the request
CANNOT_UNDERSTAND = 0xC000  # unreadable, required UID missing or invalid, nesting too deep
NO_ROUTE = 0xC001  # neither source nor attributes say fundus or anterior segment
CONFLICT = 0xC002  # SOP Instance UID already stored with different content
BAD_PIXELS = 0xC003  # pixel data missing, inconsistent with the image attributes, undecodable
TOO_LARGE = 0xC004  # data set or decoded image over the configured size
DECODE_TIMEOUT = 0xC005  # checking and decoding took longer than allowed
PROCESSING_FAILURE = 0x0110  # an internal error: a bug, logged with its traceback

MEANINGS: dict[int, str] = {
    SUCCESS: "Success: the image and its database row are durable",
    OUT_OF_RESOURCES: "Refused: out of resources (disk watermark, database down); retry later",
    DATASET_MISMATCH: "Error: data set does not match SOP class or instance of the request",
    CANNOT_UNDERSTAND: "Error: cannot understand (unreadable, missing/invalid UIDs, deep nesting)",
    NO_ROUTE: "Error: no route to the fundus or anterior-segment model",
    CONFLICT: "Error: SOP Instance UID already stored with different content (quarantined)",
    BAD_PIXELS: "Error: pixel data missing, inconsistent or undecodable",
    TOO_LARGE: "Error: data set or decoded image over the size limit",
    DECODE_TIMEOUT: "Error: decoding took longer than the limit",
    PROCESSING_FAILURE: "Failure: internal processing failure",
}
