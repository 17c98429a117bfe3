"""A certificate authority made at test time (with ``cryptography``) and the certificates it
signs, as PEM files: real TLS for the servers and clients of the tests.

    ca = CertificateAuthority(tmp_path / "ca")
    cert_file, key_file = ca.issue("node", hosts=("127.0.0.1",))
    ... cert_file/key_file to the server, ca.ca_file to the clients (cluster_ca_file)
"""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 2


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key, passphrase=None):
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


def _write(path, data):
    with open(path, "wb") as handle:
        handle.write(data)
    return str(path)


class CertificateAuthority:
    """A self-signed CA in ``directory`` (``ca_file``: its certificate) that issues leaf
    certificates for host names and IP addresses."""

    def __init__(self, directory, name="glance-cache-mw test CA"):
        self.directory = str(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self._cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256()))
        self.ca_file = _write(os.path.join(self.directory, "ca.pem"),
                              self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name, hosts=("127.0.0.1",), passphrase=None):
        """(cert_file, key_file) of a server certificate for ``hosts`` (IP addresses or DNS
        names), the key encrypted with ``passphrase`` (bytes) when given."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(_name(name))
            .issuer_name(self._cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(self._key, hashes.SHA256()))
        base = os.path.join(self.directory, name)
        return (_write(base + ".crt", cert.public_bytes(serialization.Encoding.PEM)),
                _write(base + ".key", _key_pem(key, passphrase)))
