from pathlib import Path

import pytest

from services.kernel.errors import StorageFull
from services.kernel.storage import ContentStore


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    first = store.put(b"hello")
    again = store.put(b"hello")
    assert first == again
    assert first.path.read_bytes() == b"hello"
    assert first.path.relative_to(tmp_path).parts[:2] == (first.sha256[:2], first.sha256[2:4])
    assert not list(tmp_path.rglob(".incoming-*"))


def test_watermark_refuses_new_files(tmp_path: Path) -> None:
    store = ContentStore(tmp_path, min_free_bytes=2**62)
    with pytest.raises(StorageFull, match="watermark"):
        store.put(b"image")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
