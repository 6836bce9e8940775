#!/usr/bin/env python3
"""A JWT issuer for the proxy's jwt_authn tests, written with the `cryptography` package rather than
Capstan's code: makes an RSA and a P-256 key, and prints one JSON object with their public JWKS and
tokens signed with them (RS256 and ES256): valid ones, an expired one, one for another audience and one
signed by a key the JWKS does not have; and, for AuthorizationPolicy's claims, valid ones with `groups`
["admins"] and ["guests"], and one from another issuer signed with the same key."""
import base64, json, sys, time
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def number(value: int, length: int) -> str:
    return b64(value.to_bytes(length, "big"))


def token(header: dict, claims: dict, sign) -> str:
    signed = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return signed + "." + b64(sign(signed.encode()))


issuer = sys.argv[1] if len(sys.argv) > 1 else "https://issuer.example"
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
stranger = ec.generate_private_key(ec.SECP256R1())
rsa_numbers = rsa_key.public_key().public_numbers()
ec_numbers = ec_key.public_key().public_numbers()
jwks = {"keys": [
    {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "n": number(rsa_numbers.n, 256), "e": number(rsa_numbers.e, 3)},
    {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": number(ec_numbers.x, 32), "y": number(ec_numbers.y, 32)},
]}


def rs256(data: bytes) -> bytes:
    return rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def es256(key):
    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return sign


now = int(time.time())
claims = {"iss": issuer, "sub": "alice", "aud": "bookinfo", "iat": now, "exp": now + 3600}
print(json.dumps({
    "jwks": json.dumps(jwks),
    "rs256": token({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}, claims, rs256),
    "es256": token({"alg": "ES256", "kid": "ec-1"}, claims, es256(ec_key)),
    "expired": token({"alg": "RS256", "kid": "rsa-1"}, dict(claims, exp=now - 3600), rs256),
    "other_audience": token({"alg": "RS256", "kid": "rsa-1"}, dict(claims, aud="reviews"), rs256),
    "stranger": token({"alg": "ES256", "kid": "ec-1"}, claims, es256(stranger)),
    "admins": token({"alg": "RS256", "kid": "rsa-1"}, dict(claims, groups=["admins"]), rs256),
    "guests": token({"alg": "RS256", "kid": "rsa-1"}, dict(claims, groups=["guests"]), rs256),
    "expired_admins": token({"alg": "RS256", "kid": "rsa-1"}, dict(claims, groups=["admins"], exp=now - 3600), rs256),
    "other_issuer": token({"alg": "RS256", "kid": "rsa-1"}, dict(claims, iss="https://other.example", groups=["admins"]), rs256),
}))
