"""Image tags: ``PUT`` and ``DELETE /v2/images/{image_id}/tags/{tag}`` (204 both).

Adding a tag the image already has changes nothing; deleting one it lacks is 404. Only those
who may change the image (owner, admin) may tag it.
"""

import logging

from glance_cache_mw import exception
from glance_cache_mw.api import common

LOG = logging.getLogger(__name__)

MAX_TAG_LENGTH = 255


class TagsController:
    """Handlers for /v2/images/{image_id}/tags/{tag}."""

    def __init__(self, db_api, store, settings):
        self.db_api = db_api
        self.settings = settings

    def update(self, req, context, image_id, tag):
        if len(tag) > MAX_TAG_LENGTH:
            raise common.HTTPError(400, "Tags are at most %d characters." % MAX_TAG_LENGTH)
        image = common.load_image(self.db_api, context, image_id)
        common.require_mutable(self.db_api, context, image)
        if tag in image["tags"]:
            return common.empty_response()
        quota = self.settings.image_tag_quota
        if 0 <= quota <= len(image["tags"]):
            raise exception.ImageTagLimitExceeded(
                "Maximum number of image tags (%d) exceeded." % quota)
        self.db_api.image_tag_create(context, image_id, tag)
        self.db_api.image_update(context, image_id, {})  # bump updated_at, as Glance does
        LOG.debug("tagged image %s with %r", image_id, tag)
        return common.empty_response()

    def delete(self, req, context, image_id, tag):
        image = common.load_image(self.db_api, context, image_id, with_tags=False)
        common.require_mutable(self.db_api, context, image)
        try:
            self.db_api.image_tag_delete(context, image_id, tag)
        except exception.NotFound:
            raise common.HTTPError(404, "Tag %r not found for image %s." % (tag, image_id)
                                   ) from None
        self.db_api.image_update(context, image_id, {})
        return common.empty_response()
