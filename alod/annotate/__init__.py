"""Hand a cycle's images to annotators and take their labels back (the human oracle's file formats).

``core.py`` holds what every format shares (the export task, the import result, problems, the
format type); one module per tool format (``labelme.py``, ``cvat.py``, ``coco.py``,
``labelstudio.py``, ``voc.py``, ``yolo.py``) registers an :class:`~alod.annotate.core.AnnotationFormat`. The cycles stage
and the ``alod export`` / ``alod import`` commands go through the registry in :mod:`alod.annotate.formats`.
"""
