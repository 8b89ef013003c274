"""reconciler.core.status: the vocabulary's values are the contract's strings (JSON, database rows,
metrics and fault checkpoints read them), written out once more on purpose so that renaming a value
fails here; members compare equal to those strings, so stored rows need no migration."""

from __future__ import annotations

import json

from reconciler.core.status import FINAL, UNFINISHED, DeployStatus, Health, Step, Sync


def test_the_values_are_the_contracts_strings() -> None:
    assert [s.value for s in Sync] == ["Synced", "OutOfSync", "Progressing", "Failed", "Invalid", "Unknown"]
    assert [h.value for h in Health] == ["Healthy", "Degraded", "Missing", "Unknown"]
    assert [d.value for d in DeployStatus] == ["pending", "updating", "success", "failed"]
    assert [s.value for s in Step] == [
        "probe", "lock", "provision", "clean", "claim release directory", "clone", "link shared entries",
        "copy from previous release", "deploy script", "record success", "switch", "reload", "prune", "unlock"]


def test_members_are_their_strings_and_read_back_from_them() -> None:
    stored: str = Sync.OUT_OF_SYNC
    assert stored == "OutOfSync" and f"{Health.DEGRADED}" == "Degraded"
    assert json.dumps({"sync": Sync.FAILED, "status": DeployStatus.PENDING}) == \
        '{"sync": "Failed", "status": "pending"}'
    assert DeployStatus("failed") is DeployStatus.FAILED and Step("deploy script") is Step.SCRIPT


def test_every_deployment_status_is_final_or_unfinished_never_both() -> None:
    assert set(FINAL) | set(UNFINISHED) == set(DeployStatus)
    assert not set(FINAL) & set(UNFINISHED)
    assert DeployStatus.SUCCESS in FINAL and DeployStatus.UPDATING in UNFINISHED
