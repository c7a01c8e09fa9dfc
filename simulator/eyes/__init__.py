"""The eyes checked end to end: the floor adapters on the simulator's rendered video,
against the simulator's truth (``aisle simulate --video``, ``bench/video_accuracy.py``)."""
