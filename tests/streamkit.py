"""A live camera for the tests: an HTTP MJPEG stream served from a thread on a loopback
port, as an IP camera serves one, at a steady frame rate until it is closed, or one
that answers and then never sends a frame (a camera that hangs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np


def jpegs(images: Sequence[np.ndarray]) -> list[bytes]:
    return [
        cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for image in images
    ]


class LiveCamera:
    """``frames`` (JPEG bytes) over and over at ``fps`` to every client, until closed;
    with ``hang``, the stream's headers and then nothing."""

    def __init__(self, frames: Sequence[bytes], fps: float = 25.0, hang: bool = False) -> None:
        self.frames = list(frames)
        self.fps = fps
        self.hang = hang
        self.sent = 0
        self.closing = threading.Event()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                if camera.hang:
                    camera.closing.wait()
                    return
                due = time.monotonic()
                k = 0
                while not camera.closing.is_set():
                    jpeg = camera.frames[k % len(camera.frames)]
                    head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                    try:
                        self.wfile.write(head.encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return  # the client went away
                    camera.sent += 1
                    k += 1
                    due += 1 / camera.fps
                    camera.closing.wait(max(0.0, due - time.monotonic()))

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveCamera:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
