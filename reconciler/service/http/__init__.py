"""The daemon's HTTP endpoint (opt-in with `listen`), one job per module:

* `app`: the route table and the app's assembly (`build_app`, `serve`);
* `security`: who may ask what (Host, bearer token and dashboard sessions, Origin), with
  `throttle` (failed authentications slow their client down) and `forwarded` (the client
  behind a trusted reverse proxy);
* `hooks`: the git push webhook (signature, replay memory, which sites it wakes);
* `read_api`: the JSON reads, /metrics, the dashboard page and the server-sent-event streams;
* `actions`: the operator actions (rollback, unpin, retry, redeploy), one table-driven handler;
* `context`: what every part is given (`WebContext`) and the one shape of a refusal;
  `digests`: constant-time comparison and digests of what clients send.

aiohttp is confined to this package (and the outgoing deliveries of service/webhooks.py):
pyproject.toml's import-linter contracts say so.
"""
