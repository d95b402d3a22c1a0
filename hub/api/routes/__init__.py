"""One router per domain; :data:`hub.api.app.DOMAIN_ROUTERS` lists them."""
