"""The one-command demo site (``lantern demo``, ``make demo``): a broker, the hub, the
demo sites loaded through the API, simulated wearables and a camera agent.

:mod:`hub.demo.broker` starts the broker, :mod:`hub.demo.loader` loads a site through
the API, :mod:`hub.demo.run` runs it all, :mod:`hub.demo.cli` is the command.
"""
