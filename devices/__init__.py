"""The shared base every side installs: device catalog, wire protocol, provisioning.

Holds the MQTT topic builders and the validated message envelope and bodies
(position, alarm, sighting) in ``devices.protocol``, the device catalog, provisioning
and simulators, and the root ``lantern`` command line. It knows no side: nothing
here imports ``edge`` or ``hub``.
"""
