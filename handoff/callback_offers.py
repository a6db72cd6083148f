"""When a handoff offers a callback at once: a pure function of the rules, the route and what was said, so
the pipeline, `rules test` scenarios and reviews agree on it."""

from __future__ import annotations

from handoff.callback_texts import asks_for_callback
from handoff.routing import LIVE, Route
from handoff.ruleset import RuleSet


def offer_reason(rules: RuleSet, route: Route, said: str) -> str | None:
    """``after_hours``, ``unstaffed`` or ``asked`` when the handoff offers a callback, else None.

    A closed queue whose after-hours path for the channel is ``callback`` always does; otherwise the queue's
    ``callbacks.offer_when`` decides, and a customer who asked in so many words ("call me back") is offered
    one wherever the queue takes callbacks.
    """
    settings = rules.queue(route.queue).callbacks if route.queue in rules.queues.queues else None
    if settings is None:
        return None
    if route.mode == "callback":
        return "after_hours"
    if route.unstaffed:
        why = "unstaffed"
    elif route.mode != LIVE and route.back_at is not None:
        why = "after_hours"
    elif asks_for_callback(said, anywhere=True):
        return "asked"
    else:
        return None
    return why if why in settings.offer_when else None
