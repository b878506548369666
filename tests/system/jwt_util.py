"""A test identity provider: an RSA and an EC signing key, their JWKS, and RS256 / ES256 tokens signed here with the
`cryptography` package (independent of Citadel's verifier)."""
import base64
import json
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives import hmac as crypto_hmac

ISSUER = "https://idp.citadel.test/realms/bank"
AUDIENCE = "citadel"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64u(n: int) -> str:
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class TestIdp:
    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())

    def jwks(self):
        rn = self.rsa.public_key().public_numbers()
        en = self.ec.public_key().public_numbers()
        return {"keys": [
            {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": _int_b64u(rn.n), "e": _int_b64u(rn.e)},
            {"kty": "EC", "kid": "ec-1", "use": "sig", "alg": "ES256", "crv": "P-256",
             "x": b64u(en.x.to_bytes(32, "big")), "y": b64u(en.y.to_bytes(32, "big"))},
        ]}

    def claims(self, role="developer", tenant="default", **over):
        now = int(time.time())
        c = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"user-{role}", "preferred_username": f"{role} user",
             "iat": now, "nbf": now - 5, "exp": now + 600, "citadel_role": role, "citadel_tenant": tenant}
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    def token(self, role="developer", tenant="default", alg="RS256", header=None, **over):
        h = {"alg": alg, "typ": "JWT", "kid": "rsa-1" if alg == "RS256" else "ec-1"}
        h.update(header or {})
        signing_input = (b64u(json.dumps(h).encode()) + "." +
                         b64u(json.dumps(self.claims(role, tenant, **over)).encode())).encode()
        if alg == "RS256":
            sig = self.rsa.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "ES256":
            r, s = decode_dss_signature(self.ec.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        elif alg == "none":
            sig = b""
        elif alg == "HS256":  # the classic confusion attack: HMAC keyed with the RSA public key
            pem = self.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
            m = crypto_hmac.HMAC(pem, hashes.SHA256())
            m.update(signing_input)
            sig = m.finalize()
        else:
            raise ValueError(alg)
        return signing_input.decode() + "." + b64u(sig)
