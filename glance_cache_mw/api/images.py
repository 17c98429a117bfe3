"""The image records: create, list, show, update (JSON patch), delete, deactivate, reactivate.

Each handler takes the WebOb request, the caller's RequestContext and the URL's groups, and
returns a response or raises ``common.HTTPError`` / a Glance exception (mapped by the router).
Image data (upload, download) is in ``image_data.py``.
"""

import logging
import urllib.parse

from glance_cache_mw import exception
from glance_cache_mw.api import common, patch, schemas, views
from glance_cache_mw.context import RequestContext

LOG = logging.getLogger(__name__)

SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id", "created_at",
             "updated_at")
SORT_DIRS = ("asc", "desc")
_LIST_CONTROLS = frozenset({"limit", "marker", "sort", "sort_key", "sort_dir",
                            "member_status", "tag"})
_IGNORED_FILTERS = frozenset({"deleted", "changes-since"})
# Lists images for a caller without a project (docs/glance-differences.md): a project id no image or
# membership can have, as the DB API refuses owners and members over 255 characters.
_NO_PROJECT = "(no project)" + "-" * 256


class ImagesController:
    """Handlers for /v2/images and /v2/images/{image_id} (and its actions)."""

    def __init__(self, db_api, store, settings):
        self.db_api = db_api
        self.store = store
        self.settings = settings

    # --- create -----------------------------------------------------------------------------

    def create(self, req, context):
        common.require_writable(context)
        if context.owner is None and not context.is_admin:
            # Glance would store owner None, and every project can see an unowned image.
            raise common.HTTPError(403, "A caller without a project cannot create images; "
                                        "authenticate with a project (X-Project-Id).")
        body = common.read_json(req)
        values, properties, tags = self._split_create_body(body)
        owner = values.pop("owner", context.owner)
        if owner != context.owner and not context.is_admin:
            raise common.HTTPError(403, "You are not permitted to create images owned by "
                                        "'%s'." % owner)
        if values.get("visibility") == "public" and not context.is_admin:
            raise common.HTTPError(403, "You are not authorized to publicize images.")
        self._check_quotas(properties, tags)
        values.update(status="queued", owner=owner, properties=properties, tags=tags)
        values.setdefault("visibility", "shared")
        try:
            image = self.db_api.image_create(context, values)
        except exception.Duplicate:
            raise common.HTTPError(409, "Image with identifier %s already exists!"
                                   % values.get("id")) from None
        LOG.info("created image %s", image["id"])
        image["tags"] = self.db_api.image_tag_get_all(context, image["id"])
        return common.json_response(views.image_view(image), status=201,
                                    headers={"Location": views.image_href(image["id"])})

    @staticmethod
    def _split_create_body(body):
        values, properties, tags = {}, {}, []
        for name, value in body.items():
            if name in schemas.RESERVED:
                raise common.HTTPError(403, "Attribute '%s' is reserved." % name)
            if name in schemas.READ_ONLY or name in ("self", "file", "schema", "direct_url"):
                raise common.HTTPError(403, "Attribute '%s' is read-only." % name)
            if name == "tags":
                schemas.check_attribute(name, value)
                tags = list(dict.fromkeys(value))
            elif name in schemas.BASE_ATTRIBUTES:
                schemas.check_attribute(name, value)
                values[name] = value
            else:
                schemas.check_extra_property(name, value)
                properties[name] = value
        return values, properties, tags

    def _check_quotas(self, properties, tags):
        settings = self.settings
        if 0 <= settings.image_property_quota < len(properties):
            raise exception.ImagePropertyLimitExceeded(
                "Maximum number of image properties (%d) exceeded."
                % settings.image_property_quota)
        if 0 <= settings.image_tag_quota < len(tags):
            raise exception.ImageTagLimitExceeded(
                "Maximum number of image tags (%d) exceeded." % settings.image_tag_quota)

    # --- read -------------------------------------------------------------------------------

    def show(self, req, context, image_id):
        image = common.load_image(self.db_api, context, image_id)
        return common.json_response(views.image_view(image))

    def index(self, req, context):
        params = req.GET
        limit = self._limit(params)
        marker = params.get("marker")
        sort_keys, sort_dirs = _sort_params(params)
        member_status = params.get("member_status", "accepted")
        if member_status not in schemas.MEMBER_STATUSES + ["all"]:
            raise common.HTTPError(400, "Invalid member_status %r: must be one of pending, "
                                        "accepted, rejected or all." % member_status)
        filters = _filters(params)
        try:
            images = self.db_api.image_get_all(
                _listing_context(context), filters=filters, marker=marker, limit=limit,
                sort_key=sort_keys, sort_dir=sort_dirs, member_status=member_status,
                return_tag=True)
        except (exception.NotFound, exception.Forbidden):
            raise common.HTTPError(400, "Invalid marker: image %s could not be found."
                                   % marker) from None
        body = {"images": [views.image_view(image) for image in images],
                "schema": "/v2/schemas/images"}
        items = [(key, value) for key, value in params.items() if key != "marker"]
        body["first"] = _href(items)
        if images and len(images) == limit:
            body["next"] = _href(items + [("marker", images[-1]["id"])])
        return common.json_response(body)

    def _limit(self, params):
        raw = params.get("limit")
        if raw is None:
            return min(self.settings.limit_param_default, self.settings.api_limit_max)
        try:
            limit = int(raw)
        except ValueError:
            raise common.HTTPError(400, "limit param must be an integer") from None
        if limit < 0:
            raise common.HTTPError(400, "limit param must be positive")
        return min(limit, self.settings.api_limit_max)

    # --- change -----------------------------------------------------------------------------

    def update(self, req, context, image_id):
        common.require_media_type(req, patch.PATCH_MEDIA_TYPE)
        changes = patch.parse_changes(common.parse_json(req, list))
        image = common.load_image(self.db_api, context, image_id)
        common.require_mutable(self.db_api, context, image)
        draft = patch.apply_changes(image, views.live_properties(image), changes)
        patch.check_policy(context, image, draft)
        self._check_quotas(draft.properties, draft.tags)
        values = dict(draft.attributes, properties=draft.properties)
        self.db_api.image_update(context, image_id, values, purge_props=True)
        if draft.tags != image["tags"]:
            self.db_api.image_tag_set_all(context, image_id, draft.tags)
        return self.show(req, context, image_id)

    def delete(self, req, context, image_id):
        image = common.load_image(self.db_api, context, image_id, with_tags=False)
        common.require_mutable(self.db_api, context, image)
        if image["protected"]:
            raise common.HTTPError(403, "Image %s is protected and cannot be deleted."
                                   % image_id)
        self.db_api.image_update(context, image_id, {"status": "deleted"})
        self.db_api.image_destroy(context, image_id)
        self.store.delete(image_id)
        LOG.info("deleted image %s", image_id)
        return common.empty_response()

    def deactivate(self, req, context, image_id):
        return self._change_status(context, image_id, "active", "deactivated")

    def reactivate(self, req, context, image_id):
        return self._change_status(context, image_id, "deactivated", "active")

    def _change_status(self, context, image_id, from_state, to_state):
        """Glance's deactivate/reactivate: a no-op in the target state, 403 from any other."""
        image = common.load_image(self.db_api, context, image_id, with_tags=False)
        common.require_mutable(self.db_api, context, image)
        if image["status"] == to_state:
            return common.empty_response()
        if image["status"] != from_state:
            verb = "deactivate" if to_state == "deactivated" else "reactivate"
            raise common.HTTPError(403, "Not allowed to %s image in status '%s'."
                                   % (verb, image["status"]))
        try:
            self.db_api.image_update(context, image_id, {"status": to_state},
                                     from_state=from_state)
        except exception.Conflict:
            raise common.HTTPError(409, "Image %s changed status concurrently; try again."
                                   % image_id) from None
        LOG.info("image %s is now %s", image_id, to_state)
        return common.empty_response()


