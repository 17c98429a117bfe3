"""Image members: sharing a ``shared`` image with other projects (/v2/images/{id}/members).

Glance's rules: only shared images have members (403 otherwise); the image owner (or an admin)
adds and removes members; only the member itself (or an admin) accepts or rejects; a member sees
only its own membership, the owner sees all of them.
"""

import logging

from glance_cache_mw import exception
from glance_cache_mw.api import common, schemas, views

LOG = logging.getLogger(__name__)

MAX_MEMBER_LENGTH = 255


class MembersController:
    """Handlers for /v2/images/{image_id}/members[/{member_id}]."""

    def __init__(self, db_api, store, settings):
        self.db_api = db_api
        self.settings = settings

    def _shared_image(self, context, image_id):
        image = common.load_image(self.db_api, context, image_id, with_tags=False)
        if image["visibility"] != "shared":
            raise common.HTTPError(403, "Only shared images have members.")
        return image

    def _find(self, context, image_id, member_id):
        found = self.db_api.image_member_find(context, image_id=image_id, member=member_id)
        if not found:
            raise common.HTTPError(404, "%s is not a member of image %s." % (member_id, image_id))
        return found[0]

    def index(self, req, context, image_id):
        self._shared_image(context, image_id)
        members = self.db_api.image_member_find(context, image_id=image_id)
        members.sort(key=lambda member: member["id"])
        return common.json_response({"members": [views.member_view(m) for m in members],
                                     "schema": "/v2/schemas/members"})

    def show(self, req, context, image_id, member_id):
        self._shared_image(context, image_id)
        return common.json_response(views.member_view(self._find(context, image_id, member_id)))

    def create(self, req, context, image_id):
        body = common.read_json(req)
        unknown = set(body) - {"member"}
        if unknown:
            raise common.HTTPError(400, "Unknown attributes: %s." % ", ".join(sorted(unknown)))
        member_id = body.get("member")
        if not isinstance(member_id, str) or not member_id.strip():
            raise common.HTTPError(400, "Body must contain a 'member' (a project id).")
        if len(member_id) > MAX_MEMBER_LENGTH:
            raise common.HTTPError(400, "Member ids are at most %d characters."
                                   % MAX_MEMBER_LENGTH)
        image = self._shared_image(context, image_id)
        common.require_mutable(self.db_api, context, image)
        if self.db_api.image_member_find(context, image_id=image_id, member=member_id):
            raise common.HTTPError(409, "Member %s already exists for image %s."
                                   % (member_id, image_id))
        quota = self.settings.image_member_quota
        if 0 <= quota <= self.db_api.image_member_count(context, image_id):
            raise exception.ImageMemberLimitExceeded(
                "Maximum number of image members (%d) exceeded." % quota)
        member = self.db_api.image_member_create(
            context, {"image_id": image_id, "member": member_id, "status": "pending"})
        LOG.info("image %s shared with %s", image_id, member_id)
        return common.json_response(views.member_view(member))

    def update(self, req, context, image_id, member_id):
        body = common.read_json(req)
        status = body.get("status")
        if set(body) != {"status"} or status not in schemas.MEMBER_STATUSES:
            raise common.HTTPError(400, "Body must be {\"status\": one of %s}."
                                   % ", ".join(schemas.MEMBER_STATUSES))
        self._shared_image(context, image_id)
        common.require_writable(context)
        member = self._find(context, image_id, member_id)
        if not context.is_admin and context.owner != member_id:
            raise common.HTTPError(403, "Only the member %s can change the status of its "
                                        "membership." % member_id)
        member = self.db_api.image_member_update(
            context, member["id"], {"status": status, "can_share": member["can_share"]})
        return common.json_response(views.member_view(member))

    def delete(self, req, context, image_id, member_id):
        image = self._shared_image(context, image_id)
        member = self._find(context, image_id, member_id)
        common.require_mutable(self.db_api, context, image)
        self.db_api.image_member_delete(context, member["id"])
        LOG.info("image %s no longer shared with %s", image_id, member_id)
        return common.empty_response()
