#!/usr/bin/env python3
"""3CX V20 Call Control API -> screenpop signed webhook (docs/pbx/3cx.md).

A starting point, NOT verified against a 3CX system (none runs where screenpop is tested): the
3CX side follows 3CX's published Call Control API; the screenpop side is the webhook contract
that tests/webhook.rs checks. Read docs/pbx/3cx.md before using it.

Follows the participants of the extensions the API client may monitor and posts, per participant:
  status Ringing    -> {"event":"ringing", "extension": dn, "caller": {...}}
  status Connected  -> {"event":"answered", "by": dn}
  removed           -> {"event":"ended", "extension": dn}
Call ids are 3CX's `callid`, so every leg of one call is one screenpop call (ring groups and
queues show as one card; the legs that lose end `answered_elsewhere`). Event ids are derived from
the call, the extension and the state, so a resent event is recognised as a duplicate.

Environment: TCX_URL (https://pbx.example.com), TCX_CLIENT_ID, TCX_CLIENT_SECRET (the API client
made in the 3CX admin console), SCREENPOP_URL (https://screenpop.example.com:8080/api/events),
SCREENPOP_WEBHOOK_3CX (the secret of [[webhook.pbx]] name = "3cx").
Needs: python3 -m pip install websockets httpx
"""

import asyncio
import hashlib
import hmac
import json
import os
import time

import httpx
import websockets

TCX = os.environ["TCX_URL"].rstrip("/")
SCREENPOP = os.environ["SCREENPOP_URL"]
SECRET = os.environ["SCREENPOP_WEBHOOK_3CX"].encode()

UPSERT, REMOVE = 0, 1


async def token(http: httpx.AsyncClient) -> tuple[str, float]:
    """An access token (OAuth2 client credentials) and when to renew it."""
    r = await http.post(
        f"{TCX}/connect/token",
        data={
            "client_id": os.environ["TCX_CLIENT_ID"],
            "client_secret": os.environ["TCX_CLIENT_SECRET"],
            "grant_type": "client_credentials",
        },
    )
    r.raise_for_status()
    body = r.json()
    return body["access_token"], time.monotonic() + 0.8 * float(body.get("expires_in", 60))


async def post(http: httpx.AsyncClient, event: dict) -> None:
    """Signs and posts one event; retried with the same id (screenpop answers a retry `duplicate`)."""
    event["pbx"] = "3cx"
    body = json.dumps(event, separators=(",", ":")).encode()
    for attempt in range(5):
        ts = str(int(time.time()))
        mac = hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        try:
            r = await http.post(
                SCREENPOP,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Screenpop-Timestamp": ts,
                    "X-Screenpop-Signature": f"sha256={mac}",
                },
            )
            if r.status_code < 500:
                if r.status_code >= 400:
                    print(f"screenpop refused {event['event']}: {r.status_code} {r.text}")
                return
        except httpx.HTTPError as error:
            print(f"screenpop unreachable: {error}")
        await asyncio.sleep(0.2 * 2**attempt)


async def run() -> None:
    # participant entity path -> (callid, dn, last status posted)
    seen: dict[str, tuple[int, str, str]] = {}
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            try:
                bearer, renew = await token(http)
                headers = {"Authorization": f"Bearer {bearer}"}
                ws_url = TCX.replace("https://", "wss://", 1) + "/callcontrol/ws"
                async with websockets.connect(ws_url, additional_headers=headers) as ws:
                    async for raw in ws:
                        if time.monotonic() > renew:
                            bearer, renew = await token(http)
                            headers = {"Authorization": f"Bearer {bearer}"}
                        event = json.loads(raw).get("event") or {}
                        entity = event.get("entity", "")
                        if "/participants/" not in entity:
                            continue
                        if event.get("event_type") == REMOVE:
                            if entity in seen:
                                callid, dn, _ = seen.pop(entity)
                                await post(http, {
                                    "event": "ended", "id": f"3cx-{callid}-{dn}-{entity}-end",
                                    "call_id": str(callid), "extension": dn,
                                })
                            continue
                        if event.get("event_type") != UPSERT:
                            continue
                        r = await http.get(f"{TCX}{entity}", headers=headers)
                        if r.status_code != 200:
                            continue
                        p = r.json()
                        dn = entity.split("/")[2]  # /callcontrol/{dn}/participants/{id}
                        callid, status = p.get("callid"), p.get("status")
                        if callid is None or seen.get(entity, (0, "", ""))[2] == status:
                            continue
                        seen[entity] = (callid, dn, status)
                        if status == "Ringing":
                            number = p.get("party_caller_id") or ""
                            await post(http, {
                                "event": "ringing", "id": f"3cx-{callid}-{dn}-{entity}-ring",
                                "call_id": str(callid), "extension": dn,
                                "caller": {
                                    "number": number,
                                    "display": p.get("party_caller_name") or "",
                                    "withheld": number.lower() in ("", "anonymous", "unknown"),
                                },
                                "dialled": p.get("party_did") or None,
                            })
                        elif status == "Connected":
                            await post(http, {
                                "event": "answered", "id": f"3cx-{callid}-{dn}-{entity}-answer",
                                "call_id": str(callid), "by": dn,
                            })
            except (OSError, httpx.HTTPError, websockets.WebSocketException) as error:
                print(f"3CX connection lost ({error}); reconnecting in 5 s")
                await asyncio.sleep(5)


if __name__ == "__main__":
    asyncio.run(run())
