from __future__ import annotations

import logging

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.compute.access import (
    MASK,
    AccessConfig,
    AccessDetails,
    AccessSecrets,
    SecretMaskingFilter,
    generate_ssh_key_pair,
    install_secret_masking,
    mask_text,
    mask_value,
    new_jupyter_token,
)


def test_ssh_key_pair_is_a_matching_ed25519_pair_in_openssh_formats() -> None:
    pair = generate_ssh_key_pair("acme-r1")
    private_text = pair.private_key.get_secret_value()
    assert private_text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    private = serialization.load_ssh_private_key(private_text.encode(), password=None)
    public = serialization.load_ssh_public_key(pair.public_key.encode())
    assert isinstance(private, Ed25519PrivateKey) and isinstance(public, Ed25519PublicKey)
    assert private.public_key().public_bytes_raw() == public.public_bytes_raw()
    assert pair.public_key.startswith("ssh-ed25519 ") and pair.public_key.endswith(" acme-r1")
    assert pair.fingerprint.startswith("SHA256:")
    assert private_text not in repr(pair) and private_text not in pair.model_dump_json()
    assert generate_ssh_key_pair().public_key != pair.public_key  # fresh per allocation


def test_jupyter_token_is_random_and_long() -> None:
    tokens = {new_jupyter_token().get_secret_value() for _ in range(50)}
    assert len(tokens) == 50 and all(len(t) >= 40 for t in tokens)


def _details() -> AccessDetails:
    return AccessDetails.build(
        AccessSecrets.generate("x"), allocation_id="alloc-1", request_id="r1", host="h.example", port=22,
        config=AccessConfig(monitoring_url_template="https://grafana/d/x?var-allocation={allocation_id}"),
    )


def test_public_view_masks_and_reveal_returns_once() -> None:
    details = _details()
    token = details.jupyter_token.get_secret_value()
    private = details.ssh_private_key.get_secret_value()
    public = details.public_view()
    dumped = public.model_dump_json()
    assert token not in dumped and "BEGIN OPENSSH PRIVATE KEY" not in dumped
    assert public.jupyter_url == f"https://h.example:8888/lab?token={MASK}"
    assert public.monitoring_url == "https://grafana/d/x?var-allocation=alloc-1"
    assert token not in details.model_dump_json() and private not in repr(details)
    revealed = details.reveal()
    assert revealed["ssh_private_key"] == private
    assert revealed["jupyter_url"].endswith(f"token={token}")


def test_mask_text_and_mask_value() -> None:
    details = _details()
    token = details.jupyter_token.get_secret_value()
    private = details.ssh_private_key.get_secret_value()
    body_line = private.splitlines()[1]
    text = f"key {private} url https://h/lab?token={token}&x=1 line {body_line}"
    masked = mask_text(text)
    assert token not in masked and body_line not in masked and "x=1" in masked
    audit = mask_value({"access": details.reveal(), "client_token": "keep-me", "nested": [{"password": "pw"}]})
    assert audit["access"]["ssh_private_key"] == MASK
    assert audit["access"]["jupyter_token"] == MASK
    assert token not in str(audit)
    assert audit["client_token"] == "keep-me"
    assert audit["access"]["ssh_public_key"] == details.ssh_public_key
    assert audit["nested"][0]["password"] == MASK


def test_logging_filter_masks_records(caplog: pytest.LogCaptureFixture) -> None:
    details = _details()
    token = details.jupyter_token.get_secret_value()
    private = details.ssh_private_key.get_secret_value()
    masking = install_secret_masking([caplog.handler])
    try:
        log = logging.getLogger("pipeline.compute.test_access")
        with caplog.at_level(logging.DEBUG):
            log.info("details %s", details.reveal())
            log.warning("token=%s", token)
            try:
                raise RuntimeError(f"boom {private}")
            except RuntimeError:
                log.exception("failed")
        assert isinstance(masking, SecretMaskingFilter)
        assert token not in caplog.text
        assert "BEGIN OPENSSH PRIVATE KEY" not in caplog.text
        assert private.splitlines()[1] not in caplog.text
        assert "RuntimeError" in caplog.text  # the exception is still there, masked
    finally:
        caplog.handler.removeFilter(masking)


def test_masked_records_still_format_with_the_workers_formatter() -> None:
    # The worker's handlers use mode's ExtensionFormatter, which turns ``args=None`` into ``(None,)`` and then
    # fails on ``msg % args``: a masked record must keep a tuple.
    from mode.utils.logging import ExtensionFormatter

    details = _details()
    token = details.jupyter_token.get_secret_value()
    record = logging.LogRecord("pipeline.x", logging.INFO, __file__, 1, "engine allocated %s (token %s)",
                               ("a1", token), None)
    assert SecretMaskingFilter().filter(record)
    assert record.args == ()
    text = ExtensionFormatter(fmt="%(message)s").format(record)
    assert text == "engine allocated a1 (token ***)"
    plain = logging.LogRecord("pipeline.x", logging.INFO, __file__, 1, "attempt %d on %s", (1, "o"), None)
    assert SecretMaskingFilter().filter(plain)
    assert ExtensionFormatter(fmt="%(message)s").format(plain) == "attempt 1 on o"
