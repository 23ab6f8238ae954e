"""The hot path: OpenAI-compatible routes under /v1 and the request pipeline behind them.

Stages of a request (proxy/pipeline.py), and what each adds to the call:
1. authenticate: the key from `Authorization: Bearer`, `api-key` or `x-api-key` -> AuthContext
   (cached in-process; no database round trip on a hit). 401 / 403.
2. parse: the body, read with a size limit (413), parsed by orjson; only the fields the gateway
   needs are checked (400), the rest is forwarded untouched.
3. policy: the model's route exists (404) and the key may use it (403).
4. forward: the provider adapter builds the upstream call; the shared httpx client sends it;
   whole answers and SSE streams are relayed in OpenAI's format (429 / 502 / 504 on failure).
5. settle: tokens from the upstream's usage (or an estimate, marked), cost in nano-USD, and
   one usage event handed to the buffered writer; for streams in the relay's `finally`, so a
   client that disconnects is still billed for what it received.
"""
