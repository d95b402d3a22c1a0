"""The supervision engine: zones, rules, curfews and proximity for people under
supervision, evaluated on their devices' fixes and on a clock.

:mod:`hub.supervision.model` is the contract (zones, rules, fixes in; alert
transitions out; per-rule state as JSON); the engine itself is pure (no database, no
MQTT) so it can be replayed deterministically; the hub persists its state and alerts.
"""
