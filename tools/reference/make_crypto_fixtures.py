#!/usr/bin/env python3
"""Fixtures for tests/crypto from Python's `cryptography` package (its own OpenSSL build), an implementation
independent of src/crypto.

Writes tests/golden/crypto/:
  aes_gcm.json     AES-256-GCM seal vectors (random key, 96-bit IV, AAD, plaintext of several lengths)
  primitives.json  SM3, HMAC-SM3, HKDF-SHA256, HKDF-SM3, SM4-CTR vectors
  envelopes.json   whole CITADEL-ENC files (aes-256-gcm, sm4-gcm, sm4-ctr-hmac-sm3), built here from the format
                   description in src/crypto/envelope.h, that the C++ reader must decrypt to the stated plaintext

Deterministic: a seeded RNG (random.Random(20261205)) makes every key, IV, file id and plaintext, so re-running gives
the same files. Usage: python3 tools/reference/make_crypto_fixtures.py [OUT_DIR]
"""
import json
import os
import random
import struct
import sys

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RNG = random.Random(20261205)
CIPHER_IDS = {"aes-256-gcm": 1, "sm4-gcm": 2, "sm4-ctr-hmac-sm3": 3}


def rand(n):
    return bytes(RNG.getrandbits(8) for _ in range(n))


def hkdf(md, ikm, salt, info, n):
    return HKDF(md, n, salt, info).derive(ikm)


def digest(md, data):
    h = hashes.Hash(md)
    h.update(data)
    return h.finalize()


def hmac_sm3(key, data):
    m = hmac.HMAC(key, hashes.SM3())
    m.update(data)
    return m.finalize()


def gcm(alg, key, iv, aad, pt):
    enc = Cipher(alg(key), modes.GCM(iv)).encryptor()
    enc.authenticate_additional_data(aad)
    ct = enc.update(pt) + enc.finalize()
    return ct, enc.tag


def envelope(cipher, key, key_id, chunk, pt, file_id):
    kid = key_id.encode()
    header = b"CITADEL-ENC" + bytes([1, CIPHER_IDS[cipher], len(kid)]) + b"\0\0"
    header += struct.pack("<IQ", chunk, len(pt)) + file_id + kid
    sm4 = cipher != "aes-256-gcm"
    md = hashes.SM3() if sm4 else hashes.SHA256()
    info = b"citadel-enc/1 " + cipher.encode()
    enc_key = hkdf(md, key, file_id, info + b" enc", 16 if sm4 else 32)
    mac_key = hkdf(md, key, file_id, info + b" mac", 32) if cipher == "sm4-ctr-hmac-sm3" else None
    hh = digest(md, header)
    n = max(1, (len(pt) + chunk - 1) // chunk)
    out = header
    for i in range(n):
        piece = pt[i * chunk:(i + 1) * chunk]
        aad = hh + struct.pack(">Q", i) + bytes([1 if i == n - 1 else 0])
        nonce = file_id[:4] + struct.pack(">Q", i)
        if cipher == "sm4-ctr-hmac-sm3":
            ct = Cipher(algorithms.SM4(enc_key), modes.CTR(nonce + b"\0\0\0\0")).encryptor().update(piece)
            out += ct + hmac_sm3(mac_key, aad + ct)
        else:
            ct, tag = gcm(algorithms.SM4 if sm4 else algorithms.AES, enc_key, nonce, aad, piece)
            out += ct + tag
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "..", "tests", "golden", "crypto")
    os.makedirs(out_dir, exist_ok=True)

    aes = []
    for n_pt, n_aad in [(0, 0), (1, 0), (15, 13), (16, 16), (17, 41), (64, 0), (257, 20)]:
        key, iv, aad, pt = rand(32), rand(12), rand(n_aad), rand(n_pt)
        sealed = AESGCM(key).encrypt(iv, pt, aad)
        aes.append({"key": key.hex(), "iv": iv.hex(), "aad": aad.hex(), "pt": pt.hex(),
                    "ct": sealed[:-16].hex(), "tag": sealed[-16:].hex()})

    prim = {"sm3": [], "hmac_sm3": [], "hkdf": [], "sm4_ctr": []}
    for n in [0, 3, 55, 56, 64, 65, 200]:
        m = rand(n)
        prim["sm3"].append({"msg": m.hex(), "digest": digest(hashes.SM3(), m).hex()})
    for nk, nm in [(16, 10), (32, 64), (80, 100)]:
        k, m = rand(nk), rand(nm)
        prim["hmac_sm3"].append({"key": k.hex(), "msg": m.hex(), "mac": hmac_sm3(k, m).hex()})
    for md_name, md in [("SHA256", hashes.SHA256()), ("SM3", hashes.SM3())]:
        for n in [16, 32, 48]:
            ikm, salt, info = rand(32), rand(16), rand(20)
            prim["hkdf"].append({"digest": md_name, "ikm": ikm.hex(), "salt": salt.hex(), "info": info.hex(),
                                 "okm": hkdf(md, ikm, salt, info, n).hex()})
    for n in [1, 16, 33, 100]:
        k, iv, m = rand(16), rand(16), rand(n)
        ct = Cipher(algorithms.SM4(k), modes.CTR(iv)).encryptor().update(m)
        prim["sm4_ctr"].append({"key": k.hex(), "iv": iv.hex(), "pt": m.hex(), "ct": ct.hex()})

    envs = []
    for cipher in CIPHER_IDS:
        for chunk, n_pt in [(16, 0), (16, 40), (7, 21), (4096, 1000)]:
            key, file_id, pt = rand(32), rand(16), rand(n_pt)
            key_id = "fixture-key@%d" % len(envs)
            data = envelope(cipher, key, key_id, chunk, pt, file_id)
            envs.append({"cipher": cipher, "key": key.hex(), "key_id": key_id, "chunk": chunk,
                         "plaintext": pt.hex(), "file": data.hex()})

    for name, obj in [("aes_gcm.json", aes), ("primitives.json", prim), ("envelopes.json", envs)]:
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
