"""One router per domain: health, auth, users, audit, devices."""
