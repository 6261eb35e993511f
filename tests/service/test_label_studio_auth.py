"""Personal access tokens: exchanged once, the access token reused until shortly before its
``exp``, exchanged again then, and once more when Label Studio answers 401 to it. A stand-in
for Label Studio's /api/token/refresh/ and a file view (the real server's access tokens live
300 s, too long to wait for; tests/e2e/test_label_studio_real.py runs the real exchange)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from service.errors import LabelStudioAuthFailed
from service.label_studio.auth import LabelStudioAuth, jwt_claims
from service.label_studio.files import LabelStudioFiles
from service.urlfetch import Fetcher, UrlPolicy
from tests.conftest import png


def jwt(**claims: object) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


PAT = jwt(token_type="refresh", exp=int(time.time()) + 10**6, jti="pat")


class StandIn:
    """/api/token/refresh/ hands out access tokens living ``life`` seconds; /data/upload/x.png
    wants a current one (``revoked`` ones get 401)."""

    def __init__(self, life: float) -> None:
        self.life, self.exchanges, self.revoked, self.seen = life, 0, set(), []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def reply(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if body.get("refresh") != PAT:
                    return self.reply(401, b'{"detail": "Token is invalid"}', "application/json")
                stand_in.exchanges += 1
                access = jwt(token_type="access", exp=time.time() + stand_in.life,
                             jti=str(stand_in.exchanges))
                self.reply(200, json.dumps({"access": access}).encode(), "application/json")

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                stand_in.seen.append(auth)
                claims = jwt_claims(auth.removeprefix("Bearer "))
                if (not auth.startswith("Bearer ") or not claims or claims["exp"] < time.time()
                        or claims["jti"] in stand_in.revoked
                        or self.headers.get("Accept") == "image/*"):
                    return self.reply(401, b"{}", "application/json")
                self.reply(200, png(np.zeros((4, 4, 3), np.uint8)), "image/png")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in():
    s = StandIn(life=4.0)
    yield s
    s.close()


def files(base: str, token: str) -> LabelStudioFiles:
    fetcher = Fetcher(UrlPolicy(allow_private=True), max_bytes=10**6, timeout=5,
                      connect_timeout=5, max_redirects=0)
    return LabelStudioFiles(fetcher, base, token)


def test_pat_is_exchanged_reused_renewed_before_expiry_and_on_401(stand_in):
    async def run() -> None:
        f = files(stand_in.url, PAT)
        what = "tasks/0/data/candidate"
        for _ in range(3):
            assert (await f.fetch("/data/upload/x.png", 1, what)).startswith(b"\x89PNG")
        assert stand_in.exchanges == 1  # cached
        await asyncio.sleep(2.2)  # past half the 4 s life: renewed before it expires
        await f.fetch("/data/upload/x.png", 1, what)
        assert stand_in.exchanges == 2
        stand_in.revoked.add("2")  # Label Studio refuses the current access token
        await f.fetch("/data/upload/x.png", 1, what)
        assert stand_in.exchanges == 3 and stand_in.seen[-2] != stand_in.seen[-1]
        assert all(a.startswith("Bearer ") and PAT not in a for a in stand_in.seen)
        await f.fetcher.aclose()

    asyncio.run(run())


def test_refused_pat_and_legacy_and_access_tokens(stand_in):
    async def run() -> None:
        bad = LabelStudioAuth(stand_in.url, jwt(token_type="refresh", exp=1, jti="x"))
        with pytest.raises(LabelStudioAuthFailed) as err:
            await bad.header()
        assert err.value.status == 502 and "answered 401" in err.value.detail
        assert await LabelStudioAuth(stand_in.url, "abc123").header() == {
            "Authorization": "Token abc123"}
        access = jwt(token_type="access", exp=time.time() + 60)
        assert await LabelStudioAuth(stand_in.url, access).header() == {
            "Authorization": f"Bearer {access}"}
        assert stand_in.exchanges == 0

    asyncio.run(run())
