"""WSGI bodies (glance_cache_mw/bodies.py): close_body, FileReader, PrimedIterator."""

import pytest

from glance_cache_mw import bodies


class Body:
    """A body whose __iter__ is a generator (not itself), recording close()."""

    def __init__(self, parts, error=None):
        self.parts = parts
        self.error = error
        self.closed = False

    def __iter__(self):
        if self.error is not None:
            raise self.error
        yield from self.parts

    def close(self):
        self.closed = True


def test_close_body_calls_close_where_there_is_one():
    body = Body([b"x"])
    bodies.close_body(body)
    bodies.close_body([b"a list has no close()"])
    bodies.close_body(None)
    assert body.closed


def test_a_file_reader_serves_its_range_in_chunks_and_closes_the_file(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"0123456789")
    with bodies.FileReader.open(str(path), offset=2, length=5, chunk_size=2) as reader:
        assert (reader.path, reader.offset, reader.length) == (str(path), 2, 5)
        assert list(reader) == [b"23", b"45", b"6"]
    assert reader.file.closed


def test_a_file_reader_raises_when_the_file_shrinks_under_it(tmp_path):
    # Ending quietly would look like a whole body: the server must cut the connection.
    path = tmp_path / "data"
    path.write_bytes(b"x" * 100)
    with bodies.FileReader.open(str(path), chunk_size=40) as reader:
        with open(path, "r+b") as handle:
            handle.truncate(50)             # after the reader took the file's length
        assert next(reader) == b"x" * 40 and next(reader) == b"x" * 10
        with pytest.raises(bodies.FileShrank, match="ended 50 bytes early"):
            next(reader)


def test_a_primed_body_yields_its_first_chunk_then_the_rest_and_closes_it():
    body = Body([b"a", b"b", b"c"])
    primed = bodies.PrimedIterator(body)
    assert list(primed) == [b"a", b"b", b"c"]
    primed.close()
    assert body.closed


def test_a_body_failing_before_its_first_chunk_raises_at_priming_and_is_closed():
    body = Body([], error=IOError("origin connection reset"))
    with pytest.raises(IOError, match="reset"):
        bodies.PrimedIterator(body)
    assert body.closed
