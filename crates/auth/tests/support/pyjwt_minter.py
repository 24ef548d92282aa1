# An independent token minter for the OIDC tests: PyJWT with `cryptography`
# makes RSA and EC keys, their public JWKs, and tokens signed with them.
# Input (stdin, JSON): {"keys": [{"kid", "kty": "RSA"|"EC"|"OKP"}],
#                       "tokens": [{"kid", "alg", "claims"}]}
# Output (stdout, JSON): {"jwks": {kid: public JWK}, "tokens": [compact JWS]}
import json
import sys

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

spec = json.load(sys.stdin)
private = {}
public = {}
for key in spec["keys"]:
    kid, kty = key["kid"], key["kty"]
    if kty == "RSA":
        sk = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(sk.public_key()))
        jwk["alg"] = "RS256"
    elif kty == "EC":
        sk = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(sk.public_key()))
        jwk["alg"] = "ES256"
    elif kty == "OKP":
        sk = ed25519.Ed25519PrivateKey.generate()
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(sk.public_key()))
        jwk["alg"] = "EdDSA"
    else:
        raise SystemExit(f"unknown kty {kty}")
    jwk["kid"] = kid
    jwk["use"] = "sig"
    private[kid] = sk
    public[kid] = jwk

tokens = [
    jwt.encode(t["claims"], private[t["kid"]], algorithm=t["alg"], headers={"kid": t["kid"]})
    for t in spec["tokens"]
]
json.dump({"jwks": public, "tokens": tokens}, sys.stdout)
