"""A real OpenStack Keystone on 127.0.0.1 for the keystone-flavor tests.

Keystone comes from PyPI into its own venv (tools/keystone-venv; its python is named by the
environment variable GLANCE_CACHE_MW_TEST_KEYSTONE_PYTHON, which tools/test sets). Each
``KeystoneServer`` gets a fresh SQLite database and fernet keys (``keystone-manage db_sync``,
``fernet_setup``, ``credential_setup``, ``bootstrap``), then serves the public API with
keystone's own WSGI application under a threading wsgiref server in a subprocess.
"""

import http.client
import json
import os
import subprocess
import sys

from tests.functional import server as server_helpers

PYTHON_ENV = "GLANCE_CACHE_MW_TEST_KEYSTONE_PYTHON"
ADMIN_PASSWORD = "admin-secret"
TEST_PASSWORD = "pw-%s" % os.getpid()   # the users of the session's Keystone (conftest.py)
START_TIMEOUT_S = 120

# Runs inside the keystone venv: serve keystone's public app until killed.
_SERVE = """
import os, socketserver, sys
from wsgiref import simple_server
config_file, port = sys.argv[1], int(sys.argv[2])
os.environ["OS_KEYSTONE_CONFIG_DIR"] = os.path.dirname(config_file)
os.environ["OS_KEYSTONE_CONFIG_FILES"] = os.path.basename(config_file)
sys.argv = sys.argv[:1]   # oslo.config parses the command line
from keystone.server import wsgi
app = wsgi.initialize_public_application()
class Server(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
class Handler(simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass
httpd = simple_server.make_server("127.0.0.1", port, app, server_class=Server,
                                  handler_class=Handler)
print("ready", flush=True)
httpd.serve_forever()
"""

_CONF = """[DEFAULT]
[database]
connection = sqlite:///{dir}/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = {dir}/fernet-keys
[fernet_receipts]
key_repository = {dir}/fernet-keys
[credential]
key_repository = {dir}/credential-keys
"""


def keystone_python():
    """The keystone venv's python, or None when the tests cannot run one."""
    path = os.environ.get(PYTHON_ENV)
    return path if path and os.path.exists(path) else None


class KeystoneServer:
    """``url`` (…/v3 lives under it), ``token(user, project)``, ``add_user(...)``."""

    def __init__(self, workdir, python):
        self.workdir = str(workdir)
        self.python = python
        self.port = server_helpers.free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.config_file = os.path.join(self.workdir, "keystone.conf")
        self.process = None
        self._ids = {}

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.config_file, "w") as handle:
            handle.write(_CONF.format(dir=self.workdir))
        manage = [os.path.join(os.path.dirname(self.python), "keystone-manage"),
                  "--config-file", self.config_file]
        for args in (["db_sync"],
                     ["fernet_setup", "--keystone-user", _user(), "--keystone-group", _group()],
                     ["credential_setup", "--keystone-user", _user(),
                      "--keystone-group", _group()],
                     ["bootstrap", "--bootstrap-password", ADMIN_PASSWORD,
                      "--bootstrap-public-url", self.url + "/v3",
                      "--bootstrap-internal-url", self.url + "/v3",   # auth_token's default
                      "--bootstrap-admin-url", self.url + "/v3",
                      "--bootstrap-region-id", "RegionOne"]):
            result = subprocess.run(manage + args, capture_output=True, text=True, timeout=300)
            if result.returncode:
                raise RuntimeError("keystone-manage %s failed:\n%s" % (args[0], result.stderr))
        log = open(os.path.join(self.workdir, "keystone.log"), "wb")
        self.process = subprocess.Popen([self.python, "-c", _SERVE, self.config_file,
                                         str(self.port)], stdout=subprocess.PIPE, stderr=log)
        log.close()
        line = self.process.stdout.readline().decode().strip()
        if line != "ready":
            self.stop()
            raise RuntimeError("keystone did not start; see %s/keystone.log" % self.workdir)
        self._admin_token = self.token("admin", "admin", ADMIN_PASSWORD)
        return self

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self.process.stdout.close()

    # -- the identity API ------------------------------------------------------------------

    def _call(self, method, path, body=None, token=None, expect=(200, 201, 204)):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            headers = {"Content-Type": "application/json"}
            if token is not None:
                headers["X-Auth-Token"] = token
            conn.request(method, "/v3" + path, json.dumps(body) if body else None, headers)
            response = conn.getresponse()
            data = response.read()
            if response.status not in expect:
                raise RuntimeError("keystone %s %s: %d %s" % (method, path, response.status,
                                                             data[:300]))
            return response, (json.loads(data) if data else None)
        finally:
            conn.close()

    def token(self, user, project, password):
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
        response, _ = self._call("POST", "/auth/tokens", body)
        return response.getheader("X-Subject-Token")

    def _id(self, kind, name):
        key = (kind, name)
        if key not in self._ids:
            _, found = self._call("GET", "/%ss?name=%s" % (kind, name), token=self._admin_token)
            items = found[kind + "s"]
            if items:
                self._ids[key] = items[0]["id"]
            else:
                body = {kind: {"name": name, "domain_id": "default"}}
                if kind == "role":
                    body = {"role": {"name": name}}
                _, made = self._call("POST", "/%ss" % kind, body, token=self._admin_token)
                self._ids[key] = made[kind]["id"]
        return self._ids[key]

    def add_user(self, name, password, project, role):
        """A user with ``role`` on ``project`` (both created when missing); its project id."""
        project_id = self._id("project", project)
        _, made = self._call("POST", "/users", {"user": {
            "name": name, "password": password, "domain_id": "default",
            "default_project_id": project_id}}, token=self._admin_token)
        self._call("PUT", "/projects/%s/users/%s/roles/%s" % (
            project_id, made["user"]["id"], self._id("role", role)), token=self._admin_token)
        return project_id


def _user():
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


def _group():
    import grp
    return grp.getgrgid(os.getgid()).gr_name


if __name__ == "__main__":   # a manual run: python -m tests.functional.keystone_server DIR
    server = KeystoneServer(sys.argv[1], keystone_python() or sys.executable).start()
    print(server.url, flush=True)
    server.process.wait()
