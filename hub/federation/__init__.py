"""Federation between region hubs: signed, case-bound match requests.

* :mod:`hub.federation.peers` — the federation file (this hub's id and key, its peers,
  its policy) and the per-process :class:`~hub.federation.peers.Federation` built from it.
* :mod:`hub.federation.signing` — Ed25519 signatures over hub-to-hub requests and
  answers, with clock-skew and replay checks.
* :mod:`hub.federation.policy` — which purposes may search which galleries, from which
  peer, and whether face crops may be sent back.
* :mod:`hub.federation.client` — sends a match request to peers in parallel and records
  the regions' answers and the candidates for review.
* :mod:`hub.federation.server` — answers a peer's request (``POST
  /api/v1/federation/search``).
* :mod:`hub.federation.cli` — ``lantern federation keygen`` and ``peers``.

Without a federation file the hub works alone.
"""
