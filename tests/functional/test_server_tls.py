"""glance-cache-mw-api over https (cert_file and key_file): real server processes, real TLS
with certificates of a CA made at test time (tests/tlsfixtures.py), clients that verify them.

Checked: a MISS then a HIT (the cached file, which plain HTTP sends with sendfile, goes through
the SSL object: byte-identical, and the sendfile path is not taken) with one worker and with two;
a client that connects and says nothing and a plain-HTTP client on the https port stall and
crash nothing; a client that does not trust the CA is refused; and bad settings (one of the two
keys, an unreadable, invalid, encrypted or mismatched key, a file that is no certificate) end
the start with exit 2 and one line naming the key and the file, before anything is written.
"""

import http.client
import os
import socket
import ssl
import subprocess

import pytest

from tests import tlsfixtures
from tests.functional import server as helpers

MIB = 1024 * 1024
DATA = os.urandom(3 * MIB + 7)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return tlsfixtures.CertificateAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def node_cert(ca):
    return ca.issue("node", hosts=("127.0.0.1",))


def start_tls_server(workdir, ca, node_cert, workers):
    cert_file, key_file = node_cert
    return helpers.ServerProcess(workdir, testing=False, extra_args=["--debug"],
                                 ca_file=ca.ca_file, settings={
                                     "cert_file": cert_file, "key_file": key_file,
                                     "workers": str(workers)}).start()


@pytest.mark.parametrize("workers", [1, 2])
def test_https_miss_then_hit_byte_identical_and_no_client_stalls_it(tmp_path, ca, node_cert,
                                                                    workers):
    server = start_tls_server(tmp_path, ca, node_cert, workers)
    try:
        assert server.url.startswith("https://127.0.0.1:")
        path = "/v2/images/%s/file" % helpers.upload_image(server.url, DATA, ca_file=ca.ca_file)
        miss = helpers.fetch(server.url, path, ca_file=ca.ca_file)
        assert (miss[0], miss[1], miss[2] == DATA, miss[3]) == (200, "MISS", True, "complete")
        helpers.wait_for(lambda: server.request("HEAD", path)[1]["x-image-cache"] == "HIT",
                         what="the fill to commit")

        # A client that connects and sends nothing, and one that speaks plain HTTP to the
        # https port, while a verified client downloads the cached image.
        silent = socket.create_connection(("127.0.0.1", server.port))
        try:
            with pytest.raises((OSError, http.client.HTTPException)):
                helpers.http_request(server.url.replace("https:", "http:"), "GET", path)
            hit = helpers.fetch(server.url, path, timeout_s=30, ca_file=ca.ca_file)
            assert (hit[0], hit[1], hit[2] == DATA, hit[3]) == (200, "HIT", True, "complete")
            ranged = server.request("GET", path, headers={"Range": "bytes=%d-" % MIB})
            assert (ranged[0], ranged[2] == DATA[MIB:]) == (206, True)
        finally:
            silent.close()

        # The certificate is really checked: a client without the CA refuses the server.
        with pytest.raises(ssl.SSLCertVerificationError):
            helpers.fetch(server.url, path)
        assert server.request("GET", "/healthcheck")[0] == 200
    finally:
        server.stop()
    log = server.stderr()
    assert "sent %d bytes with sendfile" % len(DATA) not in log   # TLS: not the raw socket
    assert "TLS handshake with 127.0.0.1:" in log and "HTTP_REQUEST" in log
    assert "Traceback" not in log and "exited (status" not in log, log


def run_api(config_path, cwd):
    return subprocess.run(helpers.api_command() + ["--config", str(config_path)], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env=helpers.subprocess_env())


def test_bad_tls_settings_end_the_start_with_exit_2_naming_the_key_and_file(tmp_path, ca,
                                                                           node_cert):
    cert_file, key_file = node_cert
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file\n")
    encrypted_cert, encrypted_key = ca.issue("encrypted", passphrase=b"a passphrase")
    missing = str(tmp_path / "missing.key")
    cases = [
        ({"cert_file": cert_file}, "cert_file=%r is set but key_file is not" % cert_file),
        ({"key_file": key_file}, "key_file=%r is set but cert_file is not" % key_file),
        ({"cert_file": cert_file, "key_file": missing},
         "key_file=%r cannot be read: No such file or directory" % missing),
        ({"cert_file": cert_file, "key_file": str(garbage)},
         "key_file=%r is not the PEM private key of cert_file=%r" % (str(garbage), cert_file)),
        ({"cert_file": encrypted_cert, "key_file": key_file},
         "key_file=%r is not the PEM private key of cert_file=%r" % (key_file, encrypted_cert)),
        ({"cert_file": encrypted_cert, "key_file": encrypted_key},
         "key_file=%r is encrypted" % encrypted_key),
        ({"cert_file": key_file, "key_file": key_file},
         "cert_file=%r holds no PEM certificate" % key_file),
    ]
    for index, (settings, expected) in enumerate(cases):
        workdir = tmp_path / ("case%d" % index)
        path = helpers.write_config(tmp_path / ("bad%d.ini" % index), workdir / "data",
                                    testing=False, settings=settings)
        result = run_api(path, tmp_path)
        assert result.returncode == 2, (settings, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], (settings, result.stderr)
        assert "Traceback" not in result.stderr and "listening" not in result.stdout
        assert not (workdir / "data").exists()   # found before anything is written
