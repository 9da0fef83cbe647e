#!/usr/bin/env python3
"""Verifies a geobridge token with PyJWT, not with geobridge's own code.

Checks what Prosody's token plugin checks: the signature (RS256 against the key of the
token's kid in a JWKS document, or HS256 against a shared secret), `typ` exactly `JWT`, the
algorithm, `kid` present (RS256), `iss` exact, `aud` and `sub` present, `room` as expected,
`exp` a number in the future and `nbf` not after now. Prints the claims as JSON on success;
exits 1 with the reason on failure.

usage: verify.py (--jwks FILE | --secret SECRET) --iss ISS --aud AUD --room ROOM TOKEN
"""

import argparse
import json
import sys
import time

import jwt


def key_for(token, args):
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "JWT":
        raise ValueError(f"typ is {header.get('typ')!r}, Prosody needs exactly 'JWT'")
    if args.secret is not None:
        if header.get("alg") != "HS256":
            raise ValueError(f"alg is {header.get('alg')!r}, expected HS256")
        return args.secret, "HS256"
    if header.get("alg") != "RS256":
        raise ValueError(f"alg is {header.get('alg')!r}, expected RS256")
    kid = header.get("kid")
    if not kid:
        raise ValueError("kid missing from the header")
    with open(args.jwks, encoding="utf-8") as f:
        keys = jwt.PyJWKSet.from_dict(json.load(f))
    for key in keys.keys:
        if key.key_id == kid:
            return key.key, "RS256"
    raise ValueError(f"no key with kid {kid!r} in the JWKS")


def verify(token, args):
    key, alg = key_for(token, args)
    claims = jwt.decode(
        token,
        key,
        algorithms=[alg],
        audience=args.aud,
        issuer=args.iss,
        options={"require": ["exp", "nbf", "iss", "aud", "sub", "room"]},
    )
    now = time.time()
    for name in ("exp", "nbf"):
        if not isinstance(claims[name], int):
            raise ValueError(f"{name} is not a number: {claims[name]!r}")
    if claims["exp"] <= now:
        raise ValueError("exp is not in the future")
    if claims["nbf"] > now:
        raise ValueError("nbf is after now")
    if not claims["sub"]:
        raise ValueError("sub is empty")
    if claims["room"] != args.room:
        raise ValueError(f"room is {claims['room']!r}, the link joins {args.room!r}")
    return claims


def main():
    parser = argparse.ArgumentParser()
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--jwks")
    source.add_argument("--secret")
    parser.add_argument("--iss", required=True)
    parser.add_argument("--aud", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("token")
    args = parser.parse_args()
    try:
        claims = verify(args.token, args)
    except Exception as error:  # every failure is a verdict, reported the same way
        print(f"rejected: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(claims, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
