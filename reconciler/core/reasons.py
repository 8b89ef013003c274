"""Why a release was built or switched to, and what an operator asked for: history's `trigger`.

`StrEnum`s whose values are exactly the strings stored in `deployments.trigger`,
`activations.trigger` and `requests.kind`, and shown as `trigger` by `history --json`, the
dashboard and notifications, so stored rows need no migration (as in core.status). Code
passes and compares these members, never string literals: a misspelt reason is a type error.
"""

from __future__ import annotations

from enum import StrEnum


class DeployReason(StrEnum):
    """Why the planner builds a release: a deployment's trigger when no operator asked."""

    FIRST_DEPLOY = "first deploy"  # nothing was live
    APP_COMMIT = "app commit"  # the followed branch moved
    TAG_MOVED = "tag moved"  # the followed tag now names another commit
    # The same commit with another script or shared list, or another tag or commit declared.
    DECLARATION = "declaration"
    DEPLOY = "deploy"  # a build on a site of many servers, whose planner does not say why


class RequestKind(StrEnum):
    """An operator's imperative request for a site (`reconciler retry|redeploy`, the API): the
    pending request's kind, and the trigger of the deployment it asked for."""

    RETRY = "retry"
    REDEPLOY = "redeploy"
    # `reconcile --override-window`: a deploy a deploy window held, let through by whoever ran it.
    OVERRIDE_WINDOW = "override-window"


# A deployment's trigger: the operator's request when one asked for the build, else the plan's reason.
DeployTrigger = DeployReason | RequestKind


class SwitchReason(StrEnum):
    """Why a release is switched to without a build: an `Activate` action's reason, and the
    trigger of an activation in history."""

    ROLLBACK = "rollback"  # the declared pin
    ROLL_FORWARD = "roll-forward"  # back to the build of the followed ref (an unpin, a moved link)
    ACTIVATE = "activate"  # the first link to a release already built
    AUTO_ROLLBACK = "auto-rollback"  # back to the previous release after a failed health check
    UNPIN = "unpin"  # history: the switch that followed a pin's removal
    DRIFT = "drift"  # history: a live link that was not the one we set, put back
    DEPLOY = "deploy"  # a site of many servers: the switch to a release just built on all of them
    # An operator's `retry` of a release built but failed by its health check: switched to again
    # (the same release when it stayed live) and checked, without a build.
    RETRY = "retry"
