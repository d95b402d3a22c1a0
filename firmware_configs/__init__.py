"""Firmware configuration data: profiles, example device and site files, JSON Schemas.

A package only so that the files install with Lantern and are found through
``importlib.resources`` (``devices.firmware.packaged_config_dir``); it holds no code.
See README.md in this folder.
"""
