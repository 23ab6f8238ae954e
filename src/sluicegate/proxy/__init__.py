"""The hot path: OpenAI-compatible routes under /v1 and the request pipeline behind them.

Stages of a request (proxy/pipeline.py), and what each adds to the call:
1. authenticate: the key from `Authorization: Bearer`, `api-key` or `x-api-key` -> AuthContext
   (cached in-process; no database round trip on a hit). 401 / 403.
2. parse: the body, read with a size limit (413), parsed by orjson; only the fields the gateway
   needs are checked (400), the rest is forwarded untouched.
3. policy and route: the model exists (404) and the key may use it (403); the call's candidates
   are planned (proxy/route.py, routing/plan.py): the model's deployments and its fallback
   models, filtered by the key's group routing override (compliance: 403
   no_compliant_provider) and the request's `models` / `provider` fields, ordered by strategy
   and health (503 when all are cooling down) -> `call.candidates`. Every policy bound along
   the key's chain (org, groups, member, key) allows the model, the caller's address and the
   requested max_tokens (403 naming the policy), and a group's cost ceiling the worst case.
   Rules and overrides are cached per org (guard/rules.py, routing/cache.py).
4. reserve: the worst-case cost (prompt estimate + max output tokens, at the dearest candidate)
   and tokens are reserved in ONE atomic counter-store call over every budget (key, member,
   each group, org), rate limit and the org's credit -> `call.reserved`, or the first scope
   that blocks is named (402 budget or credit, 429 rate limit with Retry-After, 503 when Redis
   is down and failing closed).
   Keys with no guardrail at all skip the call.
5. forward: the candidates are tried in order (proxy/attempts.py): the provider adapter builds
   the upstream call (providers/), the provider's keep-alive connection pool
   (providers/transport.py) sends it; a 429, 5xx, connect error or timeout before the first
   byte moves on to the next candidate and counts against the deployment's health. Whole
   answers and SSE streams are relayed in OpenAI's format (429 / 502 / 504 after the last
   attempt), with `x-sluicegate-model`, `-provider`, `-attempts` and, when rate limits apply,
   `x-ratelimit-*` headers.
6. settle (proxy/settle.py): tokens from the upstream's usage (or an estimate, marked), cost in
   nano-USD at the price of the deployment that served, and the reservation replaced by it.
   With Redis, ONE script call settles the counters and appends the usage event to the org's
   durable stream (metering/stream.py, drained into the database by metering/drain.py) before
   the answer completes; embedded, the counters are in this process and the event goes to the
   buffered writer (metering/writer.py). Streams settle in the relay's `finally`, so a client
   that disconnects is still billed for what it received. Blocked requests are recorded too,
   at cost 0, with the guardrail as their error type. proxy/settlement.py pairs reserve and
   settle by construction: a call is settled exactly once, whichever way it ends.
   docs/architecture.md#money follows the cost further.

Every refusal above (status, OpenAI type and code, message, headers, usage error type) is declared
once in proxy/refusals.py and listed for clients in docs/proxy.md#errors.
"""
