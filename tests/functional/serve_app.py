"""A test server for the images app: eventlet.wsgi on 127.0.0.1:0, prints its port.

The request context comes from X-Project-Id / X-User-Id / X-Roles headers (a request without
X-Project-Id is an admin), standing in for the context middleware until ``glance-cache-mw-api``
serves the real pipeline. Run: ``python -m tests.functional.serve_app --data-dir DIR``.
"""

import argparse
import logging
import os
import sys


class HeaderContext:
    """Put a RequestContext built from identity headers into environ['glance.context']."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        from glance_cache_mw.context import RequestContext

        project_id = environ.get("HTTP_X_PROJECT_ID")
        roles = [role.strip() for role in environ.get("HTTP_X_ROLES", "").split(",")
                 if role.strip()]
        if project_id:
            context = RequestContext(user_id=environ.get("HTTP_X_USER_ID"),
                                     project_id=project_id, roles=roles,
                                     auth_token=environ.get("HTTP_X_AUTH_TOKEN"))
        else:
            context = RequestContext.admin(auth_token=environ.get("HTTP_X_AUTH_TOKEN"))
        environ["glance.context"] = context
        return self.app(environ, start_response)


def main(argv=None):
    import eventlet
    eventlet.monkey_patch()
    import eventlet.wsgi

    from glance_cache_mw.api.router import app_factory
    from glance_cache_mw.db import engine, migration

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    url = "sqlite:///" + os.path.join(os.path.abspath(args.data_dir), "images.sqlite")
    migration.sync(engine.configure(url))
    app = app_factory({}, sql_connection=url,
                      filesystem_store_datadir=os.path.join(args.data_dir, "images"))
    sock = eventlet.listen(("127.0.0.1", 0))
    sys.stdout.write("%d\n" % sock.getsockname()[1])
    sys.stdout.flush()
    eventlet.wsgi.server(sock, HeaderContext(app), log=sys.stderr, log_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
