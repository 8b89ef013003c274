"""Property tests of the HTTP endpoint's parsers of client input (reconciler.service.http): any
path segment or header value gives a typed answer, never an exception, and only the exact
secret or signature is accepted."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from reconciler.service.http.hooks import verify_webhook
from reconciler.service.http.read_api import MAX_ID, deployment_id
from tests.properties.strategies import FAST, nasty_text

SECRET = "s3cret-webhook"


@FAST
@given(nasty_text)
def test_any_deployment_id_segment_is_an_id_in_range_or_none(text: str) -> None:
    number = deployment_id(text)
    assert number is None or (1 <= number <= MAX_ID and str(number) == text.lstrip("0"))


@FAST
@given(st.integers(min_value=1, max_value=MAX_ID))
def test_every_id_in_range_round_trips(number: int) -> None:
    assert deployment_id(str(number)) == number


@FAST
@given(st.sampled_from(["X-Hub-Signature-256", "X-Gitea-Signature", "X-Forgejo-Signature", "X-Gitlab-Token"]),
       nasty_text, st.binary(max_size=256))
def test_any_signature_header_is_refused_unless_exact(header: str, value: str, body: bytes) -> None:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    exact = {"X-Hub-Signature-256": f"sha256={digest}", "X-Gitlab-Token": SECRET}.get(header, digest)
    assert verify_webhook(SECRET, body, {header: value}) is (value == exact)
    assert verify_webhook(SECRET, body, {header: exact}) is True
