"""Face engines behind one interface.

Each backend (dlib, insightface ONNX packs) offers ``detect(image)`` returning faces
with a bounding box, five landmarks and a score, and ``embed(image, face)`` returning
an L2-normalised vector, and states its ``model_id`` and ``dim``. Alignment is pure
functions. Models import nothing from ``matching``, ``hub`` or ``edge``.
"""
