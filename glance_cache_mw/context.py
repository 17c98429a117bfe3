"""The request context: who is asking, as the DB API and the cache filter see it."""

# Where the context filter puts the RequestContext of a request, and where the images app and
# the cache filter read it: the WSGI environ key Glance's own context middleware uses.
ENVIRON_KEY = "glance.context"


class RequestContext:
    """Identity of a caller.

    The DB layer reads only ``is_admin``, ``owner`` and ``can_see_deleted``; the rest is carried
    for the API layers (as in Glance, where an ``admin`` role also makes a context admin).
    """

    def __init__(self, user_id=None, project_id=None, roles=None, is_admin=None,
                 read_only=False, show_deleted=False, auth_token=None, request_id=None):
        self.user_id = user_id
        self.project_id = project_id
        self.roles = list(roles or [])
        if is_admin is None:
            is_admin = "admin" in (role.lower() for role in self.roles)
        self.is_admin = bool(is_admin)
        self.read_only = bool(read_only)
        self.show_deleted = bool(show_deleted)
        self.auth_token = auth_token
        self.request_id = request_id

    @property
    def owner(self):
        """The project that owns what this caller creates (None without a project)."""
        return self.project_id or None

    @property
    def can_see_deleted(self):
        return self.show_deleted or self.is_admin

    @classmethod
    def admin(cls, **kwargs):
        """An admin context, for maintenance commands and the noauth pipeline."""
        kwargs.setdefault("roles", ["admin"])
        return cls(is_admin=True, **kwargs)

    def to_dict(self):
        return {
            "user_id": self.user_id, "project_id": self.project_id, "roles": list(self.roles),
            "is_admin": self.is_admin, "read_only": self.read_only,
            "show_deleted": self.show_deleted, "request_id": self.request_id,
        }

    def __repr__(self):
        return ("RequestContext(user_id=%r, project_id=%r, is_admin=%r, roles=%r)"
                % (self.user_id, self.project_id, self.is_admin, self.roles))
