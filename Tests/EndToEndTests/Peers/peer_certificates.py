"""Certificates for the Python peers, made by pyca/cryptography: CA certificates, names and PEM text."""
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID


def organization(name):
    """A distinguished name with only an organization: O=name."""
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])


def pem(certificate):
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def ca_certificate(name, key, issuer_name, issuer_key, days=1):
    """A CA certificate for key, valid from a minute ago for days, signed by issuer_key (key itself for a root)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256()))
