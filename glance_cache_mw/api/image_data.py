"""Image data: ``PUT /v2/images/{id}/file`` (upload) and ``GET /v2/images/{id}/file`` (download).

Upload moves the image queued → saving → active with compare-and-swap updates
(``from_state``), so of two concurrent uploads exactly one wins and the other gets 409. A failed
upload marks the image ``killed``; the store leaves no file behind.

A download is 200 with the whole file, 206 for one satisfiable ``Range`` (416 otherwise, 400 for
several ranges, as Glance), 204 when the image has no data yet, 403 for a deactivated image
unless the caller is an admin, 404 when the caller may not see the image. Headers come from
``middleware.download.download_headers``, as on a cache hit; the response body is the store's
``bodies.FileReader`` (``app_iter.path`` names the file).
"""

import logging

import webob

from glance_cache_mw import exception, store as file_store
from glance_cache_mw.api import common
from glance_cache_mw.middleware import download

LOG = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
SIZE_HEADER = "x-openstack-image-size"
_HAS_DATA = ("active", "deactivated")


class ImageDataController:
    """Handlers for /v2/images/{image_id}/file."""

    def __init__(self, db_api, store, settings):
        self.db_api = db_api
        self.store = store
        self.settings = settings

    # --- upload -----------------------------------------------------------------------------

    def upload(self, req, context, image_id):
        common.require_media_type(req, OCTET_STREAM)
        image = common.load_image(self.db_api, context, image_id, with_tags=False)
        common.require_mutable(self.db_api, context, image)
        expected_size = _expected_size(req)
        cap = self.settings.image_size_cap
        if expected_size is not None and 0 <= cap < expected_size:
            raise common.HTTPError(413, "Image exceeds the storage quota: %d bytes is more than "
                                        "the image size cap of %d bytes." % (expected_size, cap))
        if image["status"] != "queued":
            raise common.HTTPError(409, "Image %s has status '%s': data can only be uploaded "
                                        "to a queued image." % (image_id, image["status"]))
        try:
            self.db_api.image_update(context, image_id, {"status": "saving"},
                                     from_state="queued")
        except exception.Conflict:
            raise common.HTTPError(409, "Image %s is already being uploaded or has data."
                                   % image_id) from None
        stored = self._store(context, image_id, req, expected_size, cap)
        self._activate(context, image_id, stored)
        return common.empty_response()

    def _store(self, context, image_id, req, expected_size, cap):
        """Write the body to the store; on any failure mark the image killed (4xx for the
        client's faults, the error itself for the store's)."""
        try:
            return self.store.add(image_id, common.body_stream(req), expected_size,
                                  cap if cap >= 0 else None)
        except BaseException as err:
            self._kill(context, image_id, err)
            if isinstance(err, file_store.ImageSizeLimitExceeded):
                raise common.HTTPError(413, str(err)) from None
            if isinstance(err, file_store.StorageFull):
                raise common.HTTPError(413, "Image storage media is full: %s" % err) from None
            if isinstance(err, exception.Invalid):
                # The request body broke off, ended short or ran long.
                LOG.warning("upload of image %s failed: %s", image_id, err)
                raise common.HTTPError(400, str(err)) from None
            raise  # the store's own failure (EIO, EACCES, ...): a 500, logged by the router

    def _kill(self, context, image_id, err):
        LOG.warning("upload of image %s failed (%s); marking it killed", image_id,
                    type(err).__name__)
        try:
            self.db_api.image_update(context, image_id, {"status": "killed"},
                                     from_state="saving")
        except exception.GlanceException:
            LOG.info("image %s left 'saving' during the upload", image_id)

    def _activate(self, context, image_id, stored):
        location = {"url": self.store.location_url(image_id), "metadata": {}, "status": "active"}
        values = {"status": "active", "size": stored.size, "checksum": stored.checksum,
                  "os_hash_algo": stored.os_hash_algo, "os_hash_value": stored.os_hash_value,
                  "locations": [location]}
        try:
            self.db_api.image_update(context, image_id, values, from_state="saving")
        except (exception.Conflict, exception.NotFound, exception.Forbidden):
            # Deleted (or killed) while we were writing: the data must not outlive it.
            self.store.delete(image_id)
            raise common.HTTPError(410, "Image %s could not be found after upload. The image "
                                        "may have been deleted during the upload." % image_id
                                   ) from None
        LOG.info("image %s is active (%d bytes)", image_id, stored.size)

    # --- download ---------------------------------------------------------------------------

    def download(self, req, context, image_id):
        image = common.load_image(self.db_api, context, image_id, with_tags=False)
        if image["status"] == "deactivated" and not context.is_admin:
            raise common.HTTPError(403, "The requested image has been deactivated. Image data "
                                        "download is forbidden.")
        if image["status"] not in _HAS_DATA:
            return common.empty_response(204)
        size = image["size"]
        if size is None:
            size = self.store.get_size(image_id)
        offset, length = parse_range(req.headers.get("Range"), size)
        reader = self.store.open_for_read(image_id, offset, length)
        return download_response(image, reader, partial=length is not None)


def download_response(image, reader, partial=False):
    """The response for ``reader`` (whole file or one range), with the headers a cache hit
    carries too (``middleware.download.download_headers``: one definition for both)."""
    content_range = None
    if partial:
        content_range = download.content_range(reader.offset, reader.length, reader.size)
    headers = download.download_headers(dict(image, size=reader.size), reader.length,
                                        content_range)
    resp = webob.Response(status=206 if partial else 200)
    resp.app_iter = reader  # app_iter first: assigning it clears Content-Length (STYLE.md)
    resp.headerlist = headers
    return resp


def parse_range(header, size):
    """(offset, length) for a single ``Range: bytes=a-b`` (length None = whole file).

    Several ranges are 400 as in Glance; a malformed or unsatisfiable range is 416.
    """
    if header is None or not header.strip():
        return 0, None
    if download.is_multi_range(header):
        raise common.HTTPError(400, "Requests with multiple ranges are not supported. You may "
                                    "make multiple single-range requests instead.")
    try:
        return download.parse_range(header, size)
    except download.RangeNotSatisfiable:
        raise common.HTTPError(416, download.not_satisfiable_message(header, size),
                               {"Content-Range": "bytes */%d" % size}) from None


def _expected_size(req):
    """The announced size (x-openstack-image-size, else Content-Length); 400 if they differ."""
    announced = req.headers.get(SIZE_HEADER)
    length = req.content_length
    if announced is None:
        return length
    try:
        size = int(announced)
    except ValueError:
        raise common.HTTPError(400, "Invalid %s header: %r." % (SIZE_HEADER, announced)) from None
    if size < 0:
        raise common.HTTPError(400, "Invalid %s header: %r." % (SIZE_HEADER, announced))
    if length is not None and length != size:
        raise common.HTTPError(400, "%s (%d) does not match Content-Length (%d)."
                               % (SIZE_HEADER, size, length))
    return size
