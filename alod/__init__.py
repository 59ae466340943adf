"""alod: active learning for object detection (Faster R-CNN, BDD100K, built-in street scenes)."""

__version__ = "0.1.0"
