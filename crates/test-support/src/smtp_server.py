"""A test SMTP server (aiosmtpd) for Meridian's mail tests.

Listens on 127.0.0.1:<port> with STARTTLS required or implicit TLS, accepts
every message, and writes each to <out>/<n>.eml with its envelope
recipients in <n>.rcpt (written first, then the .eml renamed into place,
so a reader never sees half a message).
"""
import argparse
import asyncio
import os
import ssl

from aiosmtpd.smtp import SMTP


class Store:
    def __init__(self, out):
        self.out = out
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        base = os.path.join(self.out, "%06d" % self.n)
        with open(base + ".rcpt", "w") as f:
            f.write("\n".join(envelope.rcpt_tos) + "\n")
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".tmp", base + ".eml")
        return "250 OK stored"


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tls", choices=["starttls", "implicit"], required=True)
    a = p.parse_args()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    handler = Store(a.out)
    if a.tls == "starttls":
        factory = lambda: SMTP(handler, tls_context=ctx, require_starttls=True,
                               hostname="localhost")
        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", a.port)
    else:
        factory = lambda: SMTP(handler, hostname="localhost")
        server = await asyncio.get_running_loop().create_server(
            factory, "127.0.0.1", a.port, ssl=ctx)
    print("listening", a.port, flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
