"""What an image download looks like on the wire, whoever serves it (cache or origin).

One function builds the headers from the image record, so a cache hit, a coalesced follower
and a miss carry the same Content-Type, Content-Length, Content-MD5, ETag and Accept-Ranges.
"""

import re

from glance_cache_mw import bodies

# RFC 9110 DIGIT is ASCII only (re.ASCII: \d would take any Unicode digit, which int() reads).
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE | re.ASCII)
# Any position with more digits than this is past the end of every file; int() would refuse
# numbers of more than 4300 digits (sys.int_info.default_max_str_digits) with a ValueError.
_MAX_DIGITS = 30
_BEYOND_ANY_FILE = 10 ** _MAX_DIGITS


def url_path(environ):
    """The request's path as text: PEP 3333 hands PATH_INFO over as latin-1 text of the
    URL's bytes, which are UTF-8 (an image id of non-ASCII characters arrives that way).
    None when the bytes are not UTF-8."""
    try:
        return environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None


class RangeNotSatisfiable(Exception):
    """The Range header cannot be answered for this size (→ 416)."""


def download_headers(image, length=None, content_range=None):
    """Headers for the body of ``image`` (or of a range of it)."""
    size = image["size"]
    headers = [("Content-Type", "application/octet-stream"),
               ("Content-Length", str(size if length is None else length)),
               ("Accept-Ranges", "bytes")]
    if image.get("checksum"):
        headers.append(("Content-MD5", image["checksum"]))
    tag = image.get("os_hash_value") or image.get("checksum")
    if tag:
        headers.append(("ETag", '"%s"' % tag))
    if content_range is not None:
        headers.append(("Content-Range", content_range))
    return headers


def is_multi_range(header):
    return "," in header


def parse_range(header, size):
    """A single ``bytes=`` range as (start, length); RangeNotSatisfiable when it cannot be
    served from ``size`` bytes or does not parse."""
    match = _RANGE_RE.match(header)
    if match is None:
        raise RangeNotSatisfiable(header)
    first, last = (_position(text) for text in match.groups())
    if first is None and last is None:
        raise RangeNotSatisfiable(header)
    if first is None:                     # suffix: the last N bytes
        if last == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        start = max(size - last, 0)
        return start, size - start
    if first >= size or (last is not None and last < first):
        raise RangeNotSatisfiable(header)
    end = size - 1 if last is None else min(last, size - 1)
    return first, end - first + 1


def _position(digits):
    """The number ``digits`` spell (None for ''); a huge one as a number past any file."""
    if digits == "":
        return None
    digits = digits.lstrip("0") or "0"
    return _BEYOND_ANY_FILE if len(digits) > _MAX_DIGITS else int(digits)


def not_satisfiable_message(header, size):
    """The 416's message, the same from the cache and from the images app."""
    shown = header if len(header) <= 80 else header[:77] + "..."
    return "Range %r cannot be satisfied from %d bytes." % (shown, size)


def content_range(start, length, size):
    return "bytes %d-%d/%d" % (start, start + length - 1, size)


def file_body(environ, handle, start, length, size, chunk_size):
    """The body of ``length`` bytes of the open file ``handle`` (``size`` bytes) from
    ``start``: the server's ``wsgi.file_wrapper`` (sendfile) where it sends exactly that, else
    a chunked reader. Either owns ``handle``. Cache hits and the peer endpoint serve this way.
    """
    # A wrapper sends the file from where it is, but only some stop at Content-Length: ours
    # (sends_from_position) and gunicorn >= 21 (sendfile from lseek(fd, 0, SEEK_CUR),
    # response_length bytes; without sendfile it reads on to EOF and writes Content-Length).
    # uWSGI sends the whole file from offset 0.
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is None or not (length == size
                               or getattr(wrapper, "sends_from_position", False)
                               or getattr(wrapper, "__module__", "") == "gunicorn.http.wsgi"):
        return bodies.FileReader(handle, start, length, chunk_size)
    if start:
        handle.seek(start)                # a regular file: cannot fail for start < size
    return wrapper(handle, chunk_size)