def _listing_context(context):
    """The context to list images with: ``context``, except for a caller without a project.

    Glance's DB API lists every shared image with any member to such a caller (names,
    checksums and owners of other projects). Here it lists as a project that owns nothing and
    is a member of nothing: public and community images only.
    """
    if context.owner is not None or context.is_admin:
        return context
    return RequestContext(user_id=context.user_id, project_id=_NO_PROJECT, roles=context.roles,
                          is_admin=False, read_only=context.read_only,
                          show_deleted=context.show_deleted, request_id=context.request_id)


def _href(items):
    query = urllib.parse.urlencode(items)
    return "/v2/images" + ("?" + query if query else "")


def _sort_params(params):
    """(keys, dirs) from ``sort=k:d,k2`` or repeated ``sort_key``/``sort_dir``; 400 if bad."""
    if "sort" in params:
        if "sort_key" in params or "sort_dir" in params:
            raise common.HTTPError(400, "The 'sort' parameter cannot be combined with "
                                        "'sort_key' or 'sort_dir'.")
        keys, dirs = [], []
        for item in params["sort"].split(","):
            key, _, direction = item.strip().partition(":")
            keys.append(key.strip())
            dirs.append(direction.strip() or "desc")
    else:
        keys = params.getall("sort_key") or ["created_at"]
        dirs = params.getall("sort_dir") or ["desc"]
        if len(dirs) > 1 and len(dirs) != len(keys):
            raise common.HTTPError(400, "Provide a single sort direction or as many sort "
                                        "directions as sort keys.")
        if len(dirs) == 1:
            dirs = dirs * len(keys)
    for key in keys:
        if key not in SORT_KEYS:
            raise common.HTTPError(400, "Invalid sort key %r: must be one of %s."
                                   % (key, ", ".join(SORT_KEYS)))
    for direction in dirs:
        if direction not in SORT_DIRS:
            raise common.HTTPError(400, "Invalid sort direction %r: must be asc or desc."
                                   % direction)
    return keys, dirs


def _filters(params):
    """The DB API's filters dict from the query string (other keys filter on properties)."""
    filters = {}
    for key in params:
        if key in _LIST_CONTROLS or key in _IGNORED_FILTERS:
            continue
        filters[key] = params.getall(key)[-1]
    tags = params.getall("tag")
    if tags:
        filters["tags"] = tags
    visibility = filters.get("visibility")
    if visibility is not None and visibility not in schemas.VISIBILITIES + ["all"]:
        raise common.HTTPError(400, "Invalid visibility value: %s" % visibility)
    for key in ("protected", "os_hidden"):
        if key in filters:
            text = filters[key].strip().lower()
            if text not in ("true", "false"):
                raise common.HTTPError(400, "Invalid value %r for %s: must be true or false."
                                       % (filters[key], key))
            filters[key] = text == "true"
    filters.setdefault("os_hidden", False)
    filters["deleted"] = False
    return filters
