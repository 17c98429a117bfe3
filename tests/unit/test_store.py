"""The file store: atomic adds with hashes, ranged reads that own their file, id checks."""

import errno
import hashlib
import io
import os

import pytest

from glance_cache_mw import exception, image_ids
from glance_cache_mw import store as file_store

IMAGE_ID = "0b5e8b6a-8f0e-4a43-9d52-6f3c0a0b6c1e"
DATA = os.urandom(200 * 1024 + 3)


@pytest.fixture
def store(tmp_path):
    return file_store.FileStore(str(tmp_path / "images"), chunk_size=4096)


def listing(store):
    return sorted(os.listdir(store.datadir))


class FailingStream:
    def __init__(self, data, error, after=1):
        self._data, self._error, self._after = io.BytesIO(data), error, after

    def read(self, size=-1):
        if self._after == 0:
            raise self._error
        self._after -= 1
        return self._data.read(size)


def test_add_stores_data_and_hashes(store):
    stored = store.add(IMAGE_ID, io.BytesIO(DATA))
    assert stored.size == len(DATA)
    assert stored.checksum == hashlib.md5(DATA).hexdigest()
    assert stored.os_hash_algo == "sha512"
    assert stored.os_hash_value == hashlib.sha512(DATA).hexdigest()
    assert stored.path == store.path_for(IMAGE_ID)
    assert listing(store) == [IMAGE_ID]
    assert store.exists(IMAGE_ID) and store.get_size(IMAGE_ID) == len(DATA)
    assert store.location_url(IMAGE_ID) == "file://" + stored.path


def test_add_with_expected_size(store):
    assert store.add(IMAGE_ID, io.BytesIO(DATA), expected_size=len(DATA)).size == len(DATA)
    with pytest.raises(file_store.UploadIncomplete):
        store.add("short", io.BytesIO(DATA), expected_size=len(DATA) + 1)
    with pytest.raises(exception.Invalid, match="more than"):
        store.add("long", io.BytesIO(DATA), expected_size=len(DATA) - 1)
    assert listing(store) == [IMAGE_ID]


def test_add_beyond_max_size_leaves_nothing(store):
    with pytest.raises(file_store.ImageSizeLimitExceeded):
        store.add(IMAGE_ID, io.BytesIO(DATA), max_size=len(DATA) - 1)
    assert listing(store) == []
    assert store.add(IMAGE_ID, io.BytesIO(DATA), max_size=len(DATA)).size == len(DATA)


@pytest.mark.parametrize("error, raised", [
    (OSError("reset"), file_store.UploadIncomplete),
    (ValueError("bad chunk"), file_store.UploadIncomplete),
    (KeyboardInterrupt(), KeyboardInterrupt),
])
def test_failed_read_leaves_nothing(store, error, raised):
    with pytest.raises(raised):
        store.add(IMAGE_ID, FailingStream(DATA, error, after=2))
    assert listing(store) == []


class BrokenDiskStore(file_store.FileStore):
    """Writes go to ``device`` opened with ``flags`` instead of the temp file."""

    def __init__(self, datadir, device, flags):
        super().__init__(datadir, chunk_size=4096)
        self._device, self._flags = device, flags

    def _open_temp(self, image_id):
        fd, path = super()._open_temp(image_id)
        os.close(fd)
        return os.open(self._device or path, self._flags), path


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_full_disk_is_storage_full(tmp_path):
    store = BrokenDiskStore(str(tmp_path / "images"), "/dev/full", os.O_WRONLY)
    with pytest.raises(file_store.StorageFull):
        store.add(IMAGE_ID, io.BytesIO(DATA))
    assert listing(store) == []


def test_other_write_errors_are_raised_as_they_are(tmp_path):
    store = BrokenDiskStore(str(tmp_path / "images"), None, os.O_RDONLY)  # EBADF on write
    with pytest.raises(OSError) as err:
        store.add(IMAGE_ID, io.BytesIO(DATA))
    assert err.value.errno == errno.EBADF
    assert listing(store) == []


def test_add_replaces_atomically(store):
    store.add(IMAGE_ID, io.BytesIO(b"old"))
    store.add(IMAGE_ID, io.BytesIO(b"new"))
    assert listing(store) == [IMAGE_ID]
    with store.open_for_read(IMAGE_ID) as reader:
        assert b"".join(reader) == b"new"


def test_open_for_read_whole_and_ranges(store):
    store.add(IMAGE_ID, io.BytesIO(DATA))
    reader = store.open_for_read(IMAGE_ID)
    try:
        assert reader.path == store.path_for(IMAGE_ID)
        assert (reader.offset, reader.length, reader.size) == (0, len(DATA), len(DATA))
        chunks = list(reader)
    finally:
        reader.close()
    assert b"".join(chunks) == DATA and max(map(len, chunks)) == 4096
    reader = store.open_for_read(IMAGE_ID, offset=10, length=5000)
    try:
        assert b"".join(reader) == DATA[10:5010]
    finally:
        reader.close()
    reader = store.open_for_read(IMAGE_ID, offset=len(DATA) - 3, length=100)
    try:
        assert reader.length == 3 and b"".join(reader) == DATA[-3:]
    finally:
        reader.close()


def test_close_closes_the_file_even_unread(store):
    store.add(IMAGE_ID, io.BytesIO(DATA))
    reader = store.open_for_read(IMAGE_ID)
    next(reader)
    reader.close()
    assert reader.file.closed


def test_reading_missing_data_is_not_found(store):
    with pytest.raises(exception.ImageNotFound):
        store.open_for_read(IMAGE_ID)
    with pytest.raises(exception.ImageNotFound):
        store.get_size(IMAGE_ID)
    assert store.delete(IMAGE_ID) is False


def test_delete(store):
    store.add(IMAGE_ID, io.BytesIO(DATA))
    assert store.delete(IMAGE_ID) is True
    assert listing(store) == [] and not store.exists(IMAGE_ID)


@pytest.mark.parametrize("image_id", ["", ".", "..", "../etc", "a/b", "a\x00b", ".hidden",
                                      "x" * 37, None, 5, "/abs", "a\\b", "é"])
def test_bad_ids_never_touch_the_filesystem(store, image_id):
    assert not image_ids.is_store_id(image_id)
    for call in (store.path_for, store.exists, store.delete, store.open_for_read):
        with pytest.raises(exception.ImageNotFound):
            call(image_id)
    with pytest.raises(exception.ImageNotFound):
        store.add(image_id, io.BytesIO(b"x"))
    assert not os.path.exists(store.datadir)


@pytest.mark.parametrize("image_id", [IMAGE_ID, "a", "x" * 36, "A_b-c.d", "0"])
def test_good_ids(image_id):
    assert image_ids.is_store_id(image_id)


def test_remove_stale_uploads(store):
    assert store.remove_stale_uploads(60) == 0           # no directory yet
    store.add(IMAGE_ID, io.BytesIO(DATA))
    stale = os.path.join(store.datadir, ".upload-%s.abc" % IMAGE_ID)
    fresh = os.path.join(store.datadir, ".upload-%s.def" % IMAGE_ID)
    for path in (stale, fresh):
        with open(path, "wb") as handle:
            handle.write(b"partial")
    os.utime(stale, (0, 0))
    assert store.remove_stale_uploads(3600) == 1
    assert listing(store) == sorted([IMAGE_ID, os.path.basename(fresh)])
    assert store.remove_stale_uploads(0, now=os.stat(fresh).st_mtime + 1) == 1
    assert listing(store) == [IMAGE_ID]
