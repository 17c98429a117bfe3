"""What an image download looks like on the wire, whoever serves it (cache or origin).

One function builds the headers from the image record, so a cache hit, a coalesced follower
and a miss carry the same Content-Type, Content-Length, Content-MD5, ETag and Accept-Ranges.
"""

import re

_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


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
    first, last = match.groups()
    if first == "" and last == "":
        raise RangeNotSatisfiable(header)
    if first == "":                       # suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        start = max(size - suffix, 0)
        return start, size - start
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        raise RangeNotSatisfiable(header)
    return start, end - start + 1


def content_range(start, length, size):
    return "bytes %d-%d/%d" % (start, start + length - 1, size)
