"""TLS for glance-cache-mw-api: ``cert_file`` and ``key_file`` (Glance's names) make it serve https.

``server_context(cert_file, key_file)`` checks the two settings (both or neither) and loads
them into a server-side SSLContext at start-up, before anything is written or any worker is
forked: a missing, unreadable or invalid file, an encrypted key or a key that does not match
the certificate is an InvalidConfiguration naming the key and the file (exit 2).

``protocol(context)`` is the HTTP protocol of eventlet's server for that context: the
listening socket stays a plain socket and each accepted connection is wrapped and its
handshake done in the connection's own green thread (``TLSProtocol.setup``), never in the
accept loop, so a client that connects and sends nothing holds only its own green thread,
for at most ``HANDSHAKE_TIMEOUT_S``. A failed handshake (plain HTTP sent to the https port, a
client that does not trust the certificate, a scanner) is logged with the client's address and
closes that connection only. Under TLS the bytes must pass through the SSL object:
sendfile.SendfileProtocol sees that the connection is not a plain GreenSocket and lets
eventlet write the body (a hit is then read from the file in chunks).
"""

import logging
import ssl
import warnings

with warnings.catch_warnings():
    # eventlet warns on import that it is in maintenance mode; it is our chosen server.
    warnings.filterwarnings("ignore", message="\\s*Eventlet is deprecated")
    import eventlet.green.ssl

from glance_cache_mw import exception
from glance_cache_mw.cmd import sendfile

LOG = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 30


class _EncryptedKey(Exception):
    """Raised by the password callback: the key needs a passphrase (never prompted for)."""


def _refuse_password():
    raise _EncryptedKey()


def server_context(cert_file, key_file):
    """A server-side SSLContext of ``cert_file`` and ``key_file``, or None when both are
    unset (plain HTTP); InvalidConfiguration naming the key and the file otherwise."""
    if not cert_file and not key_file:
        return None
    for key, value, other in (("cert_file", cert_file, "key_file"),
                              ("key_file", key_file, "cert_file")):
        if not value:
            raise exception.InvalidConfiguration(
                reason="%s=%r is set but %s is not: set both for https (or neither)"
                % (other, cert_file or key_file, key))
        _check_readable(key, value)
    # The green context: its sockets wait on the hub instead of blocking the process.
    context = eventlet.green.ssl.GreenSSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=cert_file)   # parses every certificate in it
    except ssl.SSLError as err:
        raise exception.InvalidConfiguration(
            reason="cert_file=%r holds no PEM certificate: %s" % (cert_file, err)) from None
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_password)
    except _EncryptedKey:
        raise exception.InvalidConfiguration(
            reason="key_file=%r is encrypted (a passphrase is not supported: give an "
                   "unencrypted key, readable by the server only)" % (key_file,)) from None
    except ssl.SSLError as err:
        raise exception.InvalidConfiguration(
            reason="key_file=%r is not the PEM private key of cert_file=%r: %s"
            % (key_file, cert_file, err)) from None
    # The cluster's peer requests and image clients do not present certificates.
    context.verify_mode = ssl.CERT_NONE
    return context


def _check_readable(key, path):
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as err:
        raise exception.InvalidConfiguration(
            reason="%s=%r cannot be read: %s" % (key, path, err.strerror or err)) from None


def protocol(context):
    """The eventlet HTTP protocol class: SendfileProtocol, over TLS when ``context``."""
    if context is None:
        return sendfile.SendfileProtocol
    return type("TLSProtocol", (TLSProtocol,), {"ssl_context": context})


class TLSProtocol(sendfile.SendfileProtocol):
    """SendfileProtocol over TLS: the handshake is done in the connection's green thread."""

    ssl_context = None   # set by protocol()

    def setup(self):
        """Wrap the connection and do the handshake; on failure, log it and serve nothing."""
        self.tls_error = None
        try:
            tls = self.ssl_context.wrap_socket(self.request, server_side=True,
                                               do_handshake_on_connect=False)
        except (OSError, ValueError) as err:   # the client is gone already
            self._failed(err)
            return
        # The TLS socket owns the connection now: eventlet closes (and, on a graceful stop,
        # shuts down) conn_state[1].
        self.request = self.conn_state[1] = tls
        timeout = tls.gettimeout()
        tls.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            tls.do_handshake()
        except (OSError, ValueError) as err:   # ssl.SSLError, a timeout, a reset
            tls.close()
            self._failed(err)
            return
        tls.settimeout(timeout)
        super().setup()

    def _failed(self, err):
        self.tls_error = err
        LOG.info("TLS handshake with %s failed: %s", _address(self.client_address),
                 _describe(err))

    def handle(self):
        if self.tls_error is None:
            super().handle()

    def finish(self):
        if self.tls_error is None:
            super().finish()

    def get_environ(self):
        environ = super().get_environ()
        environ["wsgi.url_scheme"] = "https"
        environ["HTTPS"] = "on"
        return environ


def _address(client_address):
    try:
        return "%s:%s" % tuple(client_address[:2])
    except TypeError:
        return str(client_address)


def _describe(err):
    text = str(err)
    return "%s: %s" % (type(err).__name__, text) if text else type(err).__name__
